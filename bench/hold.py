"""Polls while clients wait and streams stay open (issue 11): the gateway's poll rate
(GET /api/v1/job/<id>, by wrk) alone, with 500 clients holding `Prefer: wait=60` requests, and with 1,000
open server-sent event streams. Target: at least 0.8 x the rate alone in both.

The stack is the one `gaze up` runs (tests/stack.py: supervisord, the gateway's uvicorn workers), with
one generator replica on the scripted backend (tests/backends.py) running a job that takes far longer
than the benchmark: the waiters and the streams all follow that job, which stays `processing` (its
progress changes every few seconds, so the streams do carry events). The polls read a finished job.
The waiting and streaming clients run in a process of their own (aiohttp), re-sending each wait as soon
as it is answered; the report says how many were open while wrk measured.

    .venv/bin/python bench/hold.py [-d 15] [--waiters 500] [--streams 1000] [--markdown out.md]

Needs wrk (`make bench-tools`), PostgreSQL, RabbitMQ and Redis as for the e2e tests.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.gateway_load import WRK_MISSING, run_wrk  # noqa: E402
from bench.stack import machine_description, publish  # noqa: E402
from tests.stack import running_stack  # noqa: E402

TARGET = 0.8


# --- the clients that wait or stream (a process of their own) ------------------------------------------

async def _waiter(session, url, headers, counts, stop):
    while not stop.is_set():
        counts["open"] += 1
        try:
            async with session.get(url, headers=headers) as response:
                await response.read()
                counts["answered" if response.status == 200 else "errors"] += 1
        except Exception:  # noqa: BLE001 - a benchmark client counts failures, it does not stop on them
            counts["errors"] += 1
            await asyncio.sleep(0.5)
        finally:
            counts["open"] -= 1


async def _streamer(session, url, headers, counts, stop):
    try:
        async with session.get(url, headers=headers) as response:
            if response.status != 200:
                counts["errors"] += 1
                return
            counts["open"] += 1
            try:
                async for line in response.content:
                    if line.startswith(b"event:"):
                        counts["events"] += 1
                    if stop.is_set():
                        return
            finally:
                counts["open"] -= 1
    except Exception:  # noqa: BLE001
        counts["errors"] += 1


def hold_clients(kind, url, key, job_id, count, report, stop_event):
    """Run `count` waiters or streamers until `stop_event`; put their counts on `report` every second."""
    import aiohttp

    async def main():
        counts = {"open": 0, "answered": 0, "events": 0, "errors": 0}
        stop = asyncio.Event()
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            if kind == "wait":
                path, headers, client = f"/api/v1/job/{job_id}", {"X-API-Key": key, "Prefer": "wait=60"}, _waiter
            else:
                path, headers, client = f"/api/v1/job/{job_id}/events", {"X-API-Key": key}, _streamer
            tasks = [asyncio.ensure_future(client(session, url + path, headers, counts, stop)) for _ in range(count)]
            while not stop_event.is_set():
                report.put(dict(counts))
                await asyncio.sleep(1)
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())


class HeldClients:
    """`count` waiting or streaming clients in a child process; `open` is how many are held right now."""

    def __init__(self, kind, url, key, job_id, count):
        self.report, self.stop = multiprocessing.Queue(), multiprocessing.Event()
        self.process = multiprocessing.Process(target=hold_clients,
                                               args=(kind, url, key, job_id, count, self.report, self.stop))
        self.count, self.latest = count, {}

    def __enter__(self):
        self.process.start()
        deadline = time.monotonic() + 120
        while self.counts()["open"] < self.count:
            if time.monotonic() > deadline:
                raise SystemExit(f"only {self.latest} of {self.count} clients got through")
        return self

    def counts(self):
        while True:
            try:
                self.latest = self.report.get(timeout=2 if not self.latest else 0.01)
            except Exception:  # noqa: BLE001 - queue.Empty: nothing newer
                return self.latest

    def __exit__(self, *exc):
        self.stop.set()
        self.process.join(30)
        if self.process.is_alive():
            self.process.terminate()


# --- the benchmark -----------------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", "--duration", type=int, default=15, help="seconds per measured wrk run (15)")
    parser.add_argument("-c", "--connections", type=int, default=32, help="wrk connections (32)")
    parser.add_argument("-t", "--threads", type=int, default=2, help="wrk threads (2)")
    parser.add_argument("--timeout", type=int, default=2, help="wrk's request timeout in seconds (2)")
    parser.add_argument("--waiters", type=int, default=500)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--markdown", type=Path, help="also write the report to this file")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit(WRK_MISSING)

    with tempfile.TemporaryDirectory(prefix="gaze-hold-") as workdir, \
            running_stack(Path(workdir), generators=1, GAZE_BACKEND="tests.backends:ScriptedBackend") as stack:
        def submit(prompt):
            answer = stack.post("/api/v1/generate/example_01", json={"count": 1, "extra_positive": prompt,
                                                                     "width": 64, "height": 64})
            return answer.json()["jobs"][0]["job_id"]

        polled = submit("quick")
        stack.wait_job(polled)
        followed = submit("slow:3600")   # processing for the whole run: nobody's wait ends early
        poll_url = f"{stack.url}/api/v1/job/{polled}"

        def polls(label, clients=None):
            run_wrk(poll_url, args, 2, key=stack.key)   # warm-up, not counted
            result = run_wrk(poll_url, args, args.duration, key=stack.key)
            held = clients.counts() if clients else {}
            print(f"[bench] {label}: {result['rps']:,.0f} polls/s, errors {result['errors']},"
                  f" held {held}", file=sys.stderr, flush=True)
            return {"label": label, "rps": result["rps"], "p50": result["latency_ms"]["p50"],
                    "p99": result["latency_ms"]["p99"], "errors": result["errors"], "held": held}

        rows = [polls("polls alone")]
        with HeldClients("wait", stack.url, stack.key, followed, args.waiters) as waiters:
            rows.append(polls(f"polls + {args.waiters} waiting (Prefer: wait=60)", waiters))
        with HeldClients("stream", stack.url, stack.key, followed, args.streams) as streams:
            rows.append(polls(f"polls + {args.streams} open event streams", streams))
        stack.post(f"/api/v1/job/{followed}/cancel")

    base = rows[0]["rps"]
    m = machine_description()
    lines = ["## Polls while requests wait and streams stay open (bench/hold.py)", "",
             f"Machine: {m['nproc']} cores, {m['cpu_model']}, load average at start {m['loadavg_at_start'][0]:.2f}; `wrk -t {args.threads} -c {args.connections}"
             f" -d {args.duration}s` on GET /api/v1/job/<id> of a finished job; the gateway as `gaze up` runs it"
             " (2 uvicorn workers, the WSGI app on 8 threads each). Target: >= 0.8 x the rate alone.", "",
             "| scenario | polls/s | x alone | p50 ms | p99 ms | errors | held while measured |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        ratio = row["rps"] / base if base else float("nan")
        held = ", ".join(f"{k} {v:,}" for k, v in row["held"].items()) or "-"
        lines.append(f"| {row['label']} | {row['rps']:,.0f} | {ratio:.2f}"
                     f"{'' if row is rows[0] else (' ✓' if ratio >= TARGET else ' ✗')} | {row['p50']:.1f} |"
                     f" {row['p99']:.1f} | {row['errors']} | {held} |")
    publish("\n".join(lines), args.markdown)
    print(json.dumps(rows), file=sys.stderr)


if __name__ == "__main__":
    main()
