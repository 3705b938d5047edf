"""JobsService in a real nameko container, against the session's RabbitMQ vhost and PostgreSQL database
(the `jobs` fixture: tests/integration/conftest.py).

Events are dispatched the way the generators do it (source service "generator"), and the work queue is
read with kombu like a generator replica would read it."""
import uuid

import pytest
from psycopg.types.json import Jsonb
from nameko.standalone.events import event_dispatcher
from nameko.standalone.rpc import ServiceRpcProxy
from nameko.testing.services import entrypoint_waiter

from services.jobs.service import JobsService
from shared import events
from shared.errors import InvalidField, NotFound
from shared.schemas import MAX_COUNT
from tests.helpers import REPLICA, completed, failed, job_row, make_spec, started, status_is, wait_until


# --- create ----------------------------------------------------------------------------------------

def test_create_writes_pending_rows_and_one_persistent_work_order_per_job(jobs, db, work_queue):
    ids = jobs.create(make_spec(seed=None), 3)

    assert len(ids) == 3 and len(set(ids)) == 3
    rows = {row["id"]: row for row in
            db.execute("SELECT id::text AS id, status, seed, spec, dispatched_at FROM jobs.jobs").fetchall()}
    assert set(rows) == set(ids)
    assert all(row["status"] == "pending" for row in rows.values())
    assert all(row["dispatched_at"] is not None for row in rows.values())

    messages = work_queue.take(3)
    assert work_queue.drain() == []  # one message per job, not more
    orders = {}
    for message in messages:
        assert message.properties["delivery_mode"] == 2, "work orders must be persistent"
        assert message.delivery_info["exchange"] == events.WORK_EXCHANGE.name
        order = events.WorkOrder.model_validate(message.payload)
        orders[order.job_id] = order
    assert set(orders) == set(ids)

    seeds = set()
    for job_id, order in orders.items():
        assert isinstance(order.spec.seed, int), "a random seed is drawn for every job"
        assert order.spec.seed == rows[job_id]["seed"] == rows[job_id]["spec"]["seed"]
        seeds.add(order.spec.seed)
    assert len(seeds) == 3, "each job gets its own random seed"


def test_create_with_a_given_seed_gives_job_i_the_seed_plus_i(jobs, db, work_queue):
    ids = jobs.create(make_spec(seed=1234567), 2)

    orders = [events.WorkOrder.model_validate(m.payload) for m in work_queue.take(2)]
    assert [o.job_id for o in orders] == ids
    assert [o.spec.seed for o in orders] == [1234567, 1234568]
    assert [job_row(db, job_id)["seed"] for job_id in ids] == [1234567, 1234568]


def test_create_rejects_a_count_out_of_range_and_writes_nothing(jobs, db, work_queue):
    for count in (0, MAX_COUNT + 1, -1, "3", 2.0):
        with pytest.raises(InvalidField) as err:
            jobs.create(make_spec(), count)
        assert err.value.field == "count"
    assert db.execute("SELECT count(*) AS n FROM jobs.jobs").fetchone()["n"] == 0
    assert work_queue.drain() == []


# --- get ---------------------------------------------------------------------------------------------

def test_get_unknown_or_malformed_id_raises_not_found_at_the_caller(jobs):
    for job_id in (str(uuid.uuid4()), "not-a-uuid", "", "1; DROP TABLE jobs.jobs", 12345):
        with pytest.raises(NotFound) as err:
            jobs.get(job_id)
        assert err.value.kind == "job"
        assert err.value.key == str(job_id)  # nameko carries exception args across as text


def test_get_of_a_new_job(jobs):
    [job_id] = jobs.create(make_spec(), 1)
    job = jobs.get(job_id)
    assert job["id"] == job_id
    assert job["status"] == "pending"
    assert job["result"] is None and job["error"] is None
    assert job["attempts"] == 0
    assert job["label"] == "Preset: Example – preview"


# --- generator events --------------------------------------------------------------------------------

