#!/usr/bin/env python3
"""Scaling with generator replicas (issue 5, benchmark 1): throughput and efficiency for R replicas.

    .venv/bin/python bench/scaling.py [--replicas 1 2 4 8] [--jobs 500] [--gpu-seconds 0.2] [--markdown FILE]
    .venv/bin/python bench/scaling.py --replicas 4 8 --rounds 3 --peer celery    # with the Celery peer
    .venv/bin/python bench/scaling.py --replicas 16 32 --jobs-per-replica 20 --gpu-seconds 1 --idle-seconds 10

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

And what the machine was doing over the makespan (issue 16): CPU of each part, in cores, from /proc
(utime + stime of every process: the generators together with their worker processes; the jobs service;
the gateway; the system RabbitMQ's beam.smp; PostgreSQL's backends of the stack's database and its shared
background processes; `bench client` is this script, submitting and watching; `other` is everything else,
other work on the machine included (anyone's rabbitmqctl, other RabbitMQ nodes, other databases' backends);
`machine` all CPU time, kernel included), and the bench database's pg_stat_database counters over the same window
(commits, rows inserted and updated; this script's own watching adds about 10 commits a second).
The deepest queues of the stack's vhost over the same window, sampled every 0.5 s.
--idle-seconds S first measures the same for S seconds with the R replicas up and no jobs: what a farm
of R idle replicas costs by itself (status events, the scheduler's line asks).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.stack import (GAZE, CpuMeter, Proc, Stack, activity_delta, child_groups, database_activity, log,  # noqa: E402
                         machine_description, publish, rabbitmqctl, shared_server_classifier)

CPU_PARTS = ("generators", "jobs", "gateway", "presets", "rabbitmq", "postgres", "redis", "bench client", "other")
# not this stack's: anyone's rabbitmqctl, other RabbitMQ nodes, other databases' backends (other work on the machine)
OTHERS_ON_SHARED_SERVERS = ("rabbitmqctl", "rabbitmq (other nodes)", "postgres (other databases)")


def _cpu_meter(stack: Stack) -> CpuMeter:
    """A CpuMeter that names the stack's processes: every generator (and its worker process, same group)
    counts as `generators`."""
    groups = {proc.pgrp: "generators" if name.startswith("generator") else name for name, proc in stack.procs.items()}
    groups.update(dict.fromkeys(child_groups(proc.popen.pid for name, proc in stack.procs.items()
                                             if name.startswith("generator")), "generators"))
    groups[os.getpgrp()] = "bench client"
    return CpuMeter(groups, classify=shared_server_classifier(stack.db_name))


class QueueDepths(threading.Thread):
    """The depth (ready messages) of every queue of the stack's vhost, read every SAMPLE_SECONDS while the
    jobs run (a passive declare each: no rabbitmqctl, which costs a second of CPU per call); keeps each
    queue's largest depth. A queue that grows is work a consumer does not keep up with."""

    SAMPLE_SECONDS = 0.5

    def __init__(self, stack: Stack):
        super().__init__(daemon=True)
        from kombu import Connection

        self.names = [line.split("\t")[0] for line in rabbitmqctl("list_queues", "-p", stack.vhost, "name").splitlines()
                      if line.strip() and not line.startswith("name")]
        self.connection = Connection(stack.env["GAZE_AMQP_URI"])
        self.deepest = dict.fromkeys(self.names, 0)
        self.stopping = threading.Event()

    def run(self):
        channel = self.connection.channel()
        while not self.stopping.wait(self.SAMPLE_SECONDS):
            for name in list(self.names):
                try:
                    _, ready, _ = channel.queue_declare(name, passive=True)
                except Exception:   # noqa: BLE001 - gone (an auto-deleted reply queue): the broker closed the channel
                    self.names.remove(name)
                    channel = self.connection.channel()
                    continue
                self.deepest[name] = max(self.deepest[name], ready)

    def stop(self) -> dict:
        self.stopping.set()
        self.join(timeout=10)
        self.connection.release()
        return self.deepest


def _measured(meter: CpuMeter, stack: Stack, before_db: dict, seconds: float) -> dict:
    cores = meter.stop()
    cores.pop("wrk", None)
    cores["other"] = cores.get("other", 0.0) + sum(cores.pop(name, 0.0) for name in OTHERS_ON_SHARED_SERVERS)
    return {"seconds": seconds, "cores": cores, "db": activity_delta(before_db, database_activity(stack.db_name))}


