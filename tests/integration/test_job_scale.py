"""Costs that do not grow with jobs.jobs (issue 13), against the real PostgreSQL: the job counts /metrics
reads are kept by triggers (migration 0011) and equal a GROUP BY after any mix of changes, concurrent
ones included; the library's random fallback cover is one finished image per preset, varies, and is
found through an index; the queries a page, a scrape or a sweep runs read jobs.jobs through indexes."""
import threading
import time
import uuid

import pytest

from services.jobs.store import JobRepository
from shared.job_states import STATES
from tests.helpers import make_spec


@pytest.fixture
def store(pool, clean_jobs):
    return JobRepository(pool)


def group_by(db) -> dict:
    counts = dict.fromkeys(STATES, 0)
    counts.update({row["status"]: row["n"] for row in
                   db.execute("SELECT status, count(*) AS n FROM jobs.jobs GROUP BY status").fetchall()})
    return counts


def new_jobs(store, count, preset="example_01", owner=None) -> list[str]:
    spec = make_spec(preset_slug=preset)
    rows, _ = store.create([{"id": str(uuid.uuid4()), "preset_slug": preset, "label": "scale", "spec": spec,
                             "seed": n} for n in range(count)], owner=owner)
    return [row["id"] for row in rows]


def finish(store, job_id, path=None):
    store.claim(job_id, "r1", False, 3)
    store.started(job_id, "r1", 1)
    return store.completed(job_id, "r1", {"relative_path": path or f"presets/x/{job_id}.png", "seed": 1})


def test_counts_follow_inserts_transitions_deletes_and_truncate(store, clean_jobs):
    db = clean_jobs
    assert store.counts_by_status() == group_by(db) == dict.fromkeys(STATES, 0)
    ids = new_jobs(store, 12)                                 # one statement, 12 rows
    assert store.counts_by_status() == group_by(db) == {**dict.fromkeys(STATES, 0), "pending": 12}
    store.claim(ids[0], "r1", False, 3)                       # an UPDATE that changes no status
    store.progress(ids[0], 1, 10)
    store.started(ids[0], "r1", 1)
    finish(store, ids[1])
    finish(store, ids[2])
    store.completed(ids[2], "r1", {"relative_path": "again.png"})   # a duplicate: nothing changes
    store.failed(ids[3], "r1", "broken")
    store.cancel(ids[4])
    store.cancel(ids[1])                                      # already done: nothing changes
    assert store.counts_by_status() == group_by(db) == {"pending": 7, "processing": 1, "done": 2, "failed": 1,
                                                        "cancelled": 1}
    # the stuck-job sweep fails several jobs of different statuses in one statement
    db.execute("UPDATE jobs.jobs SET attempts = 3, last_seen_at = now() - interval '1 hour' WHERE id = ANY(%s::uuid[])",
               ([ids[0], ids[5], ids[6]],))
    assert len(store.sweep_stuck(60, 3)) == 3
    assert store.counts_by_status() == group_by(db) == {"pending": 5, "processing": 0, "done": 2, "failed": 4,
                                                        "cancelled": 1}
    db.execute("UPDATE jobs.jobs SET status = 'done' WHERE status IN ('failed', 'pending')")   # many rows at once
    db.execute("DELETE FROM jobs.jobs WHERE id = ANY(%s::uuid[])", ([ids[1], ids[4], ids[7]],))
    assert store.counts_by_status() == group_by(db) == {**dict.fromkeys(STATES, 0), "done": 9}
    db.execute("TRUNCATE jobs.jobs")
    assert store.counts_by_status() == dict.fromkeys(STATES, 0)
    new_jobs(store, 2)
    assert store.counts_by_status() == group_by(db) == {**dict.fromkeys(STATES, 0), "pending": 2}


def test_counts_stay_exact_under_concurrent_transitions(store, clean_jobs):
    """Eight writers create jobs and race to start, finish, fail and cancel the same ones: counts equal a
    GROUP BY afterwards, and no writer hit a deadlock or any other error."""
    ids = new_jobs(store, 40)
    errors = []

    def writer(n):
        try:
            for round_ in range(5):
                mine = new_jobs(store, 3)
                for job_id in ids[n::4] + mine:
                    action = (n + round_) % 4
                    if action == 0:
                        finish(store, job_id)
                    elif action == 1:
                        store.failed(job_id, "r1", "broken")
                    elif action == 2:
                        store.cancel(job_id)
                    else:
                        store.claim(job_id, "r1", True, 3)
                        store.started(job_id, "r1", 1)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    counts = store.counts_by_status()
    assert counts == group_by(clean_jobs)
    assert sum(counts.values()) == 40 + 8 * 5 * 3


def test_random_image_per_preset_is_one_finished_image_each_and_varies(store, clean_jobs):
    db = clean_jobs
    many = {finish(store, job_id, f"presets/many/{n}.png")["id"]: f"presets/many/{n}.png"
            for n, job_id in enumerate(new_jobs(store, 30, preset="many"))}
    new_jobs(store, 5, preset="many")                                   # pending: never a cover
    for job_id in new_jobs(store, 3, preset="failures"):
        store.failed(job_id, "r1", "broken")
    # an image whose id is smaller than (almost) any random pivot: found by wrapping around
    wrap_id = "00000000-0000-4000-8000-000000000001"
    db.execute("INSERT INTO jobs.jobs (id, preset_slug, label, spec, seed, status, result)"
               " VALUES (%s, 'wrap', 'scale', '{}', 1, 'done', '{\"relative_path\": \"presets/wrap/1.png\"}')",
               (wrap_id,))
    drawn = set()
    for _ in range(40):
        picks = store.random_image_per_preset(["many", "failures", "wrap", "unknown"])
        assert set(picks) == {"many", "wrap"}
        assert picks["many"] in many.values()
        assert picks["wrap"] == "presets/wrap/1.png"
        drawn.add(picks["many"])
    assert len(drawn) >= 5, drawn      # 40 draws of 30 images: fewer than 5 different is all but impossible
    assert store.random_image_per_preset([]) == {}


