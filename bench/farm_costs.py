#!/usr/bin/env python3
"""What one job, one replica and one poll cost the central services (issue 16): the per-unit costs behind
the paper case of a large farm in BENCHMARKS.md.

    .venv/bin/python bench/farm_costs.py [--replicas 8] [--gpu-seconds 0.5] [--rate 8] [--seconds 40]
                                         [--idle-seconds 20] [--poll-seconds 10] [--markdown FILE] [--json FILE]

One isolated stack (bench/stack.py) with R generator replicas on the `simulated` backend (T seconds per job,
progress reported at each step as a sampler does), GAZE's default settings otherwise (checkpoint-aware
scheduling included). After a warm-up of 2R jobs, in order:

1. idle: --idle-seconds with the replicas up and no job. What a replica costs by itself per second
   (its `generator_status` events and the scheduler's line asks, `jobs.assign_line`).
2. stream: jobs submitted one per POST ({"count": 1}, as a farm's many clients would) at --rate a second for
   --seconds, until every one is recorded finished. The window is first POST → last job recorded done.
   Per job = (what the window used − the idle phase's rate × the window's length) / jobs: the idle
   replicas' own traffic is taken out, so a job's cost is what it adds.
3. messages: the same two phases again, shorter (a third of their length), with a counting queue bound to
   every exchange the stack uses (`nameko-rpc` with `#`: RPC requests and their replies; `generator.events`
   and `jobs.events` with `#`; `gaze.work` with the routing keys of the shared line and of the preset's
   checkpoint line), drained and counted by routing key after each phase: the messages a job and an idle
   replica-second cause, measured. It runs after the CPU phases because the counting queues' copies cost
   the broker too.
4. polls: --poll-threads threads polling GET /api/v1/job/<id> of finished jobs as fast as they are answered,
   for --poll-seconds: the gateway's (and Redis') CPU per poll.

Measured in each phase: CPU of each part in cores from /proc (as bench/scaling.py: the jobs service, the
gateway, the generators, the system RabbitMQ's beam.smp, PostgreSQL's backends of the stack's database and
its shared background processes, Redis; other work on the machine is `other`), and the stack database's
pg_stat_database counters (commits, rows inserted, updated). The broker and PostgreSQL also serve other
work on the machine (other vhosts and databases' clients on the same servers): run it on a quiet machine.
This script's own database reads while it waits for jobs (one a second) are taken out of the commits.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import psycopg
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.stack import (GAZE, PRESET, CpuMeter, Proc, Stack, activity_delta, child_groups, database_activity,  # noqa: E402
                         log, machine_description, publish, shared_server_classifier)
from shared import events  # noqa: E402

PARTS = ("jobs", "gateway", "presets", "generators", "rabbitmq", "postgres", "redis", "bench client", "other")
OTHERS_ON_SHARED_SERVERS = ("rabbitmqctl", "rabbitmq (other nodes)", "postgres (other databases)")
RPC_EXCHANGE = "nameko-rpc"       # nameko's default
ONE_STEP = "bench_one_step"
WAIT_POLL_SECONDS = 1.0           # how often this script reads the jobs table while it waits
NOTHING = {"seconds": 1.0, "cpu_seconds": {}, "db": {"xact_commit": 0, "xact_rollback": 0, "tup_inserted": 0,
                                                     "tup_updated": 0, "tup_deleted": 0}}


class Phase:
    """CPU and database counters of the stack between start() and stop()."""

    def __init__(self, stack: Stack):
        groups = {proc.pgrp: "generators" if name.startswith("generator") else name
                  for name, proc in stack.procs.items()}
        # the generators' worker processes, each in a session of its own
        groups.update(dict.fromkeys(child_groups(proc.popen.pid for name, proc in stack.procs.items()
                                                 if name.startswith("generator")), "generators"))
        groups[os.getpgrp()] = "bench client"
        self.stack = stack
        self.meter = CpuMeter(groups, classify=shared_server_classifier(stack.db_name))

    def start(self):
        self.db0 = database_activity(self.stack.db_name)
        self.meter.start()
        self.t0 = time.monotonic()
        return self

    def stop(self, own_commits=0) -> dict:
        seconds = time.monotonic() - self.t0
        cores = self.meter.stop()
        cores.pop("wrk", None)
        cores["other"] = cores.get("other", 0.0) + sum(cores.pop(name, 0.0) for name in OTHERS_ON_SHARED_SERVERS)
        db = activity_delta(self.db0, database_activity(self.stack.db_name))
        db["xact_commit"] -= own_commits
        return {"seconds": seconds, "cpu_seconds": {part: c * seconds for part, c in cores.items()}, "db": db}


class MessageTap:
    """Counting queues bound to the stack's exchanges (see the module's docstring); count() drains them and
    returns {kind: messages} since the last count()."""

    def __init__(self, amqp_uri: str, checkpoint: str):
        from kombu import Connection

        self.connection = Connection(amqp_uri)
        self.channel = self.connection.channel()
        self.queue = f"bench.tap.{os.getpid()}"
        self.channel.queue_declare(self.queue, durable=False, auto_delete=False)
        bindings = [(RPC_EXCHANGE, "#"), (events.EVENTS_EXCHANGE, "#"), (events.JOBS_EVENTS_EXCHANGE.name, "#"),
                    (events.WORK_EXCHANGE.name, events.WORK_ROUTING_KEY),
                    (events.WORK_EXCHANGE.name, events.checkpoint_routing_key(checkpoint))]
        for exchange, key in bindings:
            self.channel.queue_bind(self.queue, exchange, key)

    def count(self) -> Counter:
        seen = Counter()
        while True:
            message = self.channel.basic_get(self.queue, no_ack=True)
            if message is None:
                return seen
            seen[self._kind(message.delivery_info["exchange"], message.delivery_info["routing_key"])] += 1

    @staticmethod
    def _kind(exchange, routing_key) -> str:
        if exchange == RPC_EXCHANGE:
            # a request's key is service.method; a reply's is the caller's reply queue (a UUID)
            return f"RPC {routing_key}" if routing_key.startswith("jobs.") or "." in routing_key else "RPC reply"
        if exchange == events.WORK_EXCHANGE.name:
            return "work order"
        return f"event {routing_key}"

    def close(self):
        try:
            self.channel.queue_delete(self.queue)
        finally:
            self.connection.release()


class FarmStack(Stack):
    """The isolated stack, with one more preset: the example one with a single step, so a job sends one
    progress event instead of the example's 28 (the contrast gives a progress event's cost)."""

    def _add_presets(self):
        super()._add_presets()
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO presets.presets (slug, name, prompt, negative, checkpoint, width, height, steps, cfg,"
                " sampler) SELECT %s, 'One step', prompt, negative, checkpoint, width, height, 1, cfg, sampler"
                " FROM presets.presets WHERE slug = %s", (ONE_STEP, PRESET))

    def submit_to(self, slug, count, **body) -> list[str]:
        answer = self.session.post(f"{self.url}/api/v1/generate/{slug}", json={"count": count, **body}, timeout=30)
        answer.raise_for_status()
        return [job["job_id"] for job in answer.json()["jobs"]]


def preset_steps(stack: Stack) -> int:
    with psycopg.connect(stack.db_url, autocommit=True) as conn:
        return conn.execute("SELECT steps FROM presets.presets WHERE slug = %s", (PRESET,)).fetchone()[0]


def checkpoint_of(stack: Stack) -> str:
    with psycopg.connect(stack.db_url, autocommit=True) as conn:
        return conn.execute("SELECT checkpoint FROM presets.presets WHERE slug = %s", (PRESET,)).fetchone()[0]


def stream(stack: FarmStack, rate: float, seconds: float, gpu_seconds: float, preset=PRESET) -> tuple[list, int]:
    """Submit round(rate × seconds) jobs, one per POST, at `rate` a second; wait until all are finished.
    Returns (their rows, the commits this script's waiting made)."""
    count = max(1, round(rate * seconds))
    ids, t0 = [], time.monotonic()
    for n in range(count):
        time.sleep(max(0.0, t0 + n / rate - time.monotonic()))
        ids += stack.submit_to(preset, 1, width=64, height=64)
    deadline = time.monotonic() + 60 + 3 * count * gpu_seconds
    reads = 0
    with psycopg.connect(stack.db_url, autocommit=True) as conn:
        while True:
            reads += 1
            rows = conn.execute("SELECT status, replica FROM jobs.jobs WHERE id = ANY(%s::uuid[])", (ids,)).fetchall()
            if len(rows) == count and all(status in ("done", "failed") for status, _ in rows):
                return rows, reads
            if time.monotonic() > deadline:
                raise SystemExit(f"{sum(s not in ('done', 'failed') for s, _ in rows)} of {count} jobs unfinished")
            time.sleep(WAIT_POLL_SECONDS)


def polls(stack: Stack, job_ids: list, threads: int, seconds: float) -> tuple[int, int]:
    """GET /api/v1/job/<id> over `job_ids` from `threads` threads for `seconds`: (answered 200, other)."""
    answered, failed = [0] * threads, [0] * threads
    stop = time.monotonic() + seconds

    def poll(index):
        session = requests.Session()
        session.headers.update({"X-API-Key": stack.key})
        n = index
        while time.monotonic() < stop:
            ok = session.get(f"{stack.url}/api/v1/job/{job_ids[n % len(job_ids)]}", timeout=30).status_code == 200
            answered[index] += ok
            failed[index] += not ok
            n += threads

    workers = [threading.Thread(target=poll, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(answered), sum(failed)


def per_unit(phase: dict, idle: dict, units: int) -> dict:
    """What `units` added over the idle rate: {part: CPU ms per unit} and {counter: per unit}."""
    seconds = phase["seconds"]
    cpu = {part: 1000 * (used - idle["cpu_seconds"].get(part, 0.0) / idle["seconds"] * seconds) / units
           for part, used in phase["cpu_seconds"].items()}
    db = {name: (value - idle["db"][name] / idle["seconds"] * seconds) / units for name, value in phase["db"].items()}
    return {"cpu_ms": cpu, "db": db}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=8)
    parser.add_argument("--gpu-seconds", type=float, default=0.5)
    parser.add_argument("--rate", type=float, default=8.0, help="jobs submitted a second in the stream")
    parser.add_argument("--seconds", type=float, default=40.0, help="how long jobs are submitted")
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--poll-seconds", type=float, default=10.0)
    parser.add_argument("--poll-threads", type=int, default=4)
    parser.add_argument("--farm-gpus", type=int, default=100, help="the paper case: replicas of the farm")
    parser.add_argument("--farm-job-seconds", type=float, default=2.0, help="the paper case: GPU seconds per job")
    parser.add_argument("--farm-poll-seconds", type=float, default=1.0,
                        help="the paper case: each client polls its job this often while it waits or runs")
    parser.add_argument("--markdown")
    parser.add_argument("--json")
    args = parser.parse_args()
    machine = machine_description()
    stack = FarmStack(Path(tempfile.mkdtemp(prefix="gaze-farm-costs-")), presets=1)
    result = {"machine": machine, "settings": vars(args), "host": socket.gethostname()}
    try:
        stack.start()
        for n in range(args.replicas):
            env = dict(stack.env, GAZE_BACKEND="simulated", GAZE_SIMULATED_GPU_SECONDS=str(args.gpu_seconds),
                       GAZE_REPLICA_NAME=f"bench-gpu-{n}")
            stack.procs[f"generator-{n}"] = Proc.start(f"generator-{n}", [GAZE, "service", "generator"], env,
                                                       stack.workdir)
        stack.wait_for_replicas(args.replicas)
        stack.wait_finished(stack.submit(2 * args.replicas, width=64, height=64), timeout=60 + 4 * args.gpu_seconds)

        log(f"idle: {args.idle_seconds:g} s, {args.replicas} replicas")
        phase = Phase(stack).start()
        time.sleep(args.idle_seconds)
        idle = phase.stop()
        log(f"stream: {args.rate:g} jobs/s for {args.seconds:g} s")
        phase = Phase(stack).start()
        rows, reads = stream(stack, args.rate, args.seconds, args.gpu_seconds)
        loaded = phase.stop(own_commits=reads)
        jobs = len(rows)
        result.update(idle=idle, stream=loaded, jobs=jobs, done=sum(s == "done" for s, _ in rows),
                      per_job=per_unit(loaded, idle, jobs),
                      per_replica_second=per_unit(idle, NOTHING, args.replicas * idle["seconds"]))
        log(f"stream of one-step jobs: {args.rate:g} jobs/s for {args.seconds:g} s")
        phase = Phase(stack).start()
        rows, reads = stream(stack, args.rate, args.seconds, args.gpu_seconds, preset=ONE_STEP)
        one_step = phase.stop(own_commits=reads)
        result.update(one_step=one_step, one_step_jobs=len(rows), one_step_done=sum(s == "done" for s, _ in rows),
                      per_one_step_job=per_unit(one_step, idle, len(rows)))
        # the difference between the two per-job costs is STEPS - 1 progress events' (a job sends one a step)
        steps = preset_steps(stack)
        result["steps"] = steps
        result["per_progress_event"] = {
            kind: {name: (result["per_job"][kind][name] - result["per_one_step_job"][kind][name]) / (steps - 1)
                   for name in result["per_job"][kind]} for kind in ("cpu_ms", "db")}

        log("messages: the same phases with counting queues bound")
        tap = MessageTap(stack.env["GAZE_AMQP_URI"], checkpoint_of(stack))
        try:
            tap.count()
            t0 = time.monotonic()
            time.sleep(args.idle_seconds / 3)
            idle_messages, idle_span = tap.count(), time.monotonic() - t0
            t0 = time.monotonic()
            counted_rows, _ = stream(stack, args.rate, args.seconds / 3, args.gpu_seconds)
            stream_messages, stream_span = tap.count(), time.monotonic() - t0
        finally:
            tap.close()
        result["messages"] = {"idle": dict(idle_messages), "idle_seconds": idle_span,
                              "stream": dict(stream_messages), "stream_seconds": stream_span,
                              "jobs": len(counted_rows)}

        with psycopg.connect(stack.db_url, autocommit=True) as conn:
            done_ids = [r[0] for r in conn.execute(
                "SELECT id::text FROM jobs.jobs WHERE status = 'done' ORDER BY created_at DESC LIMIT 60").fetchall()]
        log(f"polls: {args.poll_threads} threads for {args.poll_seconds:g} s")
        phase = Phase(stack).start()
        answered, failed = polls(stack, done_ids, args.poll_threads, args.poll_seconds)
        polled = phase.stop()
        result.update(polls=polled, polls_answered=answered, polls_failed=failed,
                      per_poll=per_unit(polled, idle, answered))
    finally:
        stack.stop()
    result["cleanup"] = stack.cleanup_notes
    publish(report(result, args), args.markdown)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=str) + "\n")