def run(replicas: int, jobs: int, gpu_seconds: float, idle_seconds: float = 0.0) -> dict:
    loadavg_before = os.getloadavg()
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
        stack.wait_finished(stack.submit(2 * replicas, width=64, height=64), timeout=60 + 4 * gpu_seconds)
        idle = None
        if idle_seconds:
            log(f"R={replicas}: {idle_seconds:g} s idle, measured")
            meter, before_db, started = _cpu_meter(stack), database_activity(stack.db_name), time.monotonic()
            meter.start()
            time.sleep(idle_seconds)
            idle = _measured(meter, stack, before_db, time.monotonic() - started)
        log(f"R={replicas}: submitting {jobs} jobs")
        depths = QueueDepths(stack)
        meter, before_db = _cpu_meter(stack), database_activity(stack.db_name)
        depths.start()
        meter.start()
        first_post = time.time()
        ids = stack.submit(jobs, width=64, height=64)
        submitted = time.time()
        rows = stack.wait_finished(ids, timeout=60 + 3 * jobs * gpu_seconds / replicas)
        loaded = _measured(meter, stack, before_db, time.time() - first_post)
        loaded["deepest_queues"] = depths.stop()
    finally:
        stack.stop()
    done = [r for r in rows if r["status"] == "done"]
    makespan = max(r["finished_at"] for r in rows) - first_post
    throughput = len(ids) / makespan
    per_replica = defaultdict(list)
    for r in done:
        per_replica[r["replica"]].append(r)
    # a job whose job_started event the jobs service handled after its job_completed (they wait in different
    # queues) keeps no started_at: counted, and left out of the timings below
    timed = [r for r in done if r["started_at"] is not None]
    gaps = []
    for runs in per_replica.values():
        runs = sorted((r for r in runs if r["started_at"] is not None), key=lambda r: r["started_at"])
        gaps += [b["started_at"] - (a["started_at"] + a["generation_seconds"]) for a, b in zip(runs, runs[1:])]
    first_start = min(r["started_at"] for r in timed)
    busy = sum(r["generation_seconds"] for r in done)
    return {"idle": idle, "loaded": loaded, "loadavg_before": loadavg_before,
            "first_start_ms": (first_start - first_post) * 1000,
            "tail_ms": (max(r["finished_at"] for r in rows)
                        - max(r["started_at"] + r["generation_seconds"] for r in timed)) * 1000,
            "done_without_start": len(done) - len(timed),
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
    parser.add_argument("--jobs-per-replica", type=int,
                        help="N = this × R jobs for each R (instead of --jobs), so every R runs as long")
    parser.add_argument("--idle-seconds", type=float, default=0.0,
                        help="first measure CPU and database writes this long with the replicas up and idle")
    parser.add_argument("--json", help="also write every run's raw numbers to this file")
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
                    jobs = args.jobs_per_replica * replicas if args.jobs_per_replica else args.jobs
                    gaze_runs.append(run(replicas, jobs, args.gpu_seconds, args.idle_seconds))
                    log(f"R={replicas} round {n + 1}: GAZE {gaze_runs[-1]['efficiency']:.3f}")
                else:
                    from bench.celery_peer import run as run_celery

                    peer_runs.append(run_celery(replicas, gaze_runs[-1]["jobs"] if gaze_runs else args.jobs,
                                                args.gpu_seconds))
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
             f"T = {args.gpu_seconds * 1000:.0f} ms simulated GPU time per job, "
             + (f"{args.jobs_per_replica} × R jobs per run." if args.jobs_per_replica else f"{args.jobs} jobs per run."),
             "",
             "| R | done | makespan | throughput | ideal R/T | efficiency | jobs per replica | gap p50 / mean |"
             + (" done with no started_at |" if any(r["done_without_start"] for r in results) else ""),
             "|---|---|---|---|---|---|---|---|" + ("---|" if any(r["done_without_start"] for r in results) else "")]
    for r in results:
        lines.append(f"| {r['replicas']} | {r['done']}/{r['jobs']} | {r['makespan']:.2f} s | {r['throughput']:.2f} jobs/s"
                     f" | {r['ideal']:.1f} jobs/s | **{r['efficiency']:.3f}** | {min(r['per_replica'])}–{max(r['per_replica'])}"
                     f" | {r['gap_ms_p50']:.1f} / {r['gap_ms_mean']:.1f} ms |"
                     + (f" {r['done_without_start']} |" if any(x["done_without_start"] for x in results) else ""))
    lines += ["", "| R | first POST → first start | submitting took | last backend end → last `done` | GPUs busy"
                  " | load average before the run |", "|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['replicas']} | {r['first_start_ms']:.0f} ms | {r['submit_seconds']:.2f} s"
                     f" | {r['tail_ms']:.0f} ms | {r['busy']:.3f} | {' / '.join(f'{x:.2f}' for x in r['loadavg_before'])} |")
    lines += ["", "CPU over the makespan, in cores (of the machine's; from /proc), and the bench database's writes"
                  " (pg_stat_database):", "",
              f"| R | window | {' | '.join(CPU_PARTS)} | machine | commits/s | rows inserted/s | rows updated/s |",
              "|---|---|" + "---:|" * (len(CPU_PARTS) + 4)]
    for r in results:
        for window in ("idle", "loaded"):
            if r[window] is not None:
                lines.append(_cpu_row(r["replicas"], window, r[window]))
    lines += ["", "The deepest queues while the jobs ran (ready messages, sampled every"
                  f" {QueueDepths.SAMPLE_SECONDS:g} s; the five deepest of the vhost):", ""]
    for r in results:
        deepest = [item for item in sorted(r["loaded"]["deepest_queues"].items(), key=lambda item: -item[1])[:5]
                   if item[1] > 0]
        lines.append(f"- R = {r['replicas']}: " + (", ".join(f"`{name}` {depth:,}" for name, depth in deepest)
                                                   or "none above 0 ready"))
    if peer_lines:
        lines += ["", f"Against a plain Celery pool ({args.rounds} alternating rounds; efficiency of each round, "
                      "sorted, and the median; the tables above show GAZE's median round):", "",
                  "| R | GAZE rounds | GAZE median | Celery rounds | Celery median |", "|---|---|---|---|---|",
                  *peer_lines]
    publish("\n".join(lines), args.markdown)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "gpu_seconds": args.gpu_seconds, "runs": results},
                                              indent=1) + "\n")


def _cpu_row(replicas, window, measured) -> str:
    cores, db, seconds = measured["cores"], measured["db"], measured["seconds"]
    return (f"| {replicas} | {window} ({seconds:.0f} s) | "
            + " | ".join(f"{cores.get(part, 0.0):.2f}" for part in CPU_PARTS)
            + f" | **{cores['machine']:.2f}** | {db['xact_commit'] / seconds:.0f} | {db['tup_inserted'] / seconds:.0f}"
              f" | {db['tup_updated'] / seconds:.0f} |")


if __name__ == "__main__":
    main()
