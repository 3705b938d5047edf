"""Signed webhooks end to end (issue 11): `gaze up` with the webhooks service, real HTTP receivers on
127.0.0.1 (tests/webhook_receiver.py), signatures verified with the `standardwebhooks` package as a
receiver would, the secret as `gaze webhook-secret` prints it.

Two stacks: one that allows private targets (GAZE_WEBHOOK_ALLOW_PRIVATE=1, so receivers on 127.0.0.1
work) with one generator whose backend obeys the prompt (tests/backends.py: "slow:<s>"), and one with
the default, which refuses them at submission and, for a URL that changed after it (written into the
job here, as a name that resolved elsewhere would), at delivery.
"""
import json
import os
import signal
import subprocess
from pathlib import Path

import psycopg
import pytest
from standardwebhooks import Webhook

from tests.helpers import wait_until
from tests.stack import GAZE, running_stack
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.e2e
SMALL = {"width": 64, "height": 64}
FAST_RETRIES = {"GAZE_WEBHOOK_RETRY_SCHEDULE": "0.3,0.5,1,1,1,1,1,1,1,1", "GAZE_WEBHOOK_POLL_SECONDS": "0.2"}


@pytest.fixture(scope="module")
def hooks(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("webhooks"), generators=1, GAZE_BACKEND="tests.backends:ScriptedBackend",
                       GAZE_WEBHOOK_ALLOW_PRIVATE="1", **FAST_RETRIES) as running:
        yield running


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("webhooks-guarded"), generators=1, GAZE_WEBHOOK_ALLOW_PRIVATE="",
                       GAZE_BACKEND="tests.backends:ScriptedBackend", **FAST_RETRIES) as running:
        yield running


def submit(stack, webhook, extra="", **fields):
    response = stack.post("/api/v1/generate/example_01",
                          json={"extra_positive": extra, "webhook": webhook, **SMALL, **fields})
    assert response.status_code == 202, response.text
    [job] = response.json()["jobs"]
    return job["job_id"]