def report(result: dict, args) -> str:
    machine = result["machine"]
    lines = [f"Machine: {machine['nproc']} cores ({machine['cpu_model']}), {machine['memory_gib']} GiB,"
             f" RabbitMQ {machine['rabbitmq']}, PostgreSQL {machine['postgresql']}; load average at start"
             f" {machine['loadavg_at_start'][0]:.2f}", "",
             f"R = {args.replicas} simulated replicas, T = {args.gpu_seconds:g} s; idle {result['idle']['seconds']:.0f} s;"
             f" stream {result['jobs']} jobs of {result['steps']} steps ({result['done']} done), one per POST at"
             f" {args.rate:g}/s, window {result['stream']['seconds']:.1f} s; the same with one-step jobs"
             f" ({result['one_step_done']} done, {result['one_step']['seconds']:.1f} s); polls {result['polls_answered']:,} answered"
             f" ({result['polls_answered'] / result['polls']['seconds']:.0f}/s, {result['polls_failed']} not 200)"
             f" from {args.poll_threads} threads in {result['polls']['seconds']:.1f} s.", "",
             "CPU per unit, in ms (what the unit adds over the idle replicas' own rate; a job's includes its POST):", "",
             "| unit | " + " | ".join(PARTS) + " |", "|---|" + "---:|" * len(PARTS)]
    units = (("a job (POST → done)", "per_job"), ("a one-step job", "per_one_step_job"),
             ("a progress event (the difference ÷ steps − 1)", "per_progress_event"),
             ("a replica-second, idle", "per_replica_second"), ("a poll (GET /api/v1/job/<id>)", "per_poll"))
    for label, key in units:
        cpu = result[key]["cpu_ms"]
        lines.append(f"| {label} | " + " | ".join(f"{cpu.get(part, 0.0):.2f}" for part in PARTS) + " |")
    lines += ["", "PostgreSQL (pg_stat_database of the stack's database) per unit:", "",
              "| unit | commits | rows inserted | rows updated |", "|---|---:|---:|---:|"]
    for label, key in units:
        db = result[key]["db"]
        lines.append(f"| {label} | {db['xact_commit']:.2f} | {db['tup_inserted']:.2f} | {db['tup_updated']:.2f} |")
    messages = result["messages"]
    kinds = sorted(set(messages["idle"]) | set(messages["stream"]))
    idle_rate = {k: messages["idle"].get(k, 0) / messages["idle_seconds"] for k in kinds}
    lines += ["", f"Messages published (counting queues; stream {messages['jobs']} jobs in"
                  f" {messages['stream_seconds']:.1f} s, idle {messages['idle_seconds']:.1f} s):", "",
              "| message | idle, per replica-second | stream, counted | per job (over the idle rate) |",
              "|---|---:|---:|---:|"]
    total_job = total_idle = 0.0
    for kind in kinds:
        per_job = (messages["stream"].get(kind, 0) - idle_rate[kind] * messages["stream_seconds"]) / messages["jobs"]
        per_replica = idle_rate[kind] / args.replicas
        total_job += per_job
        total_idle += per_replica
        lines.append(f"| {kind} | {per_replica:.2f} | {messages['stream'].get(kind, 0)} | {per_job:.2f} |")
    lines.append(f"| **all** | **{total_idle:.2f}** | {sum(messages['stream'].values())} | **{total_job:.2f}** |")
    lines += ["", *paper_case(result, args, total_job, total_idle)]
    lines += ["", "Clean-up: " + "; ".join(result["cleanup"]) + "."]
    return "\n".join(lines)


