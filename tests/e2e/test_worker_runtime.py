"""Issue 10 end to end: `gaze up` with two generator replicas whose backend logs and does HTTP from its
own code on every job (tests/backends.py), plus jobs that hang their worker, crash it once, or crash it
every time. Every accepted job ends `done` or `failed`, once; none stays `processing`; each replica
replaces its broken workers and serves again."""
import subprocess
import time

import pytest

from tests.stack import GAZE, running_stack

pytestmark = pytest.mark.e2e
STALL_SECONDS = 2
SMALL = {"width": 64, "height": 64}


@pytest.fixture(scope="module")
def scripted(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("runtime"), generators=2,
                       GAZE_BACKEND="tests.backends:ScriptedBackend",
                       GAZE_WORKER_STALL_SECONDS=str(STALL_SECONDS)) as running:
        yield running


def submit(stack, count, extra=""):
    response = stack.post("/api/v1/generate/example_01", json={"count": count, "extra_positive": extra, **SMALL})
    assert response.status_code == 202, response.text
    return [job["job_id"] for job in response.json()["jobs"]]


def wait_all(stack, ids, timeout):
    deadline = time.monotonic() + timeout
    pending = set(ids)
    finished = {}
    while pending and time.monotonic() < deadline:
        for job_id in list(pending):
            job = stack.get(f"/api/v1/job/{job_id}").json()
            if job["status"] in ("done", "failed"):
                finished[job_id] = job
                pending.discard(job_id)
        time.sleep(0.2)
    assert not pending, f"{len(pending)} job(s) never ended, e.g. {stack.get(f'/api/v1/job/{min(pending)}').json()}"
    return finished


def test_two_hundred_jobs_whose_backend_logs_and_does_http_all_end_done_once(scripted):
    ids = [job_id for _ in range(10) for job_id in submit(scripted, 20)]
    finished = wait_all(scripted, ids, timeout=180)
    assert [job["status"] for job in finished.values()] == ["done"] * 200
    assert all(job["attempts"] == 1 for job in finished.values())
    assert len(list(scripted.media_root.rglob("*.png"))) >= 200
    paths = [job["result"]["relative_path"] for job in finished.values()]
    assert len(set(paths)) == 200


def test_hung_and_crashing_workers_are_replaced_and_every_job_ends(scripted, tmp_path):
    marker = tmp_path / "crashed-once"
    [hung] = submit(scripted, 1, "hang")
    [crashes_once] = submit(scripted, 1, f"crash-once:{marker}")
    [always_crashes] = submit(scripted, 1, "crash-exit")
    healthy = submit(scripted, 10)
    finished = wait_all(scripted, [hung, crashes_once, always_crashes, *healthy], timeout=120)

    assert finished[hung]["status"] == "failed"
    # words the client can act on; the signal, the exit code and the setting are the operator's (the log's)
    hung_error, crash_error = finished[hung]["error"], finished[always_crashes]["error"]
    assert "worker process stopped responding" in hung_error and "gave up after 3 attempts" in hung_error
    assert finished[crashes_once]["status"] == "done" and finished[crashes_once]["attempts"] == 2
    assert finished[always_crashes]["status"] == "failed"
    assert "worker process crashed while running the job" in crash_error and "gave up after 3" in crash_error
    assert not [word for word in ("exit code", "SIG", "GAZE_", "no sign of life") if word in hung_error + crash_error]
    assert all(finished[job_id]["status"] == "done" for job_id in healthy)

    # both replicas serve again, with fresh workers, and say so
    def health():
        return subprocess.run([GAZE, "generator-health"], env=scripted.env, capture_output=True, text=True)

    deadline = time.monotonic() + 30
    while True:
        report = health()
        lines = [line for line in report.stdout.splitlines() if line.startswith("ok")]
        if report.returncode == 0 and len(lines) == 2 and all("worker=idle" in line for line in lines):
            break
        assert time.monotonic() < deadline, report.stdout + report.stderr
        time.sleep(0.5)
    restarts = sum(int(part.split("=")[1]) for line in lines for part in line.split() if part.startswith("restarts="))
    assert restarts >= 1 + 3 + 3    # crash-once, then the hung job's and the crashing job's three attempts
    # a new job still runs
    [after] = submit(scripted, 1)
    assert wait_all(scripted, [after], timeout=30)[after]["status"] == "done"
