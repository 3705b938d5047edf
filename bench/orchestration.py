#!/usr/bin/env python3
"""Orchestration overhead per job at light load (issue 5, benchmark 2), against a running stack.

    .venv/bin/python bench/orchestration.py [--jobs 200] [--markdown FILE]

Starts its own isolated stack (bench/stack.py) with one generator on the preview backend.

One job at a time. For each: t0 = just before the client sends the POST (loopback, so within a fraction
of a millisecond of the gateway accepting it); the job's own timestamps then say when the jobs service
wrote it (created_at), when a generator claimed it (started_at) and when the jobs service recorded
`done` (finished_at); result.generation_seconds is the backend's own time. Overhead = finished_at − t0 −
generation_seconds. Everything runs on one machine, so all clocks are the same clock. Polling speed does
not enter: the times are the server's own.

Also measured: how far the Redis read model trails the jobs service. For each job, the read model's
write time of the `done` document minus finished_at (the start of the jobs service's transaction that
recorded `done`).
"""
import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.stack import GAZE, Proc, Stack, machine_description, percentile, publish  # noqa: E402
from shared.contracts.jobs.view import JobView  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="example_01")
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--body", default='{"width": 64, "height": 64}',
                        help="JSON body of each POST (small images: the backend's time is subtracted anyway)")
    parser.add_argument("--gap", type=float, default=0.05, help="seconds between jobs (light load)")
    parser.add_argument("--backend", default="preview", choices=["preview", "simulated"],
                        help="preview: a small CPU picture (~10 ms); simulated: holds the GPU --gpu-seconds per job")
    parser.add_argument("--gpu-seconds", type=float, default=0.2)
    parser.add_argument("--json", help="write the raw per-job numbers here")
    parser.add_argument("--markdown", help="write the table here")
    args = parser.parse_args()
    stack = Stack(Path(tempfile.mkdtemp(prefix="gaze-orchestration-")), presets=1)
    try:
        stack.start()
        env = dict(stack.env, GAZE_BACKEND=args.backend, GAZE_SIMULATED_GPU_SECONDS=str(args.gpu_seconds))
        stack.procs["generator"] = Proc.start("generator", [GAZE, "service", "generator"], env, stack.workdir)
        stack.wait_for_replicas(1)
        view = JobView(stack.env.get("GAZE_REDIS_URL", "redis://127.0.0.1:6379/0"), stack.env["GAZE_REDIS_PREFIX"])
        rows = measure(args, stack.url, stack.key, view)
    finally:
        stack.stop()
    machine = machine_description()
    lines = [f"Machine: {machine['nproc']} cores ({machine['cpu_model']}), load average at start "
             f"{machine['loadavg_at_start'][0]:.2f}; {len(rows)} jobs one at a time, body {args.body}, backend "
             f"{args.backend}" + (f" ({args.gpu_seconds * 1000:.0f} ms per job)" if args.backend == "simulated" else ""),
             "",
             "| | p50 | p99 | max |", "|---|---|---|---|"]
    for name, label in (("overhead", "**overhead** (POST → `done` recorded, minus backend)"),
                        ("accept_to_created", "POST sent → job row written"),
                        ("created_to_started", "row written → GPU started (`job_started` recorded)"),
                        ("started_to_done_minus_backend", "started → `done` recorded, minus backend"),
                        ("backend", "backend's own time"),
                        ("read_model_lag", "read model trails the jobs service (`done`)")):
        values = [row[name] * 1000 for row in rows]
        lines.append(f"| {label} | {statistics.median(values):.2f} ms | {percentile(values, 99):.2f} ms"
                     f" | {max(values):.2f} ms |")
    publish("\n".join(lines), args.markdown)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(rows, out)


def measure(args, url, key, view):
    session = requests.Session()
    session.headers.update({"X-API-Key": key, "Content-Type": "application/json"})
    rows = []
    for i in range(args.jobs + 5):
        t0 = time.time()
        response = session.post(f"{url}/api/v1/generate/{args.preset}", data=args.body)
        response.raise_for_status()
        job_id = response.json()["jobs"][0]["job_id"]
        while True:
            job = session.get(f"{url}/api/v1/job/{job_id}").json()
            if job["status"] in ("done", "failed"):
                break
            time.sleep(0.005)
        assert job["status"] == "done", job
        if i >= 5:   # the first few warm up connections, pools and caches
            backend = job["result"]["generation_seconds"]
            rows.append({
                "accept_to_created": job["created_at"] - t0,
                "created_to_started": job["started_at"] - job["created_at"],
                "started_to_done_minus_backend": job["finished_at"] - job["started_at"] - backend,
                "backend": backend,
                "overhead": job["finished_at"] - t0 - backend,
                "read_model_lag": view.written_at(job_id) - job["finished_at"],
            })
        time.sleep(args.gap)
    return rows


if __name__ == "__main__":
    main()
