#!/usr/bin/env python3
"""What every page and every periodic query costs with a large library (issue 13: "Costs that grow with
the library"), on an isolated stack of its own (bench/stack.py: own database, vhost, port, Redis prefix).

    .venv/bin/python bench/scale.py --jobs 1000000 --presets 300 --runs 30 --markdown /tmp/scale.md

Starts the stack (gateway, presets and jobs services; no generator), loads `--jobs` finished jobs
(98 % done, 1.5 % failed, 0.5 % cancelled, all owned by the stack's API key, spread evenly over
`--presets` presets none of which has a cover, one a second back from now) straight into jobs.jobs with
INSERT ... SELECT generate_series (server side, in chunks), VACUUM ANALYZEs, then times:

* every page, through HTTP, `--runs` times each (p50 / p95 / max): the library `/`, a preset page,
  `/queue`, `GET /api/v1/jobs` (plain, `?status=pending` that matches nothing, `?preset=`),
  `GET /api/v1/job/<id>` of a loaded job (not in the read model: answered by the jobs service) and
  `/metrics` (whose sources are cached for 5 s: most scrapes reuse them);
* `jobs.metrics`, the RPC a scrape makes once per 5 s, called directly;
* every query the jobs service runs per request or on a timer, called directly through
  services/jobs/store.py's JobRepository on the stack's database (so the numbers are the SQL's own).

Everything it made is removed at the end (database dropped, vhost deleted, Redis keys under the
stack's prefix deleted). Run it from a checkout of another commit (with this file copied there and
PYTHONPATH set to that checkout) to measure that commit's code on the same data.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.stack import Stack, log, machine_description, percentile, publish  # noqa: E402

CHUNK = 100_000
OWNER = "default"          # the name `gaze init` gives the stack's API key
METRICS_TOKEN = uuid.uuid4().hex

LOAD = """
INSERT INTO jobs.jobs (id, preset_slug, label, spec, seed, status, error, result, attempts, replica, owner,
                       created_at, dispatched_at, started_at, finished_at, last_seen_at, started_attempt)
SELECT gen_random_uuid(), slug, slug || ' #' || i,
       jsonb_build_object('preset_slug', slug, 'prompt', 'a bench prompt of a realistic length, ' || slug,
                          'negative', 'lowres', 'checkpoint', 'Illustrious/model.safetensors', 'seed', i,
                          'width', 512, 'height', 512, 'steps', 20, 'cfg', 6, 'sampler', 'euler'),
       i, status,
       CASE WHEN status = 'failed' THEN 'the generator could not reach its image backend' END,
       CASE WHEN status = 'done' THEN jsonb_build_object(
           'image_url', '/static/uploads/presets/' || slug || '/gen_' || i || '.png',
           'relative_path', 'presets/' || slug || '/gen_' || i || '.png', 'seed', i, 'width', 512,
           'height', 512, 'generation_seconds', 1.5) END,
       1, 'bench-generator', %(owner)s,
       created, created, created + interval '1 second',
       created + interval '3 seconds', created + interval '1 second', 1
FROM (SELECT i, (%(slugs)s::text[])[1 + i %% %(presets)s] AS slug,
             CASE WHEN i %% 200 = 7 THEN 'cancelled' WHEN i %% 200 IN (3, 50, 99) THEN 'failed' ELSE 'done' END
                 AS status,
             now() - make_interval(secs => %(total)s::int - i) AS created
      FROM generate_series(%(first)s::int, %(last)s::int) AS i) AS generated