PROGRESS_INTERVAL = 0.25     # services/generator/supervisor.py: what its relay of progress is meant to keep to
PREFETCH = 2                 # GAZE_GENERATOR_PREFETCH's default: jobs a replica holds (so a client waits on each)
CENTRAL = ("jobs", "gateway", "rabbitmq", "postgres", "redis")


def paper_case(result: dict, args, messages_per_job: float, messages_per_replica_second: float) -> list[str]:
    """Arithmetic on the measured per-unit costs: a farm of G GPUs busy with jobs of T seconds (G / T jobs
    a second), each submitted by its own POST, each client polling its job every P seconds while it waits
    or runs (GAZE_GENERATOR_PREFETCH × G jobs at a time); the job's steps as measured (one progress event
    a step, as the code sends them), and as PROGRESS_INTERVAL would have them (a job of T seconds: at most
    T / 0.25 + 1 events)."""
    gpus, seconds, steps = args.farm_gpus, args.farm_job_seconds, result["steps"]
    rate, polls = gpus / seconds, PREFETCH * gpus / args.farm_poll_seconds
    capped = min(steps, int(seconds / PROGRESS_INTERVAL) + 1)
    one, event = result["per_one_step_job"], result["per_progress_event"]
    replica, poll = result["per_replica_second"], result["per_poll"]
    lines = [f"The paper case, arithmetic on the numbers above: {gpus} GPUs, T = {seconds:g} s, so {rate:g} jobs/s,"
             f" each its own POST; {polls:g} polls/s (every client polls every {args.farm_poll_seconds:g} s while"
             f" its job waits or runs: {PREFETCH} jobs per replica); progress as sent today ({steps} events a job,"
             f" one a step) and at most every {PROGRESS_INTERVAL} s ({capped} a job). Load = rate × cost per unit,"
             " in cores; `replicas` is the idle replicas' rate × G (an upper bound: it holds the stack's own timers"
             f" too).", "",
             "| part | jobs | replicas | polls | total, progress a step | total, progress every 0.25 s |",
             "|---|---:|---:|---:|---:|---:|"]
    for part in CENTRAL:
        per_step_job = one["cpu_ms"].get(part, 0.0) + (steps - 1) * event["cpu_ms"].get(part, 0.0)
        capped_job = one["cpu_ms"].get(part, 0.0) + (capped - 1) * event["cpu_ms"].get(part, 0.0)
        idle = gpus * replica["cpu_ms"].get(part, 0.0) / 1000
        polled = polls * poll["cpu_ms"].get(part, 0.0) / 1000
        lines.append(f"| {part} | {rate * per_step_job / 1000:.2f} | {idle:.2f} | {polled:.2f}"
                     f" | **{rate * per_step_job / 1000 + idle + polled:.2f}** | {rate * capped_job / 1000 + idle + polled:.2f} |")
    commits = rate * (one["db"]["xact_commit"] + (steps - 1) * event["db"]["xact_commit"]) + gpus * replica["db"]["xact_commit"]
    updated = rate * (one["db"]["tup_updated"] + (steps - 1) * event["db"]["tup_updated"]) + gpus * replica["db"]["tup_updated"]
    inserted = rate * one["db"]["tup_inserted"] + gpus * replica["db"]["tup_inserted"]
    jobs_job = one["cpu_ms"]["jobs"] + (steps - 1) * event["cpu_ms"]["jobs"]
    jobs_capped = one["cpu_ms"]["jobs"] + (capped - 1) * event["cpu_ms"]["jobs"]
    jobs_replicas = gpus * replica["cpu_ms"]["jobs"] / 1000
    lines += ["", f"- PostgreSQL: {commits:,.0f} commits/s, {updated:,.0f} rows updated/s, {inserted:,.0f} rows"
                  " inserted/s (progress a step).",
              f"- RabbitMQ: {rate * messages_per_job + gpus * messages_per_replica_second:,.0f} messages published/s"
              f" ({messages_per_job:.1f} a job, {messages_per_replica_second:.2f} an idle replica-second, as counted"
              " above).",
              f"- One jobs-service process (one Python process: at most one core) with {gpus} replicas keeps up with"
              f" at most {max(0.0, 1 - jobs_replicas) / jobs_job * 1000:.1f} jobs/s (progress a step) or"
              f" {max(0.0, 1 - jobs_replicas) / jobs_capped * 1000:.1f} jobs/s (every 0.25 s): (1 core −"
              f" {jobs_replicas:.2f} for the replicas) ÷ {jobs_job:.1f} or {jobs_capped:.1f} ms a job."]
    return lines


if __name__ == "__main__":
    main()