def test_events_move_a_job_pending_processing_done(jobs, dispatch):
    [job_id] = jobs.create(make_spec(seed=42), 1)
    assert jobs.get(job_id)["status"] == "pending"

    dispatch(events.JOB_STARTED, started(job_id))
    job = wait_until(status_is(jobs, job_id, "processing"), what="processing")
    assert job["replica"] == REPLICA
    assert job["started_at"] is not None

    dispatch(events.JOB_PROGRESS, events.JobProgress(job_id=job_id, value=2, max=3))
    wait_until(lambda: jobs.get(job_id)["progress"] == {"value": 2, "max": 3}, what="progress")

    event = completed(job_id, seed=42)
    dispatch(events.JOB_COMPLETED, event)
    job = wait_until(status_is(jobs, job_id, "done"), what="done")
    assert job["result"]["relative_path"] == event.relative_path
    assert job["result"]["image_url"] == f"/static/uploads/{event.relative_path}"
    assert job["result"]["seed"] == 42
    assert job["error"] is None
    assert job["finished_at"] >= job["started_at"]


def test_failed_event_sets_a_readable_error(jobs, dispatch):
    [job_id] = jobs.create(make_spec(), 1)
    dispatch(events.JOB_STARTED, started(job_id))
    wait_until(status_is(jobs, job_id, "processing"), what="processing")

    dispatch(events.JOB_FAILED, failed(job_id, error="checkpoint SD15/x.safetensors not found"))
    job = wait_until(status_is(jobs, job_id, "failed"), what="failed")
    assert job["error"] == "checkpoint SD15/x.safetensors not found"
    assert job["result"] is None
    assert job["finished_at"] is not None


def test_states_only_move_forward(jobs, dispatch):
    job_id, m_started, m_failed, m_completed = jobs.create(make_spec(), 4)
    dispatch(events.JOB_STARTED, started(job_id))
    first = completed(job_id, seed=1)
    dispatch(events.JOB_COMPLETED, first)
    done = wait_until(status_is(jobs, job_id, "done"), what="done")

    # Late and duplicate events for the finished job, each followed by the same kind of event for a marker
    # job. Each event type has its own queue, and the single-worker container handles one message of a
    # queue at a time in order: once the marker's event shows, the late one before it was handled too.
    dispatch(events.JOB_STARTED, started(job_id, replica="late-replica", attempt=2))
    dispatch(events.JOB_STARTED, started(m_started))
    wait_until(status_is(jobs, m_started, "processing"), what="marker processing")

    dispatch(events.JOB_PROGRESS, events.JobProgress(job_id=job_id, value=1, max=10))
    dispatch(events.JOB_PROGRESS, events.JobProgress(job_id=m_started, value=1, max=10))
    wait_until(lambda: jobs.get(m_started)["progress"] == {"value": 1, "max": 10}, what="marker progress")

    dispatch(events.JOB_FAILED, failed(job_id, error="late failure", replica="late-replica"))
    dispatch(events.JOB_FAILED, failed(m_failed))
    wait_until(status_is(jobs, m_failed, "failed"), what="marker failed")

    dispatch(events.JOB_COMPLETED, completed(job_id, relative_path="presets/example_01/duplicate.png", seed=2,
                                             replica="late-replica"))
    dispatch(events.JOB_COMPLETED, completed(m_completed))
    wait_until(status_is(jobs, m_completed, "done"), what="marker done")

    after = jobs.get(job_id)
    assert after == done, "nothing about a finished job changes"
    assert after["result"]["relative_path"] == first.relative_path
    assert after["replica"] == REPLICA and after["error"] is None

    # a failed job is just as final: a late completion does not resurrect it
    dispatch(events.JOB_COMPLETED, completed(m_failed))
    dispatch(events.JOB_COMPLETED, completed(m_started))
    wait_until(status_is(jobs, m_started, "done"), what="second marker done")
    assert jobs.get(m_failed)["status"] == "failed"
    assert jobs.get(m_failed)["result"] is None


