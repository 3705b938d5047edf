"""JobsService's own decisions: each entrypoint runs under nameko's worker_factory with its dependencies
(the store, the read model, the work queue publisher, the event dispatcher, the media store) replaced by
mocks. What is pinned here is what an entrypoint decides: what it validates, which store call it makes
with what, which work orders and events go out and in what order, what it answers and what it raises.
(The SQL and the real broker: tests/integration/test_jobs_service.py.)"""
import base64
import decimal
import uuid

import psycopg
import pytest
from nameko.testing.services import worker_factory

from services.jobs.service import JobsService
from services.jobs.store import Claimed
from shared import config, events
from shared.errors import InvalidField, NotFound
from shared.media import MediaStoreError
from shared.schemas import MAX_COUNT, MAX_SEED
from tests.helpers import REPLICA, completed, failed, make_spec, started

SETTINGS = config.load({"GAZE_MAX_ATTEMPTS": "3", "GAZE_STUCK_JOB_SECONDS": "60",
                        "GAZE_DISPATCH_SWEEP_SECONDS": "7"})


@pytest.fixture
def service():
    return worker_factory(JobsService, config=SETTINGS.nameko_config())


def row(job_id=None, status="pending", **changes):
    """A jobs.jobs row as the store returns it."""
    fields = {"id": job_id or str(uuid.uuid4()), "label": "Preset: Example – preview", "status": status,
              "error": None, "result": None, "preset_slug": "example_01", "attempts": 0, "replica": None,
              "progress_value": None, "progress_max": None, "created_at": decimal.Decimal("1700000000.25"),
              "started_at": None, "finished_at": None, "spec": make_spec(seed=1), "created_us": 1700000000250000,
              "owner": None, "webhook": None, "webhook_events": None, "announced_status": None}
    fields.update(changes)
    return fields


def created_rows(jobs, request_id=None, owner=None, webhook=None, webhook_events=None):
    """What store.create answers for new jobs: their rows, and that it created them."""
    return [row(job["id"]) for job in jobs], True


def noting(order, name, answer=lambda *args, **kwargs: None):
    """A side effect that notes `name` in the list `order`, then answers as `answer` does."""
    def side_effect(*args, **kwargs):
        order.append(name)
        return answer(*args, **kwargs)
    return side_effect


# --- create ------------------------------------------------------------------------------------------

def test_create_writes_the_jobs_then_queues_each_then_writes_the_read_model_then_marks_them(service):
    order = []
    service.store.create.side_effect = noting(order, "create", created_rows)
    service.publish_work.side_effect = noting(order, "publish_work")
    service.view.put_many.side_effect = noting(order, "put_many")
    service.store.mark_dispatched.side_effect = noting(order, "mark_dispatched")

    ids = service.create(make_spec(seed=42), 3, str(uuid.uuid4()))

    jobs = service.store.create.call_args.args[0]
    assert [job["id"] for job in jobs] == ids and len(set(ids)) == 3
    assert [(job["seed"], job["spec"]["seed"]) for job in jobs] == [(42, 42), (43, 43), (44, 44)], "job i: seed + i"
    assert {(job["preset_slug"], job["label"]) for job in jobs} == {("example_01", "Preset: Example – preview")}
    orders = [events.WorkOrder.model_validate(c.args[0]) for c in service.publish_work.call_args_list]
    assert [order.job_id for order in orders] == ids
    line = events.checkpoint_queue(orders[0].spec.checkpoint, SETTINGS.max_attempts)    # each job waits in its checkpoint's line
    assert all(c.kwargs == {"routing_key": line.routing_key, "declare": [line]}
               for c in service.publish_work.call_args_list)
    # the orders go out first: they are on the critical path; the read model before the ids are returned
    assert order == ["create"] + ["publish_work"] * 3 + ["put_many", "mark_dispatched"]
    assert [doc["id"] for doc in service.view.put_many.call_args.args[0]] == ids
    service.store.mark_dispatched.assert_called_once_with(ids)


