"""Webhooks without I/O: the Standard Webhooks signature (checked with the `standardwebhooks` package, as a
receiver would), which targets are refused (a resolver stands in for DNS), the retry schedule, the
submission's 400 naming `webhook`, the jobs service's announcements, and the webhooks client's contract.
(The real service against PostgreSQL and RabbitMQ: tests/integration/test_webhooks_service.py; the
whole stack: tests/e2e/test_webhooks.py.)"""
import inspect
import json
import socket
import time
import uuid

import pytest
from nameko.testing.services import worker_factory
from standardwebhooks import Webhook, WebhookVerificationError

from services.jobs.service import JobsService
from services.webhooks import signing
from services.webhooks.delivery import after_attempt
from services.webhooks.service import WebhooksService
from shared import config, events
from shared.contracts import webhooks
from shared.schemas import GenerateRequest
from tests.helpers import REPLICA, assert_json_error, completed, make_client, make_spec, post_generate, started
from tests.unit.test_contracts import rpc_methods
from tests.unit.test_jobs_service_logic import row

NOW = 1_800_000_000               # the event's time, in the body
def sent_now() -> int:
    """The attempt's time, in webhook-timestamp: now, when the test runs (a verifier refuses one more than
    5 minutes from its clock, and a long test run starts minutes after this module is imported)."""
    return int(time.time())


# --- signing -----------------------------------------------------------------------------------------

def verifier(secret):
    """A receiver's verifier (it refuses a webhook-timestamp more than 5 minutes from its clock: sent_now())."""
    return Webhook(secret)


def test_a_signature_verifies_with_the_standard_webhooks_library():
    secret = signing.new_secret()
    assert secret.startswith("whsec_")
    body = signing.body("completed", {"id": "j1", "status": "done"}, NOW)
    headers = signing.headers([secret], "msg_1", sent_now(), body)
    assert json.loads(body) == {"type": "job.completed", "timestamp": "2027-01-15T08:00:00Z",
                                "data": {"id": "j1", "status": "done"}}
    assert verifier(secret).verify(body, headers) == json.loads(body)


def test_a_tampered_body_or_another_secret_does_not_verify():
    secret, other = signing.new_secret(), signing.new_secret()
    body = signing.body("failed", {"id": "j1"}, NOW)
    headers = signing.headers([secret], "msg_1", sent_now(), body)
    for key, sent in ((secret, body.replace("j1", "j2")), (other, body)):
        with pytest.raises(WebhookVerificationError):
            verifier(key).verify(sent, headers)


def test_after_a_rotation_both_secrets_sign():
    new, old = signing.new_secret(), signing.new_secret()
    body = signing.body("started", {"id": "j1"}, NOW)
    headers = signing.headers([new, old], "msg_1", sent_now(), body)
    signatures = headers["webhook-signature"].split(" ")
    assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)
    for key in (new, old):
        assert verifier(key).verify(body, headers)["type"] == "job.started"


# --- targets -----------------------------------------------------------------------------------------

def resolver(*addresses):
    def resolve(host, port, type=0):
        if not addresses:
            raise socket.gaierror("no such host")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)) for address in addresses]
    return resolve


@pytest.mark.parametrize("url, problem", [
    ("ftp://example.com/hook", "must be an http:// or https:// URL"),
    ("example.com/hook", "must be an http:// or https:// URL"),
    ("http:///hook", "must be an http:// or https:// URL"),
    ("https://user:pw@example.com/", "must not carry a user name or password"),
    ("http://example.com:99999/", "not a valid URL"),
    ("https://example.com/" + "a" * 2000, "must be at most 2000 characters"),
])
def test_a_malformed_url_is_refused_whatever_it_resolves_to(url, problem):
    assert webhooks.target_problem(url, allow_private=True, resolve=resolver("93.184.216.34")) == problem


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254",
                                     "0.0.0.0", "::1", "fe80::1", "fd00::1", "::ffff:127.0.0.1", "100.64.0.1"])
def test_a_name_resolving_to_a_private_address_is_refused_unless_allowed(address):
    resolve = resolver("93.184.216.34", address)    # one bad address among good ones is enough
    assert "loopback, private, link-local or metadata" in webhooks.target_problem(
        "https://hooks.example.com/x", allow_private=False, resolve=resolve)
    assert webhooks.target_problem("https://hooks.example.com/x", allow_private=True, resolve=resolve) is None


