"""The Python client (clients/python) and `gaze-client` against the whole stack through HTTP (issue 12).

One stack for the module: one gateway worker, one generator replica whose backend obeys the prompt
(tests/backends.py: "fail", "slow:<s>"), and the fault hook GAZE_FAULT_GENERATE_503_AFTER_CREATE=1: the
first generate request of each API key name answers 503 after its jobs were created, as when the broker
fails at that moment. The fixture spends the stack key's one fault (and checks it); the retry test makes a
key of its own. With one gateway worker, "first per process" is first per stack.
"""
import asyncio
import io
import json
import os
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

import httpx
import pytest
from PIL import Image

from gaze_client import (AlreadyEnded, AsyncClient, AuthenticationError, Client, JobFailed, NotFound,
                         PermissionDenied, ValidationError, WaitTimeout)
from tests.stack import running_stack

pytestmark = pytest.mark.e2e
SMALL = {"width": 64, "height": 64}
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def gaze(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("client"), generators=1, GAZE_BACKEND="tests.backends:ScriptedBackend",
                       GAZE_GATEWAY_WORKERS="1", GAZE_FAULT_GENERATE_503_AFTER_CREATE="1") as stack:
        spent = stack.post("/api/v1/generate/example_01", json=SMALL)
        assert spent.status_code == 503 and spent.headers["Retry-After"], spent.text
        assert spent.json() == {"error": "the message broker is not reachable; try again shortly"}
        yield stack


def client(stack, key=None, **kwargs):
    return Client(stack.url, key or stack.key, backoff_cap=0.5, **kwargs)


@pytest.fixture(scope="module")
def pool(gaze):
    from shared.db import open_pool
    pool = open_pool(gaze.env["GAZE_DATABASE_URL"], max_size=1, name="test")
    yield pool
    pool.close()


def new_key(pool):
    """(name, key): an API key of a name of its own, so its jobs (and its one injected fault) are its own."""
    from services.gateway.stores.api_keys import ApiKeyStore
    name = f"client-{uuid.uuid4().hex[:8]}"
    return name, ApiKeyStore(pool).create(name)


def rows_of(pool, name):
    with pool.connection() as conn:
        return sorted(row["id"] for row in conn.execute("SELECT id::text AS id FROM jobs.jobs WHERE owner = %s", (name,)))


# --- safe retries ---------------------------------------------------------------------------------

def test_a_generate_answered_503_after_its_jobs_were_created_gets_exactly_those_jobs(gaze, pool):
    name, key = new_key(pool)
    tries = []

    def record(response):   # each answer to a generate, with the rows that existed when it came
        if response.request.method == "POST":
            tries.append((response.status_code, rows_of(pool, name)))

    http = httpx.Client(timeout=30, event_hooks={"response": [record]})
    with client(gaze, key, http_client=http) as gaze_client:
        jobs = gaze_client.generate("example_01", 3, **SMALL)
    http.close()
    (first_status, rows_then), (second_status, _) = tries
    assert first_status == 503 and len(rows_then) == 3      # the first try's jobs exist, its answer was lost
    assert second_status == 202
    assert sorted(job.id for job in jobs) == rows_then == rows_of(pool, name)


# --- the SDK --------------------------------------------------------------------------------------

def test_generate_wait_and_download(gaze, tmp_path):
    with client(gaze) as gaze_client:
        jobs = gaze_client.generate("example_01", 2, seed=11, wait=True, timeout=60, **SMALL)
        assert [(job.status, job.result.seed) for job in jobs] == [("done", 11), ("done", 12)]
        paths = [gaze_client.download(job, tmp_path / "images") for job in jobs]
    for job, path in zip(jobs, paths):
        assert path.read_bytes() == gaze.get(job.result.image_url, headers={}).content
        assert Image.open(path).size == (64, 64)