def webhook_secret(stack, *args):
    """What `gaze webhook-secret` prints as its last line."""
    done = subprocess.run([GAZE, "webhook-secret", *args], env=stack.env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def deliveries(stack, job_id):
    with psycopg.connect(stack.env["GAZE_DATABASE_URL"], autocommit=True) as conn:
        return conn.execute("SELECT event, status, attempts FROM webhooks.deliveries WHERE job_id = %s ORDER BY event",
                            (job_id,)).fetchall()


def received(receiver, count, timeout=30):
    return wait_until(lambda: len(receiver.requests()) >= count and receiver.requests(), timeout,
                      what=f"{count} request(s) at the receiver")


def test_a_receiver_that_fails_twice_gets_the_same_signed_delivery_then_accepts(hooks):
    secret = webhook_secret(hooks)
    assert secret.startswith("whsec_") and webhook_secret(hooks) == secret     # made once, then kept
    with Receiver([500, 502, 200]) as receiver:
        job_id = submit(hooks, receiver.url)
        got = received(receiver, 3)
        wait_until(lambda: deliveries(hooks, job_id) == [("completed", "delivered", 3)], 15, what="delivered")
    assert len({request.headers["webhook-id"] for request in got}) == 1
    for request in got:
        payload = Webhook(secret).verify(request.body, request.headers)
        assert payload["type"] == "job.completed"
        assert payload["data"]["id"] == job_id and payload["data"]["status"] == "done"
        assert payload["data"]["result"]["image_url"].startswith("/static/uploads/")
    assert hooks.get(f"/api/v1/job/{job_id}").json()["status"] == "done"


def test_the_filter_is_honoured(hooks):
    with Receiver([200]) as receiver:
        followed = submit(hooks, receiver.url, webhook_events_filter=["started", "completed"])
        hooks.wait_job(followed)
        received(receiver, 2)
        # a cancelled job whose filter asks only for "failed" sends nothing; one asking for "cancelled" does
        quiet = submit(hooks, receiver.url, extra="slow:30", webhook_events_filter=["failed"])
        cancelled = submit(hooks, receiver.url, extra="slow:30", webhook_events_filter=["cancelled"])
        for job_id in (quiet, cancelled):
            assert hooks.post(f"/api/v1/job/{job_id}/cancel").status_code == 202
        got = received(receiver, 3)
        wait_until(lambda: deliveries(hooks, cancelled) == [("cancelled", "delivered", 1)], 15, what="delivered")
    # (two deliveries due in the same moment are sent side by side: their order is not promised)
    assert sorted((json.loads(r.body)["type"], json.loads(r.body)["data"]["id"]) for r in got) == sorted([
        ("job.started", followed), ("job.completed", followed), ("job.cancelled", cancelled)])
    assert deliveries(hooks, quiet) == []


def test_a_receiver_down_while_the_webhooks_service_restarts_still_gets_every_delivery(hooks):
    receiver = Receiver([200])                     # not listening: connections are refused
    first = submit(hooks, receiver.url)
    hooks.wait_job(first)
    wait_until(lambda: deliveries(hooks, first) and deliveries(hooks, first)[0][2] >= 1, 15, what="a refused attempt")
    service = webhooks_pid(hooks)
    os.kill(service, signal.SIGKILL)               # supervisord starts it again
    second = submit(hooks, receiver.url)           # ends while the service may be down: its announcement waits
    hooks.wait_job(second)
    wait_until(lambda: webhooks_pid(hooks) not in (None, service), 30, what="the webhooks service restarted")
    with receiver:
        got = received(receiver, 2, timeout=45)
        wait_until(lambda: all([status for _, status, _ in deliveries(hooks, job_id)] == ["delivered"]
                               for job_id in (first, second)), 30, what="both delivered")
    assert sorted(json.loads(r.body)["data"]["id"] for r in got) == sorted([first, second])


def test_after_a_rotation_the_old_and_the_new_secret_both_sign(hooks):
    old = webhook_secret(hooks)
    new = webhook_secret(hooks, "--key", "default", "--rotate")
    assert new != old and new.startswith("whsec_") and webhook_secret(hooks) == new
    with Receiver([200]) as receiver:
        submit(hooks, receiver.url)
        [request] = received(receiver, 1)
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    for secret in (new, old):
        assert Webhook(secret).verify(request.body, request.headers)["type"] == "job.completed"


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/hook", "http://169.254.169.254/latest/meta-data",
                                 "http://10.0.0.1/hook", "http://localhost/hook", "file:///etc/passwd"])
def test_a_private_or_non_http_target_is_refused_at_submission(guarded, url):
    response = guarded.post("/api/v1/generate/example_01", json={"webhook": url, **SMALL})
    assert response.status_code == 400, response.text
    assert response.json()["field"] == "webhook"


def test_a_target_that_turned_private_after_submission_is_refused_at_delivery(guarded):
    with Receiver([200]) as receiver:
        with psycopg.connect(guarded.env["GAZE_DATABASE_URL"], autocommit=True) as conn:
            job_id = guarded.post("/api/v1/generate/example_01",
                                  json={"extra_positive": "slow:2", **SMALL}).json()["jobs"][0]["job_id"]
            # as if its name had resolved to a public address at submission and to 127.0.0.1 now
            changed = conn.execute("UPDATE jobs.jobs SET webhook = %s, webhook_events = %s WHERE id = %s"
                                   " AND status IN ('pending', 'processing')", (receiver.url, ["completed"], job_id))
            assert changed.rowcount == 1
        guarded.wait_job(job_id)
        wait_until(lambda: deliveries(guarded, job_id) == [("completed", "failed", 11)], 45, what="failed")
    assert receiver.requests() == []


def webhooks_pid(stack):
    supervisor = int(Path(stack.env["GAZE_RUN_DIR"], "supervisord.pid").read_text())
    for pid in subprocess.run(["pgrep", "-P", str(supervisor)], capture_output=True, text=True).stdout.split():
        try:
            if b"service\0webhooks" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return int(pid)
        except OSError:
            continue
    return None

