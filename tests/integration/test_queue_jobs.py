"""What the web UI's queue page asks of the jobs store, against PostgreSQL: the newest jobs of one status
(its filter, from an index), and batches told apart by the times the store gives a request's jobs."""
from __future__ import annotations

import uuid

from services.gateway.web.queue import in_batches
from services.jobs.service import _public
from services.jobs.store import JobRepository
from tests.helpers import make_spec


def create_batch(repo, count, preset="example_01"):
    jobs = [{"id": str(uuid.uuid4()), "preset_slug": preset, "label": f"job {i}", "spec": make_spec(seed=i),
             "seed": i} for i in range(count)]
    repo.create(jobs)
    return [job["id"] for job in jobs]


def test_recent_of_one_status_is_newest_first_and_only_that_status(pool, clean_jobs):
    repo = JobRepository(pool)
    ids = create_batch(repo, 6)
    clean_jobs.execute("UPDATE jobs.jobs SET status = 'failed', error = 'x' WHERE id = ANY(%s::uuid[])",
                       ([ids[1], ids[4]],))
    assert [row["id"] for row in repo.recent(10, "failed")] == [ids[4], ids[1]]
    assert [row["id"] for row in repo.recent(10, "pending")] == [ids[5], ids[3], ids[2], ids[0]]
    assert [row["id"] for row in repo.recent(1, "pending")] == [ids[5]]
    assert len(repo.recent(10)) == 6


def test_the_status_filter_reads_an_index(pool, clean_jobs):
    with pool.connection() as conn:
        conn.execute("SET enable_seqscan = off")   # a few rows: without this the planner may scan anyway
        conn.execute("SET enable_bitmapscan = off")   # nor a bitmap scan and a sort (after another test's ANALYZE)
        plan = conn.execute("EXPLAIN (FORMAT JSON) SELECT id FROM jobs.jobs WHERE status = 'failed'"
                            " ORDER BY created_at DESC LIMIT 100").fetchone()
        conn.execute("RESET enable_seqscan")
        conn.execute("RESET enable_bitmapscan")
    text = str(plan)
    assert "jobs_status_recent" in text and "Sort" not in text, text


def test_batches_made_by_the_store_are_shown_in_the_order_they_were_made(pool, clean_jobs):
    repo = JobRepository(pool)
    first, other, second = create_batch(repo, 3), create_batch(repo, 2, preset="second"), create_batch(repo, 20)
    newest_first = [_public(row) for row in repo.recent(100)]
    assert [job["id"] for job in newest_first][:2] == [second[-1], second[-2]]    # what the store answers
    assert [job["id"] for job in in_batches(newest_first)] == second + other + first