def test_without_a_seed_each_job_draws_its_own(service):
    service.store.create.side_effect = created_rows
    service.create(make_spec(seed=None), 5)
    jobs = service.store.create.call_args.args[0]
    seeds = [job["seed"] for job in jobs]
    assert all(isinstance(seed, int) for seed in seeds) and len(set(seeds)) == 5
    assert [job["spec"]["seed"] for job in jobs] == seeds


def test_a_batch_whose_last_seed_would_pass_the_largest_refuses_seed(service):
    with pytest.raises(InvalidField) as caught:
        service.create(make_spec(seed=MAX_SEED - 1), 3)
    assert caught.value.field == "seed"
    service.store.create.assert_not_called()
    service.publish_work.assert_not_called()


@pytest.mark.parametrize("count", [0, MAX_COUNT + 1, -1, "3", 2.0, True])
def test_a_count_out_of_range_writes_and_queues_nothing(service, count):
    with pytest.raises(InvalidField) as caught:
        service.create(make_spec(), count)
    assert caught.value.field == "count"
    service.store.create.assert_not_called()
    service.publish_work.assert_not_called()


def test_a_request_id_is_stored_in_one_spelling_and_must_be_a_uuid(service):
    service.store.create.side_effect = created_rows
    request_id = str(uuid.uuid4())
    service.create(make_spec(), 1, request_id.upper())
    assert service.store.create.call_args.args[1] == request_id
    with pytest.raises(InvalidField) as caught:
        service.create(make_spec(), 1, "not-a-uuid")
    assert caught.value.field == "request_id"
    assert service.store.create.call_count == 1


def test_a_request_seen_before_answers_with_its_jobs_and_queues_nothing_again(service):
    """A redelivered create (the gateway retried) finds the jobs of the first delivery: they were queued
    then, or the outbox sweep will queue them."""
    first = [row(), row()]
    service.store.create.side_effect = lambda jobs, *args: (first, False)
    assert service.create(make_spec(), 2, str(uuid.uuid4())) == [r["id"] for r in first]
    service.publish_work.assert_not_called()
    service.view.put_many.assert_not_called()
    service.store.mark_dispatched.assert_not_called()


def test_a_failed_dispatch_mark_does_not_turn_created_jobs_into_an_error(service):
    """Telling the caller "not created" (a 503) about jobs that were committed and published would make
    a client retry and get twice the jobs; the unmarked rows are the outbox sweep's to re-publish."""
    service.store.create.side_effect = created_rows
    service.store.mark_dispatched.side_effect = psycopg.OperationalError("server closed the connection")

    [job_id] = service.create(make_spec(), 1, str(uuid.uuid4()))
    assert service.publish_work.call_count == 1, "the work order went out"
    service.store.mark_dispatched.assert_called_once_with([job_id])


# --- reading jobs ------------------------------------------------------------------------------------

def test_a_job_document_shows_the_result_of_a_done_job_only(service):
    result = {"image_url": "/static/uploads/x.png", "seed": 1}
    service.store.get.return_value = row(status="processing", result=result, progress_value=3, progress_max=10,
                                         started_at=decimal.Decimal("1700000001.5"))
    doc = service.get("some-id")
    assert doc["result"] is None, "a retried job may carry an earlier attempt's result"
    assert doc["progress"] == {"value": 3, "max": 10}
    assert (doc["preset"], doc["created_at"], doc["started_at"], doc["finished_at"]) == (
        "example_01", 1700000000.25, 1700000001.5, None)
    assert "spec" not in doc and "preset_slug" not in doc
    service.store.get.return_value = row(status="done", result=result)
    assert service.get("some-id")["result"] == result
    assert service.get("some-id")["progress"] is None


def test_an_unknown_job_is_not_found(service):
    service.store.get.side_effect = NotFound("job", "x")
    with pytest.raises(NotFound):
        service.get("x")


def test_list_get_many_and_images_are_capped(service):
    service.store.recent.return_value = []
    service.list(10_000)
    service.store.recent.assert_called_once_with(500, None)
    service.list(5, "failed")                   # the web UI's queue filter
    service.store.recent.assert_called_with(5, "failed")
    service.store.get_many.return_value = []
    ids = [str(uuid.uuid4()) for _ in range(300)]
    service.get_many(ids)
    service.store.get_many.assert_called_once_with(ids[:200])
    service.images("example_01", limit=10_000, offset=-5)
    service.store.images.assert_called_once_with("example_01", 500, 0)