def test_duplicate_completed_is_a_no_op(jobs, dispatch, db):
    job_id, marker_id = jobs.create(make_spec(), 2)
    first = completed(job_id, seed=7)
    dispatch(events.JOB_COMPLETED, first)
    wait_until(status_is(jobs, job_id, "done"), what="done")
    before = job_row(db, job_id)

    dispatch(events.JOB_COMPLETED, first)
    dispatch(events.JOB_COMPLETED, completed(marker_id))
    wait_until(status_is(jobs, marker_id, "done"), what="marker done")

    assert job_row(db, job_id) == before  # finished_at included: the duplicate did not touch the row


# --- claim -------------------------------------------------------------------------------------------

def test_claim_runs_skips_and_retries_up_to_max_attempts(jobs, db, settings):
    assert settings.max_attempts == 3
    [job_id] = jobs.create(make_spec(), 1)

    first = jobs.claim(job_id, "replica-a", False)
    assert first == {"run": True, "attempt": 1, "reason": None, "wait": False}
    row = job_row(db, job_id)
    # reserved, not yet running: the job turns processing when the replica's GPU starts it
    assert (row["status"], row["attempts"], row["replica"], row["started_at"]) == ("pending", 1, "replica-a", None)

    duplicate = jobs.claim(job_id, "replica-b", False)
    assert duplicate["run"] is False
    assert "taken" in duplicate["reason"]
    assert job_row(db, job_id)["replica"] == "replica-a"

    retry = jobs.claim(job_id, "replica-b", True)
    assert retry == {"run": True, "attempt": 2, "reason": None, "wait": False}
    assert job_row(db, job_id)["replica"] == "replica-b"

    assert jobs.claim(job_id, "replica-a", True) == {"run": True, "attempt": 3, "reason": None, "wait": False}

    exhausted = jobs.claim(job_id, "replica-b", True)
    assert exhausted["run"] is False
    job = jobs.get(job_id)
    assert job["status"] == "failed"
    assert job["attempts"] == 3
    assert "attempts" in job["error"] and "3" in job["error"]
    assert job["finished_at"] is not None

    # and a failed job stays failed
    assert jobs.claim(job_id, "replica-a", True)["run"] is False
    assert jobs.get(job_id)["status"] == "failed"


def test_claim_of_a_done_job_is_skipped(jobs, dispatch):
    [job_id] = jobs.create(make_spec(), 1)
    assert jobs.claim(job_id, "replica-a", False)["run"] is True
    dispatch(events.JOB_COMPLETED, completed(job_id))
    wait_until(status_is(jobs, job_id, "done"), what="done")

    for redelivered in (False, True):
        answer = jobs.claim(job_id, "replica-b", redelivered)
        assert answer["run"] is False
        assert "done" in answer["reason"]
    job = jobs.get(job_id)
    assert (job["status"], job["attempts"], job["replica"]) == ("done", 1, REPLICA)


def test_claim_of_an_unknown_job_is_skipped_and_a_malformed_id_is_not_found(jobs):
    assert jobs.claim(str(uuid.uuid4()), "replica-a", False)["run"] is False
    with pytest.raises(NotFound):
        jobs.claim("nonsense", "replica-a", False)


# --- outbox sweep ------------------------------------------------------------------------------------

def _insert_stranded(db, spec, age="1 minute"):
    """A job row as if the jobs process died between writing it and publishing its work order."""
    job_id = str(uuid.uuid4())
    db.execute(
        "INSERT INTO jobs.jobs (id, preset_slug, label, spec, seed, created_at)"
        " VALUES (%s, %s, 'Preset: Example – preview', %s, %s, now() - %s::interval)",
        (job_id, spec["preset_slug"], Jsonb(spec), spec["seed"], age),
    )
    assert job_row(db, job_id)["dispatched_at"] is None
    return job_id