# --- the plans at 20,000 rows ------------------------------------------------------------------

class _Explained:
    def fetchall(self):
        return []

    def fetchone(self):
        return None


class ExplainingPool:
    """Stands in for the pool of a JobRepository: each statement the repository sends is EXPLAINed on
    the real database instead of run, and its plan kept, so the test checks the repository's own SQL."""

    def __init__(self, pool):
        self.pool = pool
        self.plans = []

    def connection(self):
        outer = self

        class Connection:
            def __enter__(self):
                self.cm = outer.pool.connection()
                self.conn = self.cm.__enter__()
                return self

            def __exit__(self, *exc):
                self.conn.rollback()
                return self.cm.__exit__(*exc)

            def transaction(self):
                return self.conn.transaction()

            def execute(self, sql, params=None):
                row = self.conn.execute("EXPLAIN (FORMAT JSON) " + sql, params).fetchone()
                outer.plans.append(next(iter(row.values()))[0]["Plan"])
                return _Explained()

        return Connection()


def nodes(plan) -> list[dict]:
    found = [plan]
    for child in plan.get("Plans", ()):
        found += nodes(child)
    return found


def scans_of_jobs(plan) -> list[dict]:
    return [node for node in nodes(plan) if node.get("Relation Name") == "jobs" and "Scan" in node["Node Type"]]


@pytest.fixture
def few_thousand(clean_jobs):
    """20,000 jobs of two owners over 30 presets, mostly done, as bench/scale.py loads them, analyzed."""
    clean_jobs.execute(
        "INSERT INTO jobs.jobs (id, preset_slug, label, spec, seed, status, result, owner, created_at, finished_at)"
        " SELECT gen_random_uuid(), 'p' || (i % 30), 'scale', '{}', i,"
        "  CASE WHEN i % 50 = 3 THEN 'failed' ELSE 'done' END,"
        "  jsonb_build_object('relative_path', 'presets/p/' || i || '.png'),"
        "  CASE WHEN i % 10 = 0 THEN 'owner' ELSE 'another key' END,"
        "  now() - make_interval(secs => 20000 - i), now() - make_interval(secs => 20000 - i)"
        " FROM generate_series(1, 20000) AS i")
    clean_jobs.execute("ANALYZE jobs.jobs")
    yield clean_jobs
    # statistics of an empty table again, so that the planner of later tests is not misled by these rows
    clean_jobs.execute("TRUNCATE jobs.jobs")
    clean_jobs.execute("ANALYZE jobs.jobs")


def explain(pool, call) -> list[dict]:
    explaining = ExplainingPool(pool)
    call(JobRepository(explaining))
    return explaining.plans


# What a page reads: index scans only, in the order it returns them (no Sort of every matching row), and
# for a filter, an index whose condition holds the filtered column (not rows read only to be dropped).
PAGE_QUERIES = {
    "random_image_per_preset": (lambda s: s.random_image_per_preset([f"p{n}" for n in range(30)]),
                                "preset_slug"),
    "owned, status": (lambda s: s.owned("owner", 21, status="failed"), "status"),
    "owned, preset": (lambda s: s.owned("owner", 21, preset="p7"), "preset_slug"),
    "owned": (lambda s: s.owned("owner", 21), "owner"),
    "owned, a later page": (lambda s: s.owned("owner", 21, before=(int((time.time() - 10_000) * 1e6),
                                                                   str(uuid.uuid4()))), "created_at"),
    "images": (lambda s: s.images("p7", 60, 0), "preset_slug"),
    "recent": (lambda s: s.recent(100), None),
    "recent, status": (lambda s: s.recent(100, "failed"), "status"),
    "get_many": (lambda s: s.get_many([str(uuid.uuid4())]), "id"),
}
# What the timers run: index scans of their (partial) indexes, whose rows are the few that need work.
SWEEPS = {
    "undispatched": lambda s: s.undispatched(5),
    "unannounced": lambda s: s.unannounced(5),
    "sweep_stuck": lambda s: s.sweep_stuck(300, 3),
    "not_waiting": lambda s: s.not_waiting([str(uuid.uuid4())]),
}


def test_every_page_scrape_and_sweep_query_reads_jobs_through_an_index(pool, few_thousand):
    wrong = []
    for name, (call, column) in PAGE_QUERIES.items():
        (plan,) = explain(pool, call)
        scans = scans_of_jobs(plan)
        if not scans or any(node["Node Type"] == "Sort" for node in nodes(plan)):
            wrong.append((name, [node["Node Type"] for node in nodes(plan)]))
        for scan in scans:
            if scan["Node Type"] not in ("Index Scan", "Index Only Scan") or (
                    column and column not in (scan.get("Index Cond") or "")):
                wrong.append((name, scan["Node Type"], scan.get("Index Name"), scan.get("Index Cond")))
    for name, call in SWEEPS.items():
        (plan,) = explain(pool, call)
        scans = scans_of_jobs(plan)
        if not scans or any(scan["Node Type"] not in ("Index Scan", "Index Only Scan") for scan in scans):
            wrong.append((name, [node["Node Type"] for node in nodes(plan)]))
    (counts,) = explain(pool, lambda s: s.counts_by_status())
    if scans_of_jobs(counts):
        wrong.append(("counts_by_status", "reads jobs.jobs", scans_of_jobs(counts)))
    assert wrong == []