def test_a_public_address_is_a_target_and_a_name_that_does_not_resolve_is_not():
    assert webhooks.target_problem("https://hooks.example.com/x", False, resolver("93.184.216.34")) is None
    assert webhooks.target_problem("https://hooks.example.com/x", False, resolver("2606:2800:220:1::1")) is None
    assert "does not resolve" in webhooks.target_problem("https://nowhere.invalid/x", False, resolver())


# --- the retry schedule ------------------------------------------------------------------------------

def test_each_failed_attempt_waits_the_next_step_then_the_delivery_fails():
    schedule = config.load({}).webhook_retry_schedule
    assert schedule[:3] == [1.0, 5.0, 30.0] and 3000 <= sum(schedule) <= 4500   # about an hour in all
    assert [after_attempt(n, [1, 5, 30]) for n in (1, 2, 3, 4)] == [
        ("pending", 1.0), ("pending", 5.0), ("pending", 30.0), ("failed", None)]
    assert config.load({"GAZE_WEBHOOK_RETRY_SCHEDULE": "0.5, 2"}).webhook_retry_schedule == [0.5, 2.0]
    with pytest.raises(ValueError, match="GAZE_WEBHOOK_RETRY_SCHEDULE"):
        config.load({"GAZE_WEBHOOK_RETRY_SCHEDULE": "-1"})


# --- submission --------------------------------------------------------------------------------------

def test_the_webhook_fields_are_not_generation_overrides():
    request = GenerateRequest.model_validate({"count": 2, "seed": 5, "webhook": "https://hooks.example.com/x",
                                              "webhook_events_filter": ["failed", "started", "failed"]})
    assert request.overrides() == {"seed": 5}
    assert request.webhook_events() == ["started", "failed"]
    assert GenerateRequest.model_validate({}).webhook_events() == ["completed", "failed", "cancelled"]


@pytest.mark.parametrize("body", [
    {"webhook": "ftp://example.com/"},
    {"webhook": "http://127.0.0.1:9/hook"},
    {"webhook": "http://169.254.169.254/latest/meta-data"},
    {"webhook": "http://10.0.0.7/hook"},
    {"webhook": "http://[::1]/hook"},
    {"webhook": "https://example.com/" + "a" * 2000},
    {"webhook": 7},
])
def test_a_refused_webhook_is_a_400_naming_it_and_nothing_is_created(tmp_path, body):
    client, rpc = make_client(tmp_path)
    result = post_generate(client, body)
    assert_json_error(result, 400, "webhook")
    assert rpc.called("jobs", "create") == []


def test_an_unknown_event_in_the_filter_is_a_400_naming_the_filter(tmp_path):
    client, rpc = make_client(tmp_path)
    result = post_generate(client, {"webhook": "http://127.0.0.1/", "webhook_events_filter": ["done"]},)
    assert result.status_code == 400 and result.json["field"].startswith("webhook_events_filter")


def test_with_private_targets_allowed_the_webhook_and_its_filter_reach_the_jobs_service(tmp_path):
    calls = []

    client, rpc = make_client(tmp_path, env={"GAZE_WEBHOOK_ALLOW_PRIVATE": "1"})
    original = rpc.call

    def call(service, method, *args):
        if (service, method) == ("jobs", "create"):
            calls.append(args[4:])
        return original(service, method, *args)

    rpc.call = call
    result = post_generate(client, {"webhook": "http://127.0.0.1:9/hook", "webhook_events_filter": ["started"]})
    assert result.status_code == 202, result.text
    assert calls == [("http://127.0.0.1:9/hook", ["started"])]
    post_generate(client, {"count": 1})
    assert calls[-1] == (None, None)


# --- the jobs service announces -----------------------------------------------------------------------

SETTINGS = config.load({})
HOOK = {"webhook": "https://hooks.example.com/x", "webhook_events": ["started", "completed"], "owner": "ci"}


@pytest.fixture
def jobs_service():
    return worker_factory(JobsService, config=SETTINGS.nameko_config())