def test_list_refuses_an_unknown_status_before_asking_the_store(service):
    with pytest.raises(InvalidField) as raised:
        service.list(10, "lost")
    assert raised.value.field == "status"
    service.store.recent.assert_not_called()


def test_jobs_of_checks_its_query_before_asking_the_store(service):
    for query, field in (({"status": "lost"}, "status"), ({"limit": 0}, "limit"), ({"limit": 101}, "limit"),
                         ({"cursor": "%%%"}, "cursor"), ({"cursor": base64.urlsafe_b64encode(b"1:x").decode()},
                                                         "cursor")):
        with pytest.raises(InvalidField) as caught:
            service.jobs_of("ci", **query)
        assert caught.value.field == field, query
    service.store.owned.assert_not_called()


def test_jobs_of_pages_with_a_cursor_that_leads_to_the_next_page(service):
    rows = [row(created_us=1700000000000000 + n) for n in range(3)]
    service.store.owned.return_value = rows        # one more than the page: there is a next page
    page = service.jobs_of("ci", limit=2)
    assert [doc["id"] for doc in page["jobs"]] == [r["id"] for r in rows[:2]]
    service.store.owned.assert_called_once_with("ci", 3, None, None, None, None)

    service.store.owned.return_value = rows[2:]
    last = service.jobs_of("ci", limit=2, cursor=page["next_cursor"])
    assert service.store.owned.call_args.args[-1] == (rows[1]["created_us"], rows[1]["id"])
    assert last["next_cursor"] is None


# --- what the generators and clients tell it ----------------------------------------------------------

def test_a_claim_runs_with_the_configured_attempt_limit_and_is_written_to_the_read_model(service):
    claimed = row(status="processing", attempts=1, replica=REPLICA)
    service.store.claim.return_value = Claimed(True, 1, None, claimed)
    assert service.claim(claimed["id"], REPLICA, True) == {"run": True, "attempt": 1, "reason": None, "wait": False}
    service.store.claim.assert_called_once_with(claimed["id"], REPLICA, True, SETTINGS.max_attempts,
                                                SETTINGS.owner_silence_seconds)
    assert service.view.put.call_args.args[0]["status"] == "processing"


@pytest.mark.parametrize("handler, event, store_call, args", [
    ("on_started", started("j1"), "started", ("j1", REPLICA, 1)),
    ("on_progress", events.JobProgress(job_id="j1", value=2, max=5), "progress", ("j1", 2, 5)),
    ("on_failed", failed("j1", error="out of memory"), "failed", ("j1", REPLICA, "out of memory")),
])
def test_an_event_moves_the_job_and_the_read_model_follows(service, handler, event, store_call, args):
    getattr(service.store, store_call).return_value = row("j1", status="processing")
    getattr(service, handler)(event.model_dump())
    getattr(service.store, store_call).assert_called_once_with(*args)
    assert service.view.put.call_args.args[0]["id"] == "j1"


def test_an_event_that_changes_nothing_writes_nothing_to_the_read_model(service):
    service.store.failed.return_value = None          # the job had ended: a late failure is ignored
    service.on_failed(failed("j1").model_dump())
    service.view.put.assert_not_called()


@pytest.mark.parametrize("handler", ["on_started", "on_progress", "on_completed", "on_failed",
                                     "on_generator_status"])
def test_a_malformed_event_is_dropped_not_retried(service, handler):
    """Raising would requeue it (requeue_on_error) to fail forever."""
    getattr(service, handler)({"job_id": "j1"})
    assert service.store.method_calls == []


def test_a_completion_records_the_images_url_and_size(service):
    service.store.completed.return_value = row("j1", status="done")
    event = completed("j1", relative_path="presets/example_01/gen_1_j1.png", seed=7)
    service.on_completed(event.model_dump())
    service.store.completed.assert_called_once_with("j1", REPLICA, {
        "image_url": "/static/uploads/presets/example_01/gen_1_j1.png",
        "relative_path": "presets/example_01/gen_1_j1.png", "seed": 7, "width": 128, "height": 128,
        "generation_seconds": 0.5})
    service.media.delete.assert_not_called()


