#!/usr/bin/env python3
"""Scaling with generator replicas (issue 5, benchmark 1): throughput and efficiency for R replicas.

    .venv/bin/python bench/scaling.py [--replicas 1 2 4 8] [--jobs 500] [--gpu-seconds 0.2] [--markdown FILE]
    .venv/bin/python bench/scaling.py --replicas 4 8 --rounds 3 --peer celery    # with the Celery peer

With --peer celery (pip install -e '.[bench]'), each round also runs the same jobs through a plain Celery
pool of R workers (bench/celery_peer.py), GAZE and Celery alternating which goes first, and the medians
over the rounds are compared.

For each R: an isolated stack (own database, vhost, port; see bench/stack.py) whose R generator
processes run the `simulated` backend, which blocks its thread for exactly T = --gpu-seconds per job, as
a CUDA call would, then draws a 64×64 preview. Once all R replicas have reported, N jobs are submitted
through the HTTP API (POSTs of 20), and the run ends when the jobs service has recorded every job
finished (after a warm-up of 2R jobs, not counted). Makespan = first POST sent → the last job's finished_at (the jobs service's own clock, the
same machine). Throughput = N / makespan; ideal = R / T; efficiency = throughput / ideal.

Also reported per R: jobs per replica (the queue's fairness), and the mean gap between one job's end and
the next one's start on the same replica, from the jobs' own timestamps (started_at, finished_at).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.stack import GAZE, Proc, Stack, log, machine_description, publish  # noqa: E402


def run(replicas: int, jobs: int, gpu_seconds: float) -> dict:
    stack = Stack(Path(tempfile.mkdtemp(prefix=f"gaze-scaling-{replicas}-")), presets=1)
    try:
        stack.start()
        for n in range(replicas):
            env = dict(stack.env, GAZE_BACKEND="simulated", GAZE_SIMULATED_GPU_SECONDS=str(gpu_seconds),
                       GAZE_REPLICA_NAME=f"bench-gpu-{n}")
            stack.procs[f"generator-{n}"] = Proc.start(f"generator-{n}", [GAZE, "service", "generator"], env,
                                                       stack.workdir)
        stack.wait_for_replicas(replicas)
        # warm-up, not counted: the first request of a fresh stack opens connections and reply queues
        stack.wait_finished(stack.submit(2 * replicas, width=64, height=64), timeout=60)
        log(f"R={replicas}: submitting {jobs} jobs")
        first_post = time.time()
        ids = stack.submit(jobs, width=64, height=64)
        submitted = time.time()
        rows = stack.wait_finished(ids, timeout=60 + 3 * jobs * gpu_seconds / replicas)
    finally:
        stack.stop()
    done = [r for r in rows if r["status"] == "done"]
    makespan = max(r["finished_at"] for r in rows) - first_post
    throughput = len(ids) / makespan
    per_replica = defaultdict(list)
    for r in done:
        per_replica[r["replica"]].append(r)
    gaps = []
    for runs in per_replica.values():
        runs.sort(key=lambda r: r["started_at"])
        gaps += [b["started_at"] - (a["started_at"] + a["generation_seconds"]) for a, b in zip(runs, runs[1:])]
    first_start = min(r["started_at"] for r in done)
    busy = sum(r["generation_seconds"] for r in done)
    return {"first_start_ms": (first_start - first_post) * 1000,
            "tail_ms": (max(r["finished_at"] for r in rows)
                        - max(r["started_at"] + r["generation_seconds"] for r in done)) * 1000,
            "busy": busy / (replicas * makespan),
            "submit_seconds": submitted - first_post,
            "replicas": replicas, "jobs": len(ids), "done": len(done), "makespan": makespan,
            "throughput": throughput, "ideal": replicas / gpu_seconds,
            "efficiency": throughput / (replicas / gpu_seconds),
            "per_replica": sorted(len(v) for v in per_replica.values()),
            "gap_ms_p50": statistics.median(gaps) * 1000 if gaps else 0.0,
            "gap_ms_mean": statistics.mean(gaps) * 1000 if gaps else 0.0}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--gpu-seconds", type=float, default=0.2)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--peer", choices=["celery"], help="also run the Celery peer in every round")
    parser.add_argument("--markdown")
    args = parser.parse_args()
    results, peer_lines = [], []
    for replicas in args.replicas:
        gaze_runs, peer_runs = [], []
        for n in range(args.rounds):
            ways = ["gaze", "peer"] if args.peer else ["gaze"]
            for way in (ways if n % 2 == 0 else ways[::-1]):
                if way == "gaze":
                    gaze_runs.append(run(replicas, args.jobs, args.gpu_seconds))
                    log(f"R={replicas} round {n + 1}: GAZE {gaze_runs[-1]['efficiency']:.3f}")
                else:
                    from bench.celery_peer import run as run_celery

                    peer_runs.append(run_celery(replicas, args.jobs, args.gpu_seconds))
                    log(f"R={replicas} round {n + 1}: Celery {peer_runs[-1]['efficiency']:.3f}")
        gaze_runs.sort(key=lambda r: r["efficiency"])
        results.append(gaze_runs[len(gaze_runs) // 2])      # the median round
        if peer_runs:
            gaze_eff = [r["efficiency"] for r in gaze_runs]
            peer_eff = sorted(r["efficiency"] for r in peer_runs)
            peer_lines.append(f"| {replicas} | {', '.join(f'{e:.3f}' for e in gaze_eff)} | "
                              f"**{statistics.median(gaze_eff):.3f}** | {', '.join(f'{e:.3f}' for e in peer_eff)} | "
                              f"**{statistics.median(peer_eff):.3f}** |")
    machine = machine_description()
    lines = [f"Machine: {machine['nproc']} cores ({machine['cpu_model']}), {machine['memory_gib']} GiB,"
             f" RabbitMQ {machine['rabbitmq']}, PostgreSQL {machine['postgresql']}; load average at start"
             f" {machine['loadavg_at_start'][0]:.2f}", "",
             f"T = {args.gpu_seconds * 1000:.0f} ms simulated GPU time per job, {args.jobs} jobs per run.", "",
             "| R | done | makespan | throughput | ideal R/T | efficiency | jobs per replica | gap p50 / mean |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['replicas']} | {r['done']}/{r['jobs']} | {r['makespan']:.2f} s | {r['throughput']:.2f} jobs/s"
                     f" | {r['ideal']:.1f} jobs/s | **{r['efficiency']:.3f}** | {min(r['per_replica'])}–{max(r['per_replica'])}"
                     f" | {r['gap_ms_p50']:.1f} / {r['gap_ms_mean']:.1f} ms |")
    lines += ["", "| R | first POST → first start | submitting took | last backend end → last `done` | GPUs busy |",
              "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['replicas']} | {r['first_start_ms']:.0f} ms | {r['submit_seconds']:.2f} s"
                     f" | {r['tail_ms']:.0f} ms | {r['busy']:.3f} |")
    if peer_lines:
        lines += ["", f"Against a plain Celery pool ({args.rounds} alternating rounds; efficiency of each round, "
                      "sorted, and the median; the tables above show GAZE's median round):", "",
                  "| R | GAZE rounds | GAZE median | Celery rounds | Celery median |", "|---|---|---|---|---|",
                  *peer_lines]
    publish("\n".join(lines), args.markdown)


if __name__ == "__main__":
    main()
