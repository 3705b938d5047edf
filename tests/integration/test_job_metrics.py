"""jobs.counts_by_status and jobs.metrics (what the gateway's /metrics reads) against the real PostgreSQL,
through a real nameko container and RPC; durations recorded from the generator's events."""
import pytest
from nameko.standalone.rpc import ServiceRpcProxy

from services.jobs.service import JobsService
from services.jobs.store import DURATION_BUCKETS
from shared import events
from tests.helpers import completed, failed, make_spec, status_is, wait_until


@pytest.fixture(autouse=True)
def clean_metrics(clean_jobs):
    clean_jobs.execute("TRUNCATE jobs.duration_buckets, jobs.duration_totals, jobs.replicas")
    return clean_jobs


def set_times(db, job_id, created_ago, started_ago=None, status="processing"):
    """Backdate a job: created `created_ago` seconds ago, started `started_ago` seconds ago (or never)."""
    db.execute(
        "UPDATE jobs.jobs SET status = %s, created_at = now() - make_interval(secs => %s),"
        " started_at = now() - make_interval(secs => %s) WHERE id = %s",
        (status, created_ago, started_ago, job_id))


def buckets(histogram):
    return {le: count for le, count in histogram["buckets"]}


def test_counts_by_status_is_every_status_with_zeros(jobs, clean_metrics):
    assert jobs.counts_by_status() == {"pending": 0, "processing": 0, "done": 0, "failed": 0, "cancelled": 0}
    ids = jobs.create(make_spec(), 6)
    for job_id, status in zip(ids, ["processing", "processing", "done", "failed", "pending", "pending"]):
        clean_metrics.execute("UPDATE jobs.jobs SET status = %s WHERE id = %s", (status, job_id))
    assert jobs.counts_by_status() == {"pending": 2, "processing": 2, "done": 1, "failed": 1, "cancelled": 0}


def test_metrics_start_empty_with_every_series(jobs):
    data = jobs.metrics()
    assert data["jobs_by_status"] == {"pending": 0, "processing": 0, "done": 0, "failed": 0, "cancelled": 0}
    assert data["replicas"] == []
    for metric in ("queue_wait", "generation"):
        for outcome in ("done", "failed"):
            histogram = data["durations"][metric][outcome]
            assert histogram["count"] == 0 and histogram["sum"] == 0
            assert [le for le, _ in histogram["buckets"]] == list(DURATION_BUCKETS)
            assert all(count == 0 for _, count in histogram["buckets"])


def test_finished_jobs_are_observed_once_in_cumulative_buckets(jobs, dispatch, clean_metrics):
    db = clean_metrics
    fast, slow, broken, never_started, marker = jobs.create(make_spec(), 5)
    set_times(db, fast, created_ago=20, started_ago=1.5)    # waited 18.5 s, generated 1.5 s (+ test time)
    set_times(db, slow, created_ago=100, started_ago=45)    # waited 55 s, generated 45 s (+ test time)
    set_times(db, broken, created_ago=1, started_ago=0.5)   # waited 0.5 s, failed after 0.5 s
    set_times(db, never_started, created_ago=5, status="pending")

    dispatch(events.JOB_COMPLETED, completed(fast))
    dispatch(events.JOB_COMPLETED, completed(slow))
    dispatch(events.JOB_COMPLETED, completed(fast))         # a redelivered duplicate: not counted again
    dispatch(events.JOB_FAILED, failed(broken))
    dispatch(events.JOB_FAILED, failed(never_started))      # failed before any run: no durations
    dispatch(events.JOB_FAILED, failed(broken))             # duplicate
    dispatch(events.JOB_COMPLETED, completed(marker))       # markers: everything before them was handled
    dispatch(events.JOB_FAILED, failed(marker))
    wait_until(status_is(jobs, marker, "done"), what="marker done")
    wait_until(lambda: db.execute("SELECT count(*) AS n FROM jobs.jobs WHERE status = 'failed'").fetchone()["n"] == 2,
               what="failures applied")

    data = jobs.metrics()
    assert data["jobs_by_status"] == {"pending": 0, "processing": 0, "done": 3, "failed": 2, "cancelled": 0}
    wait = data["durations"]["queue_wait"]
    gen = data["durations"]["generation"]

    # done: fast, slow and the marker (created just now, never started: no durations) -> 2 observations
    assert wait["done"]["count"] == 2 and gen["done"]["count"] == 2
    assert wait["done"]["sum"] == pytest.approx(73.5)   # set by the test: exact
    assert gen["done"]["sum"] == pytest.approx(47.5, abs=1.5)
    w, g = buckets(wait["done"]), buckets(gen["done"])
    assert (w[10], w[30], w[60], w[3600]) == (0, 1, 2, 2)
    assert (g[1], g[2.5], g[30], g[60]) == (0, 1, 1, 2)
    assert all(earlier <= later for earlier, later in zip(w.values(), list(w.values())[1:])), "cumulative"

    # failed: only `broken` had run
    assert wait["failed"]["count"] == 1 and gen["failed"]["count"] == 1
    assert buckets(wait["failed"])[0.25] == 0 and buckets(wait["failed"])[1] == 1
    assert buckets(gen["failed"])[1] == 1


def test_metrics_carry_the_replicas(jobs, dispatch):
    dispatch(events.GENERATOR_STATUS, events.GeneratorStatus(replica="gpu-1", backend="preview", healthy=True,
                                                             detail="ok", checkpoints=None))
    replicas = wait_until(lambda: jobs.metrics()["replicas"], what="replica recorded")
    assert [(r["replica"], r["healthy"]) for r in replicas] == [("gpu-1", True)]
    assert replicas[0]["age_seconds"] < 30


def test_concurrent_finishes_are_all_counted(settings, container_factory, clean_metrics, work_queue, dispatch):
    """Ten workers finishing jobs at once all bump the same counter rows: none is lost, none deadlocks."""
    container = container_factory(JobsService, settings.nameko_config(max_workers=10))
    container.start()
    with ServiceRpcProxy("jobs", {"AMQP_URI": settings.amqp_uri, "serializer": "json"}, timeout=10) as jobs:
        ids = jobs.create(make_spec(), 20) + jobs.create(make_spec(), 20)
        for job_id in ids:
            set_times(clean_metrics, job_id, created_ago=3, started_ago=1)
        for job_id in ids:
            dispatch(events.JOB_COMPLETED, completed(job_id))
        wait_until(lambda: jobs.counts_by_status()["done"] == 40, timeout=30, what="40 jobs done")
        data = jobs.metrics()["durations"]
    assert data["queue_wait"]["done"]["count"] == 40
    assert buckets(data["queue_wait"]["done"])[2.5] == 40 and buckets(data["queue_wait"]["done"])[1] == 0
    assert data["generation"]["done"]["count"] == 40