@pytest.mark.parametrize("status, deleted", [("cancelled", True), ("done", False), ("failed", False)])
def test_an_image_finished_after_its_job_was_cancelled_is_deleted(service, status, deleted):
    service.store.completed.return_value = None       # not applied: the job had ended
    service.store.get.return_value = row("j1", status=status)
    service.on_completed(completed("j1", relative_path="presets/example_01/late.png").model_dump())
    assert service.media.delete.call_args_list == ([(("presets/example_01/late.png",),)] if deleted else [])


def test_an_image_that_cannot_be_deleted_is_logged_not_raised(service, caplog):
    service.store.completed.return_value = None
    service.store.get.return_value = row("j1", status="cancelled")
    service.media.delete.side_effect = MediaStoreError("S3 unreachable")
    service.on_completed(completed("j1").model_dump())
    assert "could not be deleted" in caplog.text


def test_cancel_tells_the_replicas_only_when_it_cancelled(service):
    job = row("j1", status="cancelled")
    service.store.cancel.return_value = (job, "processing")
    answer = service.cancel("j1")
    assert answer["cancelled"] is True and answer["job"]["status"] == "cancelled"
    [(event_type, payload)] = [c.args for c in service.dispatch.call_args_list]
    assert event_type == events.JOB_CANCELLED and (payload["job_id"], payload["was"]) == ("j1", "processing")
    assert service.view.put.call_args.args[0]["status"] == "cancelled"

    service.dispatch.reset_mock()
    service.store.cancel.return_value = (row("j1", status="done"), None)    # it had ended already
    assert service.cancel("j1")["cancelled"] is False
    service.dispatch.assert_not_called()


def test_a_generator_status_is_recorded(service):
    status = events.GeneratorStatus(replica="gen-a", backend="preview", healthy=True, detail="ok")
    service.on_generator_status(status.model_dump())
    assert service.store.record_replica.call_args.args[0].replica == "gen-a"


# --- the timers --------------------------------------------------------------------------------------

def test_the_outbox_sweep_queues_what_was_written_but_never_queued(service):
    stranded = [{"id": "j1", "spec": make_spec(seed=1), "created_at": 1.0},
                {"id": "j2", "spec": make_spec(seed=2), "created_at": 2.0}]
    service.store.undispatched.return_value = stranded
    service.redispatch()
    service.store.undispatched.assert_called_once_with(older_than_seconds=SETTINGS.dispatch_sweep_seconds)
    assert [c.args[0]["job_id"] for c in service.publish_work.call_args_list] == ["j1", "j2"]
    service.store.mark_dispatched.assert_called_once_with(["j1", "j2"])

    service.publish_work.reset_mock()
    service.store.undispatched.return_value = []
    service.redispatch()
    service.publish_work.assert_not_called()


def test_the_stuck_job_sweep_requeues_or_fails_and_writes_both_to_the_read_model(service):
    requeued = row("j1", status="pending", attempts=1, requeued=True)
    given_up = row("j2", status="failed", attempts=3, requeued=False, error="no sign of life")
    service.store.sweep_stuck.return_value = [requeued, given_up]
    service.sweep_stuck()
    service.store.sweep_stuck.assert_called_once_with(SETTINGS.stuck_job_seconds, SETTINGS.max_attempts)
    assert [c.args[0]["job_id"] for c in service.publish_work.call_args_list] == ["j1"], "only the requeued one"
    assert [c.args[0]["id"] for c in service.view.put.call_args_list] == ["j1", "j2"]


def test_the_waiting_line_drops_the_jobs_that_no_longer_wait(service):
    service.view.waiting_ids.return_value = ["j1", "j2"]
    service.store.not_waiting.return_value = ["j2"]
    service.tidy_waiting_line()
    service.store.not_waiting.assert_called_once_with(["j1", "j2"])
    service.view.forget_waiting.assert_called_once_with(["j2"])

    service.store.not_waiting.reset_mock()
    service.view.waiting_ids.return_value = []
    service.tidy_waiting_line()
    service.store.not_waiting.assert_not_called()