def test_sweep_publishes_a_job_that_was_written_but_never_dispatched(
        container_factory, jobs_config, clean_jobs, work_queue, settings):
    db = clean_jobs
    assert settings.dispatch_sweep_seconds <= 1
    spec = make_spec(seed=99)
    job_id = _insert_stranded(db, spec)
    assert work_queue.drain() == []

    container_factory(JobsService, jobs_config).start()

    [message] = work_queue.take(1, timeout=10)
    assert message.properties["delivery_mode"] == 2
    order = events.WorkOrder.model_validate(message.payload)
    assert order.job_id == job_id
    assert order.spec.model_dump() == spec
    wait_until(lambda: job_row(db, job_id)["dispatched_at"] is not None, what="dispatched_at set")
    assert job_row(db, job_id)["status"] == "pending"

    # A later sweep picks up a second stranded job but does not publish the first one again.
    second_id = _insert_stranded(db, make_spec(seed=100))
    [message] = work_queue.take(1, timeout=10)
    assert message.payload["job_id"] == second_id
    wait_until(lambda: job_row(db, second_id)["dispatched_at"] is not None, what="second dispatched_at set")
    assert work_queue.drain() == []


# --- stuck-job sweep ---------------------------------------------------------------------------------

STUCK_SECONDS = 60


@pytest.fixture
def sweeping_container(container_factory, settings, clean_jobs, work_queue):
    """A jobs service whose stuck-job sweep runs every 0.2 s with a 60 s limit."""
    import dataclasses

    swept_settings = dataclasses.replace(settings, stuck_sweep_seconds=0.2, stuck_job_seconds=STUCK_SECONDS)
    container = container_factory(JobsService, swept_settings.nameko_config(max_workers=1))
    container.start()
    return container


@pytest.fixture
def sweeping_jobs(sweeping_container, settings):
    """An RPC proxy to `sweeping_container`."""
    with ServiceRpcProxy("jobs", {"AMQP_URI": settings.amqp_uri, "serializer": "json"}, timeout=10) as proxy:
        yield proxy


def completed_sweeps(container, count=2):
    """Wait until `count` more stuck-job sweeps have run to their end: the last began after this call."""
    for _ in range(count):
        with entrypoint_waiter(container, "sweep_stuck", timeout=10):
            pass


def handled(container, entrypoint, job_ids):
    """A context manager that, on exit, has waited until `entrypoint` handled an event for each of `job_ids`."""
    waiting = set(job_ids)

    def seen(worker_ctx, result, exc_info):
        waiting.discard(worker_ctx.args[0].get("job_id"))
        return not waiting

    return entrypoint_waiter(container, entrypoint, timeout=10, callback=seen)


def _silent_for(db, job_id, seconds):
    """As if the replica holding the job had not been heard from for `seconds`."""
    db.execute("UPDATE jobs.jobs SET last_seen_at = now() - make_interval(secs => %s) WHERE id = %s",
               (seconds, job_id))


def _read_model(settings, job_id):
    from shared.contracts.jobs.view import JobView

    view = JobView(settings.redis_url, settings.redis_prefix)
    try:
        return view.get(job_id)
    finally:
        view.close()


def test_claim_started_and_progress_are_signs_of_life(jobs, db, dispatch):
    [job_id] = jobs.create(make_spec(), 1)
    jobs.claim(job_id, "replica-a", False)
    claimed = job_row(db, job_id)["last_seen_at"]
    assert claimed is not None

    _silent_for(db, job_id, 100)
    dispatch(events.JOB_STARTED, started(job_id, replica="replica-a"))
    wait_until(status_is(jobs, job_id, "processing"), what="processing")
    assert job_row(db, job_id)["last_seen_at"] >= claimed

    _silent_for(db, job_id, 100)
    dispatch(events.JOB_PROGRESS, events.JobProgress(job_id=job_id, value=1, max=3))
    wait_until(lambda: job_row(db, job_id)["last_seen_at"] >= claimed, what="progress bumped last_seen_at")


