"""The webhooks service in this process against the session's real PostgreSQL and RabbitMQ: announcements
(job_status_changed, as the jobs service dispatches them) become deliveries on its durable queue, sent by
its green threads to a real HTTP receiver (tests/webhook_receiver.py) with Standard Webhooks signatures
(verified with the `standardwebhooks` package), retried along the schedule, refused for private targets,
kept across a restart of the service, and listed with their attempts over RPC."""
import dataclasses
import json
import uuid

import pytest
from kombu import Connection
from nameko.standalone.events import event_dispatcher
from nameko.standalone.rpc import ServiceRpcProxy
from standardwebhooks import Webhook

from services.webhooks.service import WebhooksService
from shared import events
from shared.contracts import webhooks as contract
from tests.helpers import wait_until
from tests.webhook_receiver import Receiver

KEY = "ci-key"


@pytest.fixture
def clean_webhooks(db, settings):
    db.execute("TRUNCATE webhooks.attempts, webhooks.deliveries, webhooks.secrets")
    with Connection(settings.amqp_uri) as conn:
        events.webhooks_queue(settings.max_attempts)(conn.default_channel).declare()
        events.webhooks_queue(settings.max_attempts)(conn.default_channel).purge()
    return db


def webhook_settings(settings, **changes):
    """Fast for tests: look for due deliveries every 0.1 s, retry after 0.2 s and 0.4 s, then fail."""
    fast = {"webhook_poll_seconds": 0.1, "webhook_retry_schedule": [0.2, 0.4], "webhook_timeout_seconds": 2.0,
            "webhook_allow_private": True}
    return dataclasses.replace(settings, **{**fast, **changes})


@pytest.fixture
def start_webhooks(container_factory, settings, clean_webhooks):
    def start(**changes):
        container = container_factory(WebhooksService, webhook_settings(settings, **changes).nameko_config())
        container.start()
        return container
    return start


@pytest.fixture
def rpc(settings):
    with ServiceRpcProxy(contract.SERVICE, {"AMQP_URI": settings.amqp_uri, "serializer": "json"}, timeout=10) as proxy:
        yield proxy


@pytest.fixture
def announce(settings):
    """announce(url, status, events) -> job id: a job_status_changed as the jobs service sends it."""
    send = event_dispatcher({"AMQP_URI": settings.amqp_uri, "serializer": "json"})

    def announce(url, status="done", webhook_events=contract.DEFAULT_EVENTS, job_id=None):
        job_id = job_id or str(uuid.uuid4())
        send(events.JOBS_SOURCE, events.JOB_STATUS_CHANGED, events.JobStatusChanged(
            job={"id": job_id, "status": status, "error": None, "result": None}, owner=KEY, webhook=url,
            webhook_events=list(webhook_events)).model_dump())
        return job_id

    return announce


def delivery_of(rpc, job_id, state=None):
    found = [d for d in rpc.deliveries(KEY, 50) if d["job_id"] == job_id]
    return found[0] if found and (state is None or found[0]["status"] == state) else None


def test_a_receiver_that_fails_twice_gets_the_same_signed_delivery_until_it_accepts(start_webhooks, announce, rpc):
    start_webhooks()
    with Receiver([500, 503, 204]) as receiver:
        job_id = announce(receiver.url, "done")
        delivery = wait_until(lambda: delivery_of(rpc, job_id, "delivered"), 15, what="delivered")
    got = receiver.requests()
    assert len(got) == 3
    assert len({r.headers["webhook-id"] for r in got}) == 1 and got[0].headers["webhook-id"] == delivery["id"]
    assert len({r.body for r in got}) == 1
    secret = rpc.secret(KEY)["secret"]
    for request in got:
        payload = Webhook(secret).verify(request.body, request.headers)
        assert payload["type"] == "job.completed" and payload["data"]["id"] == job_id
    assert [a["status_code"] for a in delivery["attempt_list"]] == [500, 503, 204]
    assert delivery["attempts"] == 3 and delivery["event"] == "completed"


def test_a_delivery_with_no_2xx_left_is_failed_after_the_schedule(start_webhooks, announce, rpc):
    start_webhooks()
    with Receiver([500]) as receiver:
        job_id = announce(receiver.url, "failed")
        delivery = wait_until(lambda: delivery_of(rpc, job_id, "failed"), 15, what="failed")
    assert len(receiver.requests()) == 3 == delivery["attempts"]      # the first, then one per step
    assert all(a["error"] == "answered 500" for a in delivery["attempt_list"])


def test_an_announcement_heard_twice_and_events_not_in_the_filter_deliver_once(start_webhooks, announce, rpc):
    start_webhooks()
    with Receiver([200]) as receiver:
        job_id = announce(receiver.url, "processing", ["completed"])          # not asked for
        announce(receiver.url, "done", ["completed"], job_id=job_id)
        announce(receiver.url, "done", ["completed"], job_id=job_id)          # again (a re-announcement)
        wait_until(lambda: delivery_of(rpc, job_id, "delivered"), 15, what="delivered")
        other = announce(receiver.url, "processing", ["started"])            # a later one, to wait on
        wait_until(lambda: delivery_of(rpc, other, "delivered"), 15, what="the later delivery")
    types = [json.loads(r.body)["type"] for r in receiver.requests()]
    assert types == ["job.completed", "job.started"]