def test_the_async_client(gaze, tmp_path):
    async def scenario():
        async with AsyncClient(gaze.url, gaze.key, backoff_cap=0.5) as gaze_client:
            assert "example_01" in [preset.slug for preset in await gaze_client.presets()]
            jobs = await gaze_client.generate("example_01", 2, wait=True, timeout=60, **SMALL)
            assert [job.status for job in jobs] == ["done", "done"]
            path = await gaze_client.download(jobs[0], tmp_path)
            assert Image.open(path).size == (64, 64)
            assert [job.status async for job in gaze_client.events(jobs[1])] == ["done"]
            listed = []
            async for job in gaze_client.jobs(status="done", page_size=1):
                listed.append(job.id)
                if len(listed) == 3:
                    break
            assert set(job.id for job in jobs) <= set(listed)
            [running] = await gaze_client.generate("example_01", extra_positive="slow:30", **SMALL)
            with pytest.raises(WaitTimeout):
                await gaze_client.wait([running], timeout=1)
            assert (await gaze_client.cancel(running)).status == "cancelled"
            assert (await gaze_client.wait(running, timeout=30)).status == "cancelled"
    asyncio.run(scenario())


def test_jobs_come_page_by_page_newest_first(gaze, pool):
    name, key = new_key(pool)
    with client(gaze, key) as gaze_client:
        first = gaze_client.generate("example_01", 2, **SMALL)     # its 503, then the jobs
        second = gaze_client.generate("example_01", 3, **SMALL)
        listed = [job.id for job in gaze_client.jobs(page_size=2)]
    assert sorted(listed) == sorted(job.id for job in first + second) == rows_of(pool, name)
    assert set(listed[:3]) == {job.id for job in second}


def test_cancel_wait_timeout_and_events(gaze):
    with client(gaze) as gaze_client:
        [slow] = gaze_client.generate("example_01", extra_positive="slow:30", **SMALL)
        with pytest.raises(WaitTimeout) as timed_out:
            gaze_client.wait(slow, timeout=1)
        assert [job.id for job in timed_out.value.pending] == [slow.id]
        seen = []
        for state in gaze_client.events(slow):       # the job now, then its changes; ends when it ends
            seen.append(state.status)
            if state.status == "processing" and state.progress:
                assert gaze_client.cancel(slow).status == "cancelled"
                assert gaze_client.cancel(slow).status == "cancelled"     # again: still a success
        assert seen[-1] == "cancelled" and "processing" in seen
        [done] = gaze_client.generate("example_01", wait=True, timeout=60, **SMALL)
        with pytest.raises(AlreadyEnded) as ended:
            gaze_client.cancel(done)
        assert ended.value.status == "done"


def test_the_keys_event_stream_tells_of_its_running_jobs(gaze):
    with client(gaze) as gaze_client:
        [slow] = gaze_client.generate("example_01", extra_positive="slow:5", **SMALL)
        stream = gaze_client.events()
        first = next(stream)
        stream.close()
        assert first.id == slow.id and first.status in ("pending", "processing", "done")
        gaze_client.cancel(slow)


def test_run_and_a_failing_job(gaze, tmp_path):
    with client(gaze) as gaze_client:
        paths = gaze_client.run("example_01", 2, out_dir=tmp_path, timeout=60, **SMALL)
        assert sorted(paths) == sorted(tmp_path.iterdir()) and len(paths) == 2
        with pytest.raises(JobFailed) as failed:
            gaze_client.run("example_01", out_dir=tmp_path / "none", timeout=60, extra_positive="fail", **SMALL)
    assert failed.value.job.status == "failed" and failed.value.job.error == "scripted failure"
    assert not (tmp_path / "none").exists()


def test_each_error_has_its_exception(gaze, monkeypatch):
    with client(gaze) as gaze_client:
        with pytest.raises(NotFound):
            gaze_client.generate("no_such_preset")
        with pytest.raises(ValidationError) as invalid:
            gaze_client.generate("example_01", 21)
        assert invalid.value.field == "count" and invalid.value.status_code == 400
        with pytest.raises(NotFound):
            gaze_client.job(str(uuid.uuid4()))
    with client(gaze, "gz_not_a_key") as gaze_client, pytest.raises(PermissionDenied):
        gaze_client.presets()
    monkeypatch.delenv("GAZE_API_KEY", raising=False)
    with Client(gaze.url) as gaze_client, pytest.raises(AuthenticationError):
        gaze_client.presets()


# --- the command line -----------------------------------------------------------------------------