def test_sweep_requeues_a_silent_processing_job_which_is_then_claimable(sweeping_jobs, sweeping_container, db,
                                                                        dispatch, work_queue, settings):
    jobs = sweeping_jobs
    stuck_id, fresh_id, reserved_fresh_id, unclaimed_id = jobs.create(make_spec(seed=5), 4)
    assert len(work_queue.take(4)) == 4
    for job_id in (stuck_id, fresh_id):
        assert jobs.claim(job_id, "replica-a", False)["run"] is True
        dispatch(events.JOB_STARTED, started(job_id, replica="replica-a"))
        wait_until(status_is(jobs, job_id, "processing"), what="processing")
    assert jobs.claim(reserved_fresh_id, "replica-a", False)["run"] is True
    dispatch(events.JOB_PROGRESS, events.JobProgress(job_id=stuck_id, value=2, max=10))
    wait_until(lambda: jobs.get(stuck_id)["progress"] == {"value": 2, "max": 10}, what="progress")
    # fresh_id: alive, but slow (50 s of the 60 allowed without a sign of life)
    _silent_for(db, fresh_id, STUCK_SECONDS - 10)
    _silent_for(db, stuck_id, STUCK_SECONDS + 1)

    [message] = work_queue.take(1, timeout=10)
    order = events.WorkOrder.model_validate(message.payload)
    assert order.job_id == stuck_id
    assert order.spec.seed == 5 and order.spec.preset_slug == "example_01"
    row = job_row(db, stuck_id)
    # states never move backwards: still processing, attempt 1 counted, but nobody holds it any more
    assert (row["status"], row["attempts"], row["replica"], row["requeued"]) == ("processing", 1, None, True)
    assert row["error"] is None and row["finished_at"] is None

    # the republished order arrives as a first delivery (redelivered=False) and is accepted as attempt 2
    assert jobs.claim(stuck_id, "replica-b", False) == {"run": True, "attempt": 2, "reason": None, "wait": False}
    row = job_row(db, stuck_id)
    assert (row["replica"], row["requeued"]) == ("replica-b", False)
    # ...exactly once: a second copy of the order is a duplicate
    assert jobs.claim(stuck_id, "replica-c", False)["run"] is False
    doc = wait_until(lambda: (d := _read_model(settings, stuck_id)) and d["attempts"] == 2 and d, what="read model")
    assert (doc["status"], doc["replica"]) == ("processing", "replica-b")

    # a late event of the first run changes nothing; the new run finishes the job
    dispatch(events.JOB_STARTED, started(stuck_id, replica="replica-a", attempt=1))
    dispatch(events.JOB_STARTED, started(stuck_id, replica="replica-b", attempt=2))
    wait_until(lambda: job_row(db, stuck_id)["started_attempt"] == 2, what="attempt 2 started")
    assert job_row(db, stuck_id)["replica"] == "replica-b"
    dispatch(events.JOB_COMPLETED, completed(stuck_id, replica="replica-b"))
    wait_until(status_is(jobs, stuck_id, "done"), what="done")

    # nothing else was touched: a slow-but-alive job, a freshly reserved one, one nobody claimed yet
    completed_sweeps(sweeping_container)
    assert work_queue.drain() == []
    fresh = job_row(db, fresh_id)
    assert (fresh["status"], fresh["replica"], fresh["requeued"], fresh["attempts"]) == ("processing", "replica-a",
                                                                                       False, 1)
    reserved = job_row(db, reserved_fresh_id)
    assert (reserved["status"], reserved["replica"], reserved["requeued"]) == ("pending", "replica-a", False)
    assert job_row(db, unclaimed_id)["attempts"] == 0


