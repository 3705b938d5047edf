"""The job read model (shared/contracts/jobs/view.py) against the real Redis, and the jobs service keeping it current."""
import json
import uuid

import pytest

from shared import events
from shared.contracts.jobs.view import JobView, version
from services.gateway.stores.job_lookup import JobLookup
from shared.errors import NotFound
from tests.fakes import FakeRpc
from tests.helpers import REPLICA, completed, failed, make_spec, started, wait_until

REDIS_URL = "redis://127.0.0.1:6379/0"


def doc(job_id, status, attempts=0, progress=None, **extra):
    return {"id": job_id, "status": status, "attempts": attempts,
            "progress": None if progress is None else {"value": progress, "max": 10}, **extra}


@pytest.fixture
def view(settings):
    view = JobView(REDIS_URL, prefix=f"{settings.redis_prefix}-{uuid.uuid4().hex[:8]}")
    yield view
    for key in view.client.scan_iter(f"{view.prefix}:*"):
        view.client.delete(key)
    view.close()


def test_versions_grow_with_every_forward_step():
    steps = [doc("j", "pending"), doc("j", "processing", 1), doc("j", "processing", 1, progress=3),
             doc("j", "processing", 2), doc("j", "processing", 2, progress=9), doc("j", "done", 2, progress=10)]
    assert [version(d) for d in steps] == sorted(version(d) for d in steps)
    assert len({version(d) for d in steps}) == len(steps)
    assert version(doc("j", "failed", 1)) > version(doc("j", "processing", 3, progress=999))


def test_a_document_never_moves_backwards(view):
    job_id = str(uuid.uuid4())
    assert view.put(doc(job_id, "processing", 1, progress=5))
    assert not view.put(doc(job_id, "pending")), "older status refused"
    assert not view.put(doc(job_id, "processing", 1, progress=4)), "older progress refused"
    assert view.put(doc(job_id, "done", 1, result={"seed": 1}))
    assert not view.put(doc(job_id, "processing", 2)), "a late retry's claim cannot reopen a done job"
    assert not view.put(doc(job_id, "failed", 1)), "nor can a late failure replace done"
    assert view.get(job_id)["status"] == "done"
    assert view.get(job_id)["result"] == {"seed": 1}


def test_expiry_is_short_for_active_and_long_for_finished_jobs(view):
    active, finished = str(uuid.uuid4()), str(uuid.uuid4())
    view.put(doc(active, "pending"))
    view.put(doc(finished, "failed", 1))
    assert 0 < view.client.ttl(view.key(active)) <= 15 * 60
    assert view.client.ttl(view.key(finished)) > 24 * 3600


def test_get_many_returns_only_stored_ids(view):
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    view.put(doc(a, "pending"))
    assert view.get_many([a, b]) == {a: doc(a, "pending")}


def test_an_unreachable_redis_is_a_miss_not_an_error():
    view = JobView("redis://127.0.0.1:1/0", timeout=0.2)
    assert view.get(str(uuid.uuid4())) is None
    assert view.get_many([str(uuid.uuid4())]) == {}
    assert view.put(doc(str(uuid.uuid4()), "pending")) is False
    view.put_many([doc(str(uuid.uuid4()), "pending")])


def test_no_redis_configured_means_no_read_model():
    view = JobView("")
    assert view.get("x") is None and view.put(doc("x", "pending")) is False


def test_lookup_reads_through_and_writes_back(view):
    job_id, unknown = str(uuid.uuid4()), str(uuid.uuid4())
    rpc = FakeRpc(jobs=[doc(job_id, "done", 1)])
    lookup = JobLookup(rpc, view)
    assert lookup.get(job_id)["status"] == "done"
    assert lookup.get(job_id)["status"] == "done"
    assert len(rpc.calls) == 1, "the second poll is answered by the read model"
    with pytest.raises(NotFound):
        lookup.get(unknown)
    assert view.get(unknown) is None, "an unknown job is never written, so never shown as pending"
    assert [d["id"] for d in lookup.get_many([unknown, job_id])] == [job_id]


def test_lookup_write_back_cannot_undo_a_newer_state(view):
    """A read-through that fetched `processing` just before the job finished must not hide `done`."""
    job_id = str(uuid.uuid4())
    view.put(doc(job_id, "done", 1))
    lookup = JobLookup(FakeRpc(jobs=[doc(job_id, "processing", 1)]), view)
    lookup.view.put(lookup.jobs_service.get(job_id))
    assert view.get(job_id)["status"] == "done"


# --- the jobs service writes every committed transition ---------------------------------------------

@pytest.fixture
def service_view(settings, jobs_container):
    view = JobView(REDIS_URL, prefix=settings.redis_prefix)
    yield view
    view.close()


def test_jobs_service_keeps_the_read_model_current(jobs, dispatch, service_view):
    [job_id] = jobs.create(make_spec(seed=42), 1)
    assert service_view.get(job_id) == jobs.get(job_id), "written before create returns"
    assert service_view.get(job_id)["status"] == "pending"

    assert jobs.claim(job_id, REPLICA, False)["run"] is True
    assert service_view.get(job_id)["attempts"] == 1, "the claim is written before claim returns"

    dispatch(events.JOB_STARTED, started(job_id))
    wait_until(lambda: service_view.get(job_id)["status"] == "processing", what="processing")

    dispatch(events.JOB_PROGRESS, events.JobProgress(job_id=job_id, value=3, max=10))
    wait_until(lambda: (service_view.get(job_id)["progress"] or {}).get("value") == 3, what="progress")

    dispatch(events.JOB_COMPLETED, completed(job_id, seed=42))
    wait_until(lambda: service_view.get(job_id)["status"] == "done", what="done in the read model")
    assert service_view.get(job_id) == jobs.get(job_id)
    stored = json.loads(service_view.client.hget(service_view.key(job_id), "doc"))
    assert stored["result"]["seed"] == 42


def test_jobs_service_records_failures_and_given_up_claims(jobs, dispatch, service_view, settings):
    job_id, exhausted = jobs.create(make_spec(), 2)
    dispatch(events.JOB_STARTED, started(job_id))
    dispatch(events.JOB_FAILED, failed(job_id, error="out of memory"))
    wait_until(lambda: service_view.get(job_id)["status"] == "failed", what="failed in the read model")
    assert service_view.get(job_id)["error"] == "out of memory"

    for _ in range(settings.max_attempts):
        jobs.claim(exhausted, REPLICA, True)
    assert jobs.claim(exhausted, REPLICA, True)["run"] is False
    assert service_view.get(exhausted)["status"] == "failed"
    assert "gave up" in service_view.get(exhausted)["error"]
