#!/usr/bin/env python3
"""Orchestration overhead per job at light load (issue 5, benchmark 2), against a running stack.

    .venv/bin/python bench/orchestration.py --url http://localhost:5782 --key gz_... [--jobs 200]

One job at a time. For each: t0 = just before the client sends the POST (loopback, so within a fraction
of a millisecond of the gateway accepting it); the job's own timestamps then say when the jobs service
wrote it (created_at), when a generator claimed it (started_at) and when the jobs service recorded
`done` (finished_at); result.generation_seconds is the backend's own time. Overhead = finished_at − t0 −
generation_seconds. Everything runs on one machine, so all clocks are the same clock. Polling speed does
not enter: the times are the server's own.
"""
import argparse
import json
import statistics
import time

import requests


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://localhost:5782")
    parser.add_argument("--key", required=True)
    parser.add_argument("--preset", default="example_01")
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--body", default='{"width": 64, "height": 64}',
                        help="JSON body of each POST (small images: the backend's time is subtracted anyway)")
    parser.add_argument("--gap", type=float, default=0.05, help="seconds between jobs (light load)")
    parser.add_argument("--json", help="write the raw per-job numbers here")
    args = parser.parse_args()
    session = requests.Session()
    session.headers.update({"X-API-Key": args.key, "Content-Type": "application/json"})
    rows = []
    for i in range(args.jobs + 5):
        t0 = time.time()
        response = session.post(f"{args.url}/api/v1/generate/{args.preset}", data=args.body)
        response.raise_for_status()
        job_id = response.json()["jobs"][0]["job_id"]
        while True:
            job = session.get(f"{args.url}/api/v1/job/{job_id}").json()
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
            })
        time.sleep(args.gap)
    print(f"{len(rows)} jobs, body {args.body}")
    for name in ("overhead", "accept_to_created", "created_to_started", "started_to_done_minus_backend", "backend"):
        values = [row[name] * 1000 for row in rows]
        print(f"{name:32s} p50 {statistics.median(values):7.2f} ms   p99 {percentile(values, 99):7.2f} ms"
              f"   max {max(values):7.2f} ms")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(rows, out)


if __name__ == "__main__":
    main()
