#!/usr/bin/env python3
"""What the worker process costs a job (issue 10): the replica ↔ worker round trip, and a whole job.

    .venv/bin/python bench/worker_roundtrip.py [--pings 10000] [--jobs 2000]

In an eventlet process, as a replica: one WorkerSupervisor (services/generator/supervisor.py) and its
worker process. Pings: the replica sends ("ping", n) over its green socket and waits for the worker's
pong (what every message of a job costs one way and back). Jobs: `supervisor.run` of a 16×16 preview job
(hand-over, started, progress, the PNG back), one at a time, against the same backend called directly in
this process (`PreviewBackend().generate`): the difference is what the process boundary adds per job.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared.green import patch  # noqa: E402

patch()

from eventlet.queue import LightQueue  # noqa: E402

from services.generator import ipc  # noqa: E402
from services.generator.backends.preview import PreviewBackend  # noqa: E402
from services.generator.supervisor import WorkerSupervisor  # noqa: E402
from shared import config  # noqa: E402
from shared.schemas import GenerationSpec  # noqa: E402


def quantiles(values):
    ordered = sorted(values)
    return {q: ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] for q in (50, 99)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--pings", type=int, default=10000)
    parser.add_argument("--jobs", type=int, default=2000)
    args = parser.parse_args()
    supervisor = WorkerSupervisor(config.Settings(backend="preview"), "bench")
    supervisor.start()
    worker = supervisor.current
    pongs = LightQueue()
    on_message = supervisor._on_message

    def catch_pongs(incarnation, message):     # the watchdog's pings are rare; ours come back here
        if message[0] == "pong" and message[1] >= 10**9:
            pongs.put(time.perf_counter())
        else:
            on_message(incarnation, message)

    supervisor._on_message = catch_pongs
    trips = []
    for n in range(args.pings):
        sent = time.perf_counter()
        ipc.send(worker.sock, ("ping", 10**9 + n))
        trips.append(pongs.get() - sent)
    spec = GenerationSpec(preset_slug="bench", preset_name="bench", prompt="a lighthouse", negative="",
                          checkpoint="x", width=16, height=16, steps=2, cfg=6.0, sampler="euler", seed=1)
    through_worker, direct = [], []
    backend = PreviewBackend()
    for n in range(args.jobs):
        started = time.perf_counter()
        supervisor.run(f"job-{n}", spec, lambda v, m: None)
        through_worker.append(time.perf_counter() - started)
        started = time.perf_counter()
        backend.generate(spec)
        direct.append(time.perf_counter() - started)
    supervisor.stop()
    ping, job, alone = quantiles(trips), quantiles(through_worker), quantiles(direct)
    print(f"ping round trip replica ↔ worker ({args.pings}): p50 {ping[50] * 1e6:.0f} µs, p99 {ping[99] * 1e6:.0f} µs")
    print(f"a 16×16 preview job through the worker ({args.jobs}): p50 {job[50] * 1e3:.2f} ms, "
          f"p99 {job[99] * 1e3:.2f} ms; the backend called in-process: p50 {alone[50] * 1e3:.2f} ms; "
          f"the process boundary adds {(statistics.median(through_worker) - statistics.median(direct)) * 1e3:.2f} "
          f"ms p50 per job")


if __name__ == "__main__":
    main()