def cli(stack, *argv, timeout=120):
    env = dict(os.environ, GAZE_URL=stack.url, GAZE_API_KEY=stack.key)
    return subprocess.run([str(BIN / "gaze-client"), *argv], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_the_command_line(gaze, tmp_path):
    presets = cli(gaze, "presets", "--json")
    assert presets.returncode == 0 and "example_01" in [p["slug"] for p in json.loads(presets.stdout)]

    made = cli(gaze, "generate", "example_01", "-n", "2", "--seed", "5", "--width", "64", "--height", "64",
               "--out", str(tmp_path), "--json")
    assert made.returncode == 0, made.stderr
    jobs = json.loads(made.stdout)
    assert [(job["status"], job["result"]["seed"]) for job in jobs] == [("done", 5), ("done", 6)]
    assert sorted(job["file"] for job in jobs) == sorted(str(p) for p in tmp_path.iterdir())
    assert "\x1b" not in made.stderr and any(" done " in line for line in made.stderr.splitlines())

    failing = cli(gaze, "generate", "example_01", "--extra-positive", "fail", "--width", "64", "--height", "64",
                  "--wait")
    assert failing.returncode == 1 and "scripted failure" in failing.stdout

    slow = cli(gaze, "generate", "example_01", "--extra-positive", "slow:30", "--width", "64", "--height", "64",
               "--wait", "--timeout", "1")
    assert slow.returncode == 3 and "not ended after 1 s" in slow.stderr
    slow_id = slow.stderr.split()[0]          # the progress line: the short id
    [slow_job] = [job for job in json.loads(cli(gaze, "jobs", "--json", "--limit", "5").stdout)
                  if job["id"].startswith(slow_id)]
    assert cli(gaze, "cancel", slow_job["id"]).returncode == 0
    watched = cli(gaze, "watch", slow_job["id"], "--json")
    assert watched.returncode == 1 and json.loads(watched.stdout.splitlines()[-1])["status"] == "cancelled"

    one = cli(gaze, "job", jobs[0]["id"], "--json")
    assert one.returncode == 0 and json.loads(one.stdout)["id"] == jobs[0]["id"]
    done = cli(gaze, "jobs", "--status", "done", "--json")
    assert done.returncode == 0 and all(job["status"] == "done" for job in json.loads(done.stdout))
    assert cli(gaze, "cancel", jobs[0]["id"]).returncode == 1     # already done

    missing = cli(gaze, "generate", "no_such_preset")
    assert missing.returncode == 2 and "404" in missing.stderr
    assert cli(gaze, "generate", "example_01", "-n", "0").returncode == 2


# --- the wheel the gateway serves -----------------------------------------------------------------

def test_the_gateway_serves_the_wheel_that_pip_installs(gaze, tmp_path):
    index = httpx.get(gaze.url + "/client/", timeout=30)
    assert index.status_code == 200
    name = index.text.split('href="/client/', 1)[1].split('"', 1)[0]
    assert name.startswith("gaze_client-") and name.endswith("-py3-none-any.whl")
    wheel = httpx.get(f"{gaze.url}/client/{name}", timeout=180)
    assert wheel.status_code == 200, wheel.text
    with zipfile.ZipFile(io.BytesIO(wheel.content)) as archive:
        metadata = archive.read(next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    assert "Requires-Dist: httpx==0.28.1" in metadata and "Requires-Dist: httpx-sse==0.4.0" in metadata
    (tmp_path / name).write_bytes(wheel.content)
    target = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                                "--target", str(target), str(tmp_path / name)], capture_output=True, text=True,
                               timeout=120)
    assert installed.returncode == 0, installed.stderr
    assert (target / "bin" / "gaze-client").is_file()
    imported = subprocess.run(
        [sys.executable, "-c", "import gaze_client; print(gaze_client.__file__, gaze_client.__version__)"],
        env=dict(os.environ, PYTHONPATH=str(target)), capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr
    path, version = imported.stdout.split()
    assert Path(path).is_relative_to(target) and name == f"gaze_client-{version}-py3-none-any.whl"
    again = httpx.get(f"{gaze.url}/client/{name}", timeout=30)    # built once, then served as it is
    assert again.content == wheel.content