def test_sweep_fails_a_silent_job_that_had_its_max_attempts(sweeping_jobs, sweeping_container, db, dispatch,
                                                             work_queue, settings):
    jobs = sweeping_jobs
    assert settings.max_attempts == 3
    job_id, reserved_id = jobs.create(make_spec(), 2)
    work_queue.take(2)
    for attempt, redelivered in ((1, False), (2, True), (3, True)):
        assert jobs.claim(job_id, "replica-a", redelivered)["attempt"] == attempt
    dispatch(events.JOB_STARTED, started(job_id, replica="replica-a", attempt=3))
    wait_until(status_is(jobs, job_id, "processing"), what="processing")
    # a job reserved (claimed, never started) by a replica that fell silent is swept too
    for attempt, redelivered in ((1, False), (2, True), (3, True)):
        assert jobs.claim(reserved_id, "replica-b", redelivered)["attempt"] == attempt
    _silent_for(db, job_id, STUCK_SECONDS * 10)
    _silent_for(db, reserved_id, STUCK_SECONDS + 1)

    job = wait_until(status_is(jobs, job_id, "failed"), what="failed")
    assert job["error"].startswith("gave up after 3 attempts: the generator running this job"
                                   " showed no sign of life for 600 s"), job["error"]
    # a client reads no replica name (a host name) nor setting name: those are in the jobs service's log
    assert "replica-a" not in job["error"] and "GAZE_" not in job["error"]
    assert job["finished_at"] is not None and job["result"] is None
    reserved = wait_until(status_is(jobs, reserved_id, "failed"), what="reserved job failed")
    assert reserved["error"].startswith("gave up after 3 attempts") and "replica-b" not in reserved["error"]
    assert work_queue.drain() == [], "a failed job is not published again"
    doc = wait_until(lambda: (d := _read_model(settings, job_id)) and d["status"] == "failed" and d,
                     what="failed in the read model")
    assert doc["error"] == job["error"]

    # and it stays failed: a late completion or a redelivery does not resurrect it
    assert jobs.claim(job_id, "replica-a", True)["run"] is False
    with handled(sweeping_container, "on_completed", [job_id, reserved_id]):
        dispatch(events.JOB_COMPLETED, completed(job_id, replica="replica-a"))
        dispatch(events.JOB_COMPLETED, completed(reserved_id, replica="replica-b"))
    assert jobs.get(job_id)["status"] == "failed"
    assert jobs.get(reserved_id)["status"] == "failed"


def test_event_handlers_requeue_on_failure_but_drop_malformed_events(jobs, jobs_container, dispatch, settings,
                                                                     monkeypatch):
    """A handler that fails (the database restarting) sends its event back to the queue instead of
    acknowledging it away; a payload that can never validate is logged and dropped, not looped."""
    import psycopg

    from services.jobs.store import JobRepository

    [job_id] = jobs.create(make_spec(), 1)
    real_completed, applied = JobRepository.completed, []

    def completed_after_a_restart(self, completed_id, *args, **kwargs):
        applied.append(completed_id)
        if applied.count(job_id) == 1 and completed_id == job_id:
            raise psycopg.OperationalError("the connection was closed: the database is restarting")
        return real_completed(self, completed_id, *args, **kwargs)

    monkeypatch.setattr(JobRepository, "completed", completed_after_a_restart)
    dispatch(events.JOB_COMPLETED, completed(job_id))
    # the first delivery failed; the event came back from the queue and its second delivery applied it
    wait_until(status_is(jobs, job_id, "done"), what="the completion, delivered again after the failure")
    assert applied == [job_id, job_id]

    send = event_dispatcher({"AMQP_URI": settings.amqp_uri, "serializer": "json"})
    send(events.EVENT_SOURCE, events.JOB_COMPLETED, {"job_id": "not even a full event"})
    [marker] = jobs.create(make_spec(), 1)
    dispatch(events.JOB_COMPLETED, completed(marker))
    wait_until(status_is(jobs, marker, "done"), what="the event after the malformed one was handled")


def test_a_create_request_delivered_twice_creates_its_jobs_once(jobs, work_queue, db):
    """The gateway sends a request id with every create: a second delivery of it (its RPC message
    redelivered after a broker restart, or a retry with the same Idempotency-Key after a 503) answers
    with the first delivery's jobs and publishes nothing more."""
    request_id = str(uuid.uuid4())
    first = jobs.create(make_spec(), 2, request_id)
    assert len(work_queue.take(2)) == 2
    again = jobs.create(make_spec(), 2, request_id)
    assert again == first
    assert work_queue.drain() == []
    assert db.execute("SELECT count(*) AS n FROM jobs.jobs").fetchone()["n"] == 2
    assert jobs.create(make_spec(), 1, str(uuid.uuid4())) != first, "another request id: new jobs"
    db.execute("UPDATE jobs.create_requests SET created_at = now() - interval '25 hours' WHERE request_id = %s",
               (request_id,))
    assert set(jobs.create(make_spec(), 2, request_id)).isdisjoint(first), "after 24 h the id is free again"
    with pytest.raises(InvalidField):
        jobs.create(make_spec(), 1, "not-a-uuid")
