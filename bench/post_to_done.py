#!/usr/bin/env python3
"""Time from POST /api/v1/generate to the job reading `done`, one job at a time, against a running stack.

    .venv/bin/python bench/post_to_done.py --url http://localhost:5782 --key gz_... [--jobs 30]

Reports, per job: wall time seen by the client (POST sent → a poll answers done; polls every 10 ms),
the generator's own backend time (result.generation_seconds), and the remainder (orchestration:
HTTP, RPC, database, queue, events, polling granularity).
"""
import argparse
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
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--body", default="{}", help="JSON body of each POST")
    args = parser.parse_args()
    session = requests.Session()
    session.headers.update({"X-API-Key": args.key, "Content-Type": "application/json"})
    wall, backend = [], []
    for _ in range(args.jobs + 2):
        started = time.perf_counter()
        job_id = session.post(f"{args.url}/api/v1/generate/{args.preset}", data=args.body).json()["jobs"][0]["job_id"]
        while True:
            job = session.get(f"{args.url}/api/v1/job/{job_id}").json()
            if job["status"] in ("done", "failed"):
                break
            time.sleep(0.01)
        elapsed = time.perf_counter() - started
        assert job["status"] == "done", job
        wall.append(elapsed)
        backend.append(job["result"]["generation_seconds"])
    wall, backend = wall[2:], backend[2:]   # the first two warm up connections and caches
    overhead = [w - b for w, b in zip(wall, backend)]
    for name, values in (("POST→done (client)", wall), ("backend time", backend), ("orchestration", overhead)):
        print(f"{name:22s} p50 {statistics.median(values) * 1000:7.1f} ms   p95 {percentile(values, 95) * 1000:7.1f} ms"
              f"   max {max(values) * 1000:7.1f} ms   (n={len(values)})")


if __name__ == "__main__":
    main()