def test_a_private_target_is_refused_at_delivery_time(start_webhooks, announce, rpc):
    start_webhooks(webhook_allow_private=False)
    with Receiver([200]) as receiver:
        job_id = announce(receiver.url, "cancelled")
        delivery = wait_until(lambda: delivery_of(rpc, job_id, "failed"), 15, what="failed")
    assert receiver.requests() == []
    assert all(a["error"].startswith("refused: must not resolve to a loopback") for a in delivery["attempt_list"])


def test_a_receiver_that_does_not_answer_in_time_is_retried(start_webhooks, announce, rpc):
    start_webhooks(webhook_timeout_seconds=0.5)
    with Receiver([200], delay=2) as receiver:
        job_id = announce(receiver.url, "done")
        delivery = wait_until(lambda: delivery_of(rpc, job_id, "failed"), 20, what="failed")
    assert [a["error"] for a in delivery["attempt_list"]] == ["no answer within 0.5 s"] * 3


def test_deliveries_survive_a_restart_while_the_receiver_is_down(start_webhooks, announce, rpc):
    schedule = [0.2, 1, 1, 1, 1]
    container = start_webhooks(webhook_retry_schedule=schedule)
    receiver = Receiver([200])           # not listening yet: connections are refused
    first = announce(receiver.url, "done")
    wait_until(lambda: (delivery_of(rpc, first) or {}).get("attempts", 0) >= 2, 15, what="two refused attempts")
    container.stop()
    meanwhile = announce(receiver.url, "done")      # waits on the durable queue while no service runs
    with receiver:
        start_webhooks(webhook_retry_schedule=schedule)
        for job_id in (first, meanwhile):
            wait_until(lambda: delivery_of(rpc, job_id, "delivered"), 15, what=f"{job_id} delivered")
    assert sorted(json.loads(r.body)["data"]["id"] for r in receiver.requests()) == sorted([first, meanwhile])
    assert delivery_of(rpc, first)["attempt_list"][0]["error"].startswith("ConnectionError")


def test_a_rotated_secret_signs_beside_the_new_one(start_webhooks, announce, rpc):
    start_webhooks()
    old = rpc.secret(KEY)
    assert old["secret"].startswith("whsec_") and old["previous_valid_until"] is None
    assert rpc.secret(KEY)["secret"] == old["secret"]                     # made once, then kept
    new = rpc.rotate_secret(KEY)
    assert new["secret"] != old["secret"] and new["previous_valid_until"] > new["created_at"] + 23 * 3600
    with Receiver([200]) as receiver:
        job_id = announce(receiver.url, "done")
        wait_until(lambda: delivery_of(rpc, job_id, "delivered"), 15, what="delivered")
    [request] = receiver.requests()
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    for secret in (new["secret"], old["secret"]):
        assert Webhook(secret).verify(request.body, request.headers)["data"]["id"] == job_id


def test_a_key_name_must_be_given(start_webhooks, rpc):
    from shared.errors import InvalidField

    start_webhooks()
    with pytest.raises(InvalidField):
        rpc.secret("  ")


# --- with the real jobs service: its announcements reach the webhooks service ---------------------------

def test_a_jobs_start_and_end_are_delivered_and_a_lost_announcement_is_made_again(start_webhooks, jobs, dispatch,
                                                                                   db, rpc):
    from tests.helpers import completed, make_spec, started

    start_webhooks()
    with Receiver([200]) as receiver:
        [job_id] = jobs.create(make_spec(), 1, str(uuid.uuid4()), KEY, receiver.url, ["started", "completed"])
        dispatch(events.JOB_STARTED, started(job_id))
        dispatch(events.JOB_COMPLETED, completed(job_id))
        wait_until(lambda: len(receiver.requests()) == 2, 15, what="two deliveries")
        assert sorted(json.loads(r.body)["type"] for r in receiver.requests()) == ["job.completed", "job.started"]
        assert db.execute("SELECT announced_status FROM jobs.jobs WHERE id = %s", (job_id,)).fetchone() \
            == {"announced_status": "done"}

        # a transition committed by a jobs service that died before announcing it (no announcement, so
        # announced_status stays behind): the sweep (GAZE_DISPATCH_SWEEP_SECONDS=1 here) announces it
        [lost] = jobs.create(make_spec(), 1, str(uuid.uuid4()), KEY, receiver.url, ["failed"])
        db.execute("UPDATE jobs.jobs SET status = 'failed', error = 'x', finished_at = now() - interval '5 s'"
                   " WHERE id = %s", (lost,))
        wait_until(lambda: delivery_of(rpc, lost, "delivered"), 20, what="the lost announcement delivered")
    assert json.loads(receiver.requests()[-1].body)["data"]["error"] == "x"