"""


def load(db_url, total, slugs):
    started = time.monotonic()
    with psycopg.connect(db_url, autocommit=True) as conn:
        for first in range(1, total + 1, CHUNK):
            last = min(total, first + CHUNK - 1)
            conn.execute(LOAD, {"owner": OWNER, "slugs": slugs, "presets": len(slugs), "total": total,
                                "first": first, "last": last})
            log(f"loaded {last:,} / {total:,} jobs ({time.monotonic() - started:.0f} s)")
        conn.execute("VACUUM ANALYZE jobs.jobs")
        size = conn.execute("SELECT pg_size_pretty(pg_total_relation_size('jobs.jobs'))").fetchone()[0]
    return time.monotonic() - started, size


def summary(times) -> dict:
    ms = [t * 1000 for t in times]
    return {"p50": percentile(ms, 50), "p95": percentile(ms, 95), "max": max(ms), "n": len(ms)}


def timed(call, runs, warmup=2):
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return summary(times)


def web_session(stack) -> requests.Session:
    """A logged-in web UI session (the admin password the stack was started with)."""
    session = requests.Session()
    page = session.get(f"{stack.url}/login", timeout=30).text
    token = re.search(r'name="login_token" value="([^"]+)"', page).group(1)
    answer = session.post(f"{stack.url}/login", timeout=30, allow_redirects=False,
                          data={"login_token": token, "password": stack.env["GAZE_ADMIN_PASSWORD"], "next": "/"})
    if answer.status_code not in (302, 303):
        raise SystemExit(f"login failed: {answer.status_code}")
    return session


def getter(session, url, **headers):
    def call():
        answer = session.get(url, headers=headers, timeout=60)
        if answer.status_code != 200:
            raise SystemExit(f"GET {url}: {answer.status_code} {answer.text[:200]}")
        return answer
    return call


def pages(stack, slugs, job_id, runs) -> dict:
    web = web_session(stack)
    api = stack.session
    base = stack.url
    library = getter(web, base + "/")()
    covers = library.text.count(f"/presets/{slugs[0]}/")  # a sanity check: the page lists the presets
    if covers == 0:
        raise SystemExit("the library page does not list the bench presets")
    cases = {
        "library `/`": getter(web, base + "/"),
        f"preset page `/presets/{slugs[1]}`": getter(web, f"{base}/presets/{slugs[1]}"),
        "queue `/queue`": getter(web, base + "/queue"),
        "`GET /api/v1/jobs`": getter(api, base + "/api/v1/jobs"),
        "`GET /api/v1/jobs?status=pending` (none)": getter(api, base + "/api/v1/jobs?status=pending"),
        f"`GET /api/v1/jobs?preset={slugs[2]}`": getter(api, f"{base}/api/v1/jobs?preset={slugs[2]}"),
        "`GET /api/v1/job/<id>`": getter(api, f"{base}/api/v1/job/{job_id}"),
        "`/metrics` (sources cached 5 s)": getter(requests.Session(), base + "/metrics",
                                                  Authorization=f"Bearer {METRICS_TOKEN}"),
    }
    return {name: timed(call, runs) for name, call in cases.items()}


def metrics_rpc(stack, runs) -> dict:
    from nameko.standalone.rpc import ClusterRpcProxy

    with ClusterRpcProxy({"AMQP_URI": stack.env["GAZE_AMQP_URI"], "serializer": "json"}, timeout=60) as proxy:
        return {"`jobs.metrics` RPC (a scrape's source, once per 5 s)": timed(lambda: proxy.jobs.metrics(), runs)}


def queries(db_url, slugs, job_ids, runs) -> dict:
    """Each JobRepository query a page, a scrape or a timer runs, on the loaded table."""
    from services.jobs.store import JobRepository
    from shared.db import open_pool

    pool = open_pool(db_url, max_size=2, name="bench-scale")
    store = JobRepository(pool)
    some = job_ids[:20]
    cases = {
        "random_image_per_preset (300 presets, library)": lambda: store.random_image_per_preset(slugs),
        "images (a preset's gallery, first page)": lambda: store.images(slugs[1], 60, 0),
        "recent (queue page, 100)": lambda: store.recent(100),
        "owned (jobs list, 21)": lambda: store.owned(OWNER, 21),
        "owned, status=pending (none)": lambda: store.owned(OWNER, 21, status="pending"),
        "owned, status=failed": lambda: store.owned(OWNER, 21, status="failed"),
        "owned, preset=": lambda: store.owned(OWNER, 21, preset=slugs[2]),
        "get (one job)": lambda: store.get(job_ids[0]),
        "get_many (20)": lambda: store.get_many(some),
        "counts_by_status (/metrics)": store.counts_by_status,
        "durations (/metrics)": store.durations,
        "replicas (/metrics, /readyz)": store.replicas,
        "undispatched (outbox sweep)": lambda: store.undispatched(older_than_seconds=5),
        "unannounced (announcement sweep)": lambda: store.unannounced(older_than_seconds=5),
        "sweep_stuck (stuck-job sweep)": lambda: store.sweep_stuck(300, 3),
        "not_waiting (tidy_waiting_line, 20 ids)": lambda: store.not_waiting(some),
    }
    try:
        return {name: timed(call, runs) for name, call in cases.items()}
    finally:
        pool.close()


def table(title, rows) -> str:
    lines = [f"| {title} | p50 ms | p95 ms | max ms | runs |", "|---|---:|---:|---:|---:|"]
    for name, s in rows.items():
        lines.append(f"| {name} | {s['p50']:.1f} | {s['p95']:.1f} | {s['max']:.1f} | {s['n']} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--presets", type=int, default=300)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--markdown", help="also write the report to this file")
    args = parser.parse_args()
    os.environ["GAZE_METRICS_TOKEN"] = METRICS_TOKEN     # the stack's /metrics wants it (if it wants any)
    machine = machine_description()
    stack = Stack(workdir=Path(tempfile.mkdtemp(prefix="gaze-bench-scale-")), presets=args.presets)
    try:
        log("starting the stack")
        stack.start()
        with psycopg.connect(stack.db_url, autocommit=True) as conn:
            slugs = [row[0] for row in conn.execute("SELECT slug FROM presets.presets ORDER BY slug")]
            commit = os.environ.get("BENCH_COMMIT", "")
        log(f"loading {args.jobs:,} finished jobs over {len(slugs)} presets")
        seconds, size = load(stack.db_url, args.jobs, slugs)
        with psycopg.connect(stack.db_url, autocommit=True) as conn:
            job_ids = [row[0] for row in conn.execute(
                "SELECT id::text FROM jobs.jobs WHERE status = 'done' ORDER BY created_at DESC LIMIT 20")]
        log("timing the pages")
        page_times = pages(stack, slugs, job_ids[0], args.runs)
        rpc_times = metrics_rpc(stack, args.runs)
        log("timing the queries")
        query_times = queries(stack.db_url, slugs, job_ids, args.runs)
    finally:
        stack.stop()
    report = "\n".join([
        f"{args.jobs:,} finished jobs over {len(slugs)} presets (none with a cover), loaded in {seconds:.0f} s;"
        f" jobs.jobs with its indexes: {size}. {commit}",
        f"Machine: {machine['nproc']} cores ({machine['cpu_model']}), PostgreSQL {machine['postgresql']},"
        f" load average at start {machine['loadavg_at_start'][0]:.1f}.",
        "",
        table("page (HTTP)", {**page_times, **rpc_times}),
        "",
        table("query (JobRepository, direct)", query_times),
        "",
        "Clean-up: " + "; ".join(stack.cleanup_notes) + ".",
    ])
    publish(report, args.markdown)


if __name__ == "__main__":
    main()