def announcements(service):
    return [events.JobStatusChanged.model_validate(call.args[1]) for call in service.dispatch.call_args_list
            if call.args[0] == events.JOB_STATUS_CHANGED]


def test_a_start_and_an_end_of_a_job_with_a_webhook_are_announced_after_their_commit(jobs_service):
    jobs_service.store.started.return_value = row("j1", status="processing", **HOOK)
    jobs_service.on_started(started("j1").model_dump())
    jobs_service.store.completed.return_value = row("j1", status="done", result={"image_url": "/static/uploads/a"},
                                                    **HOOK)
    jobs_service.on_completed(completed("j1").model_dump())
    said = announcements(jobs_service)
    assert [a.job["status"] for a in said] == ["processing", "done"]
    assert (said[0].owner, said[0].webhook, said[0].webhook_events) == ("ci", HOOK["webhook"], ["started", "completed"])
    assert "webhook" not in said[0].job           # the public document only
    assert [c.args for c in jobs_service.store.mark_announced.call_args_list] == [("j1", "processing"), ("j1", "done")]


def test_a_job_without_a_webhook_or_a_change_is_not_announced(jobs_service):
    jobs_service.store.started.return_value = row("j1", status="processing")
    jobs_service.on_started(started("j1").model_dump())
    jobs_service.store.started.return_value = None         # a late duplicate: nothing changed
    jobs_service.on_started(started("j1", replica=REPLICA).model_dump())
    jobs_service.store.progress.return_value = row("j1", status="processing", **HOOK)
    jobs_service.on_progress(events.JobProgress(job_id="j1", value=1, max=20).model_dump())
    assert announcements(jobs_service) == []
    jobs_service.store.mark_announced.assert_not_called()


def test_a_cancel_is_announced_and_lost_announcements_are_made_again(jobs_service):
    jobs_service.store.cancel.return_value = (row("j1", status="cancelled", **HOOK), "pending")
    jobs_service.cancel("j1")
    jobs_service.store.unannounced.return_value = [row("j2", status="failed", **HOOK)]
    jobs_service.reannounce()
    assert [(a.job["id"], a.job["status"]) for a in announcements(jobs_service)] == [("j1", "cancelled"),
                                                                                    ("j2", "failed")]
    assert jobs_service.store.unannounced.call_args.kwargs == {"older_than_seconds": SETTINGS.dispatch_sweep_seconds}


def test_create_stores_the_webhook_with_the_jobs(jobs_service):
    jobs_service.store.create.side_effect = lambda jobs, *rest: ([row(job["id"]) for job in jobs], True)
    jobs_service.create(make_spec(), 1, str(uuid.uuid4()), "ci", HOOK["webhook"], ["completed"])
    assert jobs_service.store.create.call_args.args[2:] == ("ci", HOOK["webhook"], ["completed"])


# --- the webhooks service hears them ---------------------------------------------------------------

@pytest.fixture
def webhooks_service():
    return worker_factory(WebhooksService, config=SETTINGS.nameko_config())


def announced(status, events_filter, owner="ci"):
    return events.JobStatusChanged(job={"id": "5b1b5c8e-0000-4000-8000-000000000001", "status": status},
                                   owner=owner, webhook=HOOK["webhook"], webhook_events=events_filter).model_dump()


def test_only_the_events_the_filter_names_become_deliveries(webhooks_service):
    webhooks_service.on_status_changed(announced("processing", ["completed"]))
    webhooks_service.store.record.assert_not_called()
    webhooks_service.on_status_changed(announced("done", ["completed"]))
    job_id, event, owner, url, body = webhooks_service.store.record.call_args.args
    assert (event, owner, url) == ("completed", "ci", HOOK["webhook"]) and json.loads(body)["type"] == "job.completed"


def test_the_webhooks_client_is_the_services_rpc():
    served = rpc_methods(WebhooksService)
    offered = {name for name in vars(webhooks.WebhooksClient) if not name.startswith("_") and name != "service"}
    assert offered == set(served) and WebhooksService.name == webhooks.SERVICE
    for name in offered:
        assert list(inspect.signature(getattr(webhooks.WebhooksClient, name)).parameters)[1:] == \
            list(inspect.signature(served[name]).parameters)[1:]
