"""The job read model (shared/contracts/jobs/view.py) against the real Redis, and the jobs service keeping it current."""
import dataclasses
import json
import uuid

import pytest

from shared import events
from shared.contracts.jobs.view import SHARED_LINE, JobView, version
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


# --- waiting lines: queue_position counts within the job's own line ----------------------------------

A, B = "A/a.safetensors", "B/b.safetensors"


def waiting_doc(job_id, created_at):
    return doc(job_id, "pending", replica=None, created_at=created_at)


def reserved(job_id, created_at):
    return doc(job_id, "pending", 1, replica="gpu-a", created_at=created_at)


def test_each_job_counts_its_place_in_its_own_line(view):
    a1, b1, a2, shared, a3 = (str(uuid.uuid4()) for _ in range(5))
    for job_id, line, at in ((a1, A, 1.0), (b1, B, 2.0), (a2, A, 3.0), (shared, SHARED_LINE, 4.0), (a3, A, 5.0)):
        assert view.put(waiting_doc(job_id, at), line)
    assert view.ranks([a1, b1, a2, shared, a3]) == {a1: 0, b1: 0, a2: 1, shared: 0, a3: 2}
    assert view.places([a2, b1]) == {a2: (A, 1), b1: (B, 0)}
    stored, rank = view.lookup(a3)
    assert stored["id"] == a3 and rank == 2
    lookup = JobLookup(FakeRpc(jobs=()), view)    # what the API answers
    assert lookup.get(a3)["queue_position"] == 2
    assert [d["queue_position"] for d in lookup.with_positions([stored, view.get(b1)])] == [2, 0]

    assert view.put(reserved(a1, 1.0), A)    # a replica reserved A's first job: only A's line moved
    assert view.ranks([a2, a3, b1, shared, a1]) == {a2: 0, a3: 1, b1: 0, shared: 0, a1: None}
    assert view.put(reserved(b1, 2.0), B)
    assert view.line_names() == [SHARED_LINE, A], "an emptied checkpoint line leaves the set of lines"


def test_a_place_is_read_in_one_round_trip(view):
    job_id = str(uuid.uuid4())
    view.put(waiting_doc(job_id, 1.0), B)
    view.lookup(job_id)   # (loads the script)
    sent = []
    real = view.client.execute_command
    view.client.execute_command = lambda *args, **kwargs: sent.append(args[0]) or real(*args, **kwargs)
    assert view.lookup(job_id)[1] == 0
    assert view.ranks([job_id, str(uuid.uuid4())])[job_id] == 0
    assert sent == ["EVALSHA", "EVALSHA"]


def test_the_gateways_read_through_leaves_the_lines_alone_and_still_finds_the_place(view):
    early, late = str(uuid.uuid4()), str(uuid.uuid4())
    view.put(waiting_doc(early, 1.0), A)
    view.put(waiting_doc(late, 2.0), A)
    view.client.delete(view.key(late))            # its document expired while it waited
    assert view.put(waiting_doc(late, 2.0))       # the gateway reads it through: it knows no line
    assert view.client.hget(view.key(late), "line") is None
    assert view.lookup(late)[1] == 1, "found in the line it waits in"
    assert view.places([late]) == {late: (A, 1)}


def test_waiting_lines_from_before_per_checkpoint_lines_read_as_the_shared_line(view):
    """An upgrade: every waiting job is in `<prefix>:queue` and the hashes name no line."""
    old, older = str(uuid.uuid4()), str(uuid.uuid4())
    for job_id, at in ((older, 1.0), (old, 2.0)):
        view.client.hset(view.key(job_id), mapping={"v": version(waiting_doc(job_id, at)),
                                                    "doc": json.dumps(waiting_doc(job_id, at))})
        view.client.zadd(f"{view.prefix}:queue", {job_id: at})
    assert view.lookup(old)[1] == 1 and view.ranks([older]) == {older: 0}
    assert set(view.waiting_ids()) == {old, older}
    # the new jobs service reserves the older one in A's line: it leaves the shared line it was in
    view.put(reserved(older, 1.0), A)
    assert view.ranks([old, older]) == {old: 0, older: None}
    assert view.client.zscore(f"{view.prefix}:queue", older) is None


def test_a_job_whose_line_changed_leaves_the_old_one(view):
    """GAZE_SCHEDULING switched from fcfs to checkpoint while jobs waited."""
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    view.put(waiting_doc(first, 1.0), SHARED_LINE)
    view.put(waiting_doc(second, 2.0), SHARED_LINE)
    view.put(reserved(first, 1.0), A)
    assert view.ranks([second]) == {second: 0}
    assert view.client.zcard(view.line_key(SHARED_LINE)) == 1 and view.client.zcard(view.line_key(A)) == 0


def test_reconciliation_reads_and_cleans_every_line(view):
    ids = [str(uuid.uuid4()) for _ in range(4)]
    for job_id, line, at in zip(ids, (A, SHARED_LINE, B, A), (4.0, 3.0, 1.0, 2.0)):
        view.put(waiting_doc(job_id, at), line)
    assert view.waiting_ids() == [ids[2], ids[3], ids[1], ids[0]], "first in line first, over all lines"
    assert view.waiting_ids(limit=2) == [ids[2], ids[3]]
    view.forget_waiting([ids[2], ids[0], ids[1], str(uuid.uuid4())])
    assert view.waiting_ids() == [ids[3]]
    assert view.line_names() == [SHARED_LINE, A], "B's line emptied: out of the set"
    view.forget_waiting([str(uuid.uuid4()) for _ in range(2500)] + [ids[3]])   # more than Lua's unpack takes at once
    assert view.waiting_ids() == [] and view.line_names() == [SHARED_LINE]


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


@pytest.fixture
def jobs_config(settings, request):
    """The jobs service's config; a test may parametrize it (indirect) with its GAZE_SCHEDULING."""
    return dataclasses.replace(settings, scheduling=getattr(request, "param", settings.scheduling)).nameko_config(
        max_workers=1)


def test_jobs_service_counts_queue_positions_within_each_checkpoints_line(jobs, service_view):
    first_a, second_a = jobs.create(make_spec(checkpoint=A), 2)
    [only_b] = jobs.create(make_spec(checkpoint=B), 1)
    [third_a] = jobs.create(make_spec(checkpoint=A), 1)
    assert service_view.ranks([first_a, second_a, only_b, third_a]) == {first_a: 0, second_a: 1, only_b: 0, third_a: 2}
    assert service_view.places([only_b]) == {only_b: (B, 0)}

    assert jobs.claim(first_a, REPLICA, False)["run"] is True     # A's line moves up; B's does not move
    assert service_view.ranks([second_a, third_a, only_b, first_a]) == {second_a: 0, third_a: 1, only_b: 0,
                                                                        first_a: None}


@pytest.mark.parametrize("jobs_config", ["fcfs"], indirect=True)
def test_jobs_service_without_checkpoint_scheduling_keeps_one_line(jobs, service_view):
    [a] = jobs.create(make_spec(checkpoint=A), 1)
    [b] = jobs.create(make_spec(checkpoint=B), 1)
    assert service_view.places([a, b]) == {a: (SHARED_LINE, 0), b: (SHARED_LINE, 1)}
