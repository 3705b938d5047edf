"""Helpers that test modules of every level share: waiting for a condition, a job's spec, row and events,
the gateway app over the fakes of tests/fakes.py and what its answers must look like, small images and
Prometheus samples. Plain functions and constants; fixtures live in the conftests."""
from __future__ import annotations

import dataclasses
import io
import json
import re
import time
from pathlib import Path

import falcon.testing
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from services.gateway.app import create_app
from services.generator.service import GeneratorService
from shared import config, events
from tests.fakes import AUTH, COOKIES, JOB_ID, JSON, SLUG, FakeAdmin, FakeKeys, FakeProbes, FakeRpc


def wait_until(predicate, timeout=10.0, interval=0.05, what="condition"):
    """Poll `predicate` until it returns something truthy; return that, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)  # patched by eventlet: lets the containers in this process run


# --- jobs -------------------------------------------------------------------------------------------

def make_spec(**overrides):
    """A GenerationSpec as the presets service would resolve it (small, so the preview renders fast)."""
    spec = {
        "preset_slug": "example_01",
        "preset_name": "Example",
        "prompt": "a lighthouse at dusk",
        "negative": "blurry",
        "checkpoint": "SD15/v1-5-pruned-emaonly.safetensors",
        "width": 128,
        "height": 128,
        "steps": 3,
        "cfg": 6.0,
        "sampler": "euler",
        "seed": None,
        "kind": "preview",
    }
    spec.update(overrides)
    return spec


def job_row(db, job_id):
    return db.execute("SELECT *, id::text AS id FROM jobs.jobs WHERE id = %s", (job_id,)).fetchone()


def files_for_job(media_root, job_id):
    """Every file under the media root whose name carries this job's id (temporary files included)."""
    return sorted(Path(media_root).rglob(f"*{job_id.replace('-', '')}*"))


# the job events as a generator replica sends them
REPLICA = "test-replica"


def started(job_id, replica=REPLICA, attempt=1):
    return events.JobStarted(job_id=job_id, replica=replica, attempt=attempt)


def completed(job_id, relative_path=None, seed=42, replica=REPLICA):
    relative_path = relative_path or f"presets/example_01/gen_1700000000_{job_id.replace('-', '')}.png"
    return events.JobCompleted(job_id=job_id, replica=replica, relative_path=relative_path, seed=seed,
                               width=128, height=128, generation_seconds=0.5, metadata={"backend": "test"})


def failed(job_id, error="backend exploded", replica=REPLICA):
    return events.JobFailed(job_id=job_id, replica=replica, error=error)


def status_is(jobs, job_id, status):
    """For wait_until: the job's document once `jobs.get` says it has `status`."""
    def check():
        job = jobs.get(job_id)
        return job if job["status"] == status else None
    return check


def start_generator(container_factory, settings, replica_name, **gaze):
    """A generator replica in a nameko container of this process, with `gaze` settings changed."""
    replica_settings = dataclasses.replace(settings, replica_name=replica_name, **gaze)
    container = container_factory(GeneratorService, replica_settings.nameko_config(max_workers=1))
    container.start()
    return container


# --- the gateway app over fakes ---------------------------------------------------------------------

def gateway_settings(media_root, env=None):
    """The settings of a gateway serving `media_root`, loaded from `env` (defaults for the rest)."""
    return config.load({"GAZE_MEDIA_ROOT": str(media_root), **(env or {})})


def app_client(settings, **collaborators):
    """A test client of the real gateway app (create_app) with `settings` and, for every collaborator not
    given (rpc, keys, admin, probes, ...), the fake of tests/fakes.py."""
    fakes = {"rpc": FakeRpc(), "keys": FakeKeys(), "admin": FakeAdmin(), "probes": FakeProbes()}
    return falcon.testing.TestClient(create_app(settings, **{**fakes, **collaborators}))


def make_client(media_root, rpc=None, env=None):
    """(client, rpc): the gateway app serving `media_root` over `rpc` (a fresh FakeRpc when none is given)."""
    rpc = rpc or FakeRpc()
    return app_client(gateway_settings(media_root, env), rpc=rpc), rpc


def post_generate(client, body=None, slug=SLUG, raw=None, headers=None):
    headers = {**AUTH, **JSON, **(headers or {})}
    if raw is None and body is not None:
        raw = json.dumps(body)
    return client.simulate_post(f"/api/v1/generate/{slug}", body=raw, headers=headers)


def admin_get(client, path, **kwargs):
    """GET a web UI page as FakeAdmin's logged-in admin."""
    return client.simulate_get(path, cookies=COOKIES, headers={"Accept": "text/html"}, **kwargs)


def assert_json_error(result, status, field=None):
    assert result.status_code == status, result.text
    assert result.headers["content-type"].startswith("application/json")
    body = result.json
    assert isinstance(body, dict)
    assert isinstance(body.get("error"), str) and body["error"]
    # no "status" key in an error: the guide's polling loops read `status` from every answer, and an
    # error must not look like a job state (services/gateway/errors.py)
    assert "status" not in body
    assert set(body) <= {"error", "field"}
    if field is not None:
        assert body.get("field") == field, body
    return body


# paths that try to leave the media root (or the S3 prefix) through the image route
ESCAPES = [
    "/static/uploads/../secret.txt",
    "/static/uploads/%2e%2e/secret.txt",
    "/static/uploads/%2E%2E/secret.txt",
    "/static/uploads/..%2fsecret.txt",
    "/static/uploads/..%2Fsecret.txt",
    "/static/uploads/%2e%2e%2fsecret.txt",
    "/static/uploads/presets/../../secret.txt",
    "/static/uploads/presets/%2e%2e/%2e%2e/secret.txt",
    "/static/uploads/presets/..%2f..%2fsecret.txt",
    "/static/uploads/..\\secret.txt",
    "/static/uploads/..%5csecret.txt",
    "/static/uploads//etc/passwd",
    "/static/uploads/%2fetc%2fpasswd",
    "/static/uploads/%00secret.txt",
    "/static/uploads/",
    "/static/uploads",
]

# each API request with the one RPC call that, failing, fails it: (service, method, request)
FAILING_CALLS = [
    ("presets", "list", lambda c: c.simulate_get("/api/v1/presets", headers=AUTH)),
    ("presets", "resolve", lambda c: post_generate(c, {})),
    ("jobs", "create", lambda c: post_generate(c, {})),
    ("jobs", "get", lambda c: c.simulate_get(f"/api/v1/job/{JOB_ID}", headers=AUTH)),
]
FAILING_IDS = [f"{s}.{m}" for s, m, _ in FAILING_CALLS]


# --- images and metrics -----------------------------------------------------------------------------

def png(width=640, height=320, mode="RGB", color=(200, 30, 30)):
    """A PNG of one colour (palette images: colour index 1)."""
    out = io.BytesIO()
    Image.new(mode, (width, height), color if mode != "P" else 1).save(out, "PNG")
    return out.getvalue()


LOG_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")   # a log line's `ts`: UTC, milliseconds


def metric_samples(text):
    """{(sample name, frozenset of label items): value} from a Prometheus exposition."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def metric_value(text, name, **labels):
    return metric_samples(text).get((name, frozenset(labels.items())))
