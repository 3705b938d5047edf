#!/usr/bin/env python3
"""Checkpoint-aware scheduling (issue 15): how much of a farm's GPU time goes to images, not model loads.

    .venv/bin/python bench/checkpoints.py [--replicas 4] [--checkpoints 4] [--jobs 400] [--gpu-seconds 0.5]
        [--load-seconds 3] [--max-wait 30] [--patterns burst stream] [--modes checkpoint fcfs] [--timelines]
        [--markdown FILE]
    .venv/bin/python bench/checkpoints.py --quick          # a short smoke run of the same thing

The workload: N jobs over K checkpoints, one of them rare (5 % of the jobs), the others sharing the rest
equally, in an order shuffled with a fixed seed (--seed). Each job is one POST /api/v1/generate/<preset>
with `count` 1 and the job's checkpoint as the request's checkpoint override (the guide's way for a client
to pick a model per job). Two arrival patterns: `burst` (every job sent at t = 0, by 8 concurrent clients
in the shuffled order) and `stream` (job i sent at i × T / (load × R): --load 0.8 of the farm's capacity
R / T, same order).

Each pattern runs twice, each time on a fresh isolated stack (bench/stack.py): GAZE_SCHEDULING=checkpoint
(per-checkpoint lines, replicas kept on the model they hold) and GAZE_SCHEDULING=fcfs (the peer: one shared
line, first come first served, which is how GAZE dispatched before this issue). The R generator processes
run the `simulated` backend: a job holds its replica for T = --gpu-seconds, plus L = --load-seconds first
when its checkpoint is not the one the replica's worker holds (a model load). Then one run with a single
checkpoint (K = 1, burst, both modes) for the "efficiency unchanged" line (--no-single skips it).

Measured per run, from the jobs service's own table (jobs.jobs, jobs.replicas; same machine, same clock):
- makespan: the first POST sent → the last job's finished_at;
- efficiency: useful GPU time (jobs done × T) ÷ (makespan × R); for a burst also without the farm's
  start-up load (makespan − L: every replica first loads a model, whatever the scheduling; bench/scaling.py,
  "today's" figure, warms up first); for the stream also its ceiling, useful ÷ ((last arrival + T) × R): a farm fed
  at 80 % of its capacity cannot be busier than ~0.8, so both are shown;
- loads: the sum of the replicas' own `loads` counters (GeneratorStatus, as last reported after the last
  job ended), beside two independent counts: jobs that took at least T + L/2 (a load inside them), and
  changes of checkpoint between consecutive jobs on each replica (its first job included);
- queue wait per checkpoint: started_at − created_at, p50 / p99 / max;
- integrity: every job done, on its first attempt, announced done once by a generator (its JSON log lines),
  and exactly one image file for it in the media directory.
The targets of the issue are checked at the end (✓ / ✗); the single-checkpoint one (≥ 0.97, today's
figure) against the efficiency after the start-up load. Checkpoint-aware runs that miss a target get each
replica's timeline (checkpoints in the order it ran them) printed, for whoever tunes the scheduler.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import json
import random
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import psycopg
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.stack import GAZE, PRESET, Proc, Stack, log, machine_description, percentile, publish  # noqa: E402

RARE_SHARE = 0.05
CLIENTS = 8                  # concurrent HTTP clients sending the jobs
STATUS_INTERVAL = 2.0        # GAZE_STATUS_INTERVAL_SECONDS: the final `loads` are read within seconds
TIMELINE_PARTS = 12          # a replica's timeline shows this many runs of one checkpoint at most
PATTERNS = ("burst", "stream")
MODES = ("checkpoint", "fcfs")


@dataclass(frozen=True)
class Workload:
    replicas: int
    checkpoints: int
    jobs: int
    gpu_seconds: float
    load_seconds: float
    max_wait: float
    load: float              # the stream's arrival rate as a share of the farm's capacity R / T
    seed: int

    @property
    def names(self) -> list[str]:
        """The checkpoints, the rare one last (none is rare when there is only one)."""
        if self.checkpoints == 1:
            return ["bench/only.safetensors"]
        return [f"bench/common-{n + 1}.safetensors" for n in range(self.checkpoints - 1)] + ["bench/rare.safetensors"]

    @property
    def rare(self) -> str | None:
        return self.names[-1] if self.checkpoints > 1 else None

    def order(self) -> list[str]:
        """The checkpoint of each job, in the order they are sent: the rare one RARE_SHARE of them (at
        least one), the rest shared equally, shuffled with the fixed seed."""
        if self.checkpoints == 1:
            return self.names * self.jobs
        rare = max(1, round(self.jobs * RARE_SHARE))
        common = self.names[:-1]
        mix = [self.rare] * rare + [common[n % len(common)] for n in range(self.jobs - rare)]
        random.Random(self.seed).shuffle(mix)
        return mix

    def arrival(self, pattern: str, index: int) -> float:
        """Seconds after the first POST at which job `index` is sent."""
        if pattern == "burst":
            return 0.0
        return index * self.gpu_seconds / (self.load * self.replicas)


# --- sending the jobs -----------------------------------------------------------------------------------

class Sender:
    """Sends one POST per job at its arrival time, CLIENTS at a time (each with its own HTTP session)."""

    def __init__(self, stack: Stack):
        self.stack = stack
        self.local = threading.local()

    def _session(self) -> requests.Session:
        if not hasattr(self.local, "session"):
            self.local.session = requests.Session()
            self.local.session.headers.update(self.stack.session.headers)
        return self.local.session

    def _post(self, checkpoint: str) -> str:
        answer = self._session().post(f"{self.stack.url}/api/v1/generate/{PRESET}", timeout=60,
                                      json={"count": 1, "checkpoint": checkpoint, "width": 64, "height": 64})
        if answer.status_code != 202:
            raise SystemExit(f"POST answered {answer.status_code}: {answer.text[:300]}")
        return answer.json()["jobs"][0]["job_id"]

    def send(self, workload: Workload, pattern: str, order: list[str]) -> tuple[float, dict]:
        """(the first POST's time, {job id: checkpoint})."""
        first_post = time.time()
        started = time.monotonic()
        with ThreadPoolExecutor(CLIENTS) as pool:
            futures = []
            for index, checkpoint in enumerate(order):
                delay = started + workload.arrival(pattern, index) - time.monotonic()
                if delay > 0:
                    time.sleep(delay)   # the stream's pace, not a wait for a condition
                futures.append((pool.submit(self._post, checkpoint), checkpoint))
            return first_post, {future.result(): checkpoint for future, checkpoint in futures}


# --- reading the outcome ------------------------------------------------------------------------------

def replica_rows(stack: Stack) -> dict:
    """{replica: {"loads", "seen_at"}} as the jobs service last recorded them."""
    with psycopg.connect(stack.db_url, autocommit=True) as conn:
        rows = conn.execute("SELECT replica, coalesce(loads, 0), extract(epoch FROM seen_at)::float8"
                            " FROM jobs.replicas").fetchall()
    return {replica: {"loads": loads, "seen_at": seen_at} for replica, loads, seen_at in rows}


def reported_loads(stack: Stack, replicas: list[str], after: float) -> dict:
    """{replica: loads} from a status each replica published after `after` (the last job's end): every
    load happened inside a job, so such a report counts them all."""
    deadline = time.monotonic() + 3 * STATUS_INTERVAL + 30
    while True:
        rows = replica_rows(stack)
        if all(name in rows and rows[name]["seen_at"] > after for name in replicas):
            return {name: rows[name]["loads"] for name in replicas}
        if time.monotonic() > deadline:
            log(f"no fresh status from every replica after the last job: loads as last reported {rows}")
            return {name: rows.get(name, {}).get("loads", 0) for name in replicas}
        time.sleep(0.2)


def done_announcements(stack: Stack) -> collections.Counter:
    """How many times a generator announced each job done, from the generators' JSON log lines."""
    counts = collections.Counter()
    for proc in stack.procs.values():
        if not proc.name.startswith("generator-"):
            continue
        with contextlib.suppress(OSError):
            for line in proc.log.read_text(errors="replace").splitlines():
                if not line.startswith("{"):
                    continue
                with contextlib.suppress(ValueError):
                    parsed = json.loads(line)
                    if parsed.get("service") == "generator" and ": done in " in parsed.get("msg", ""):
                        counts[parsed.get("job_id")] += 1
    return counts


def integrity(stack: Stack, rows: list[dict]) -> list[str]:
    """What is wrong with the run's jobs (empty when every job was done exactly once)."""
    problems = []
    announced = done_announcements(stack)
    media = stack.workdir / "media"
    for row in rows:
        files = list(media.rglob(f"*{row['id'].replace('-', '')}*"))
        if row["status"] != "done":
            problems.append(f"{row['id']}: {row['status']}")
        elif row["attempts"] != 1:
            problems.append(f"{row['id']}: {row['attempts']} attempts")
        elif announced[row["id"]] != 1:
            problems.append(f"{row['id']}: announced done {announced[row['id']]} times")
        elif len(files) != 1:
            problems.append(f"{row['id']}: {len(files)} image files")
    return problems


def timeline(runs: list[str]) -> str:
    """A replica's checkpoints in the order it ran them, runs collapsed: "common-1×40 → rare×5"."""
    parts = []
    for checkpoint in runs:
        if parts and parts[-1][0] == short(checkpoint):
            parts[-1][1] += 1
        else:
            parts.append([short(checkpoint), 1])
    shown = " → ".join(f"{name}×{n}" for name, n in parts[:TIMELINE_PARTS])
    return shown + (f" → … ({len(parts)} runs in all)" if len(parts) > TIMELINE_PARTS else "")


def run(workload: Workload, pattern: str, mode: str) -> dict:
    env = {"GAZE_SCHEDULING": mode, "GAZE_CHECKPOINTS": ",".join(workload.names),
           "GAZE_SCHEDULER_MAX_WAIT_SECONDS": str(workload.max_wait),
           "GAZE_STATUS_INTERVAL_SECONDS": str(STATUS_INTERVAL)}
    stack = Stack(Path(tempfile.mkdtemp(prefix=f"gaze-checkpoints-{pattern}-{mode}-")), presets=1, extra_env=env)
    names = [f"bench-gpu-{n}" for n in range(workload.replicas)]
    keep = False
    try:
        stack.start()
        for name in names:
            generator_env = dict(stack.env, GAZE_BACKEND="simulated", GAZE_REPLICA_NAME=name,
                                 GAZE_SIMULATED_GPU_SECONDS=str(workload.gpu_seconds),
                                 GAZE_SIMULATED_LOAD_SECONDS=str(workload.load_seconds))
            stack.procs[f"generator-{name}"] = Proc.start(f"generator-{name}", [GAZE, "service", "generator"],
                                                          generator_env, stack.workdir)
        stack.wait_for_replicas(workload.replicas)
        log(f"{pattern}/{mode}, K={workload.checkpoints}: sending {workload.jobs} jobs")
        order = workload.order()
        first_post, checkpoint_of = Sender(stack).send(workload, pattern, order)
        # first-come-first-served loads for about 3 jobs in 4: allow for that, whatever the mode
        budget = 120 + 2 * workload.jobs * (workload.gpu_seconds + workload.load_seconds) / workload.replicas
        rows = stack.wait_finished(list(checkpoint_of), timeout=budget)
        last_end = max(r["finished_at"] for r in rows)
        loads = reported_loads(stack, names, last_end)
        problems = integrity(stack, rows)
        keep = bool(problems)
    finally:
        stack.stop(keep_workdir=keep)
    if problems:
        log(f"{len(problems)} job(s) not done exactly once (logs kept in {stack.workdir}): {problems[:5]}")
    for row in rows:
        row["checkpoint"] = checkpoint_of[row["id"]]
    done = [r for r in rows if r["status"] == "done"]
    makespan = last_end - first_post
    useful = len(done) * workload.gpu_seconds
    last_arrival = max(r["created_at"] for r in rows) - first_post
    per_replica = collections.defaultdict(list)
    for r in sorted(done, key=lambda r: r["started_at"]):
        per_replica[r["replica"]].append(r)
    switches = sum(1 + sum(a["checkpoint"] != b["checkpoint"] for a, b in zip(jobs, jobs[1:]))
                   for jobs in per_replica.values())
    waits = collections.defaultdict(list)
    for r in done:
        waits[r["checkpoint"]].append(r["started_at"] - r["created_at"])
    return {
        "pattern": pattern, "mode": mode, "checkpoints": workload.checkpoints, "jobs": len(rows),
        "done": len(done), "problems": problems, "makespan": makespan, "useful": useful,
        "efficiency": useful / (makespan * workload.replicas),
        # the burst's with the farm's start-up load (every replica loads its first checkpoint) left out; a
        # stream's makespan is its arrivals'
        "warm_efficiency": (useful / ((makespan - workload.load_seconds) * workload.replicas)
                            if pattern == "burst" else None),
        "ceiling": useful / ((last_arrival + workload.gpu_seconds) * workload.replicas),
        "last_arrival": last_arrival,
        "loads": sum(loads.values()), "loads_per_replica": loads,
        "slow_jobs": sum(r["generation_seconds"] >= workload.gpu_seconds + workload.load_seconds / 2 for r in done),
        "switches": switches,
        "waits": {cp: {"jobs": len(w), "p50": percentile(w, 50), "p99": percentile(w, 99), "max": max(w)}
                  for cp, w in sorted(waits.items())},
        "timelines": {replica: (len(jobs), timeline([r["checkpoint"] for r in jobs]))
                      for replica, jobs in sorted(per_replica.items())},
        "busy": {replica: sum(r["generation_seconds"] for r in jobs) / makespan
                 for replica, jobs in sorted(per_replica.items())},
    }


# --- the report ---------------------------------------------------------------------------------------

def short(checkpoint: str) -> str:
    return checkpoint.rsplit("/", 1)[-1].removesuffix(".safetensors")


def report(workload: Workload, results: list[dict], all_timelines=False) -> str:
    machine = machine_description()
    lines = [f"Machine: {machine['nproc']} cores ({machine['cpu_model']}), {machine['memory_gib']} GiB,"
             f" RabbitMQ {machine['rabbitmq']}, PostgreSQL {machine['postgresql']}; load average at start"
             f" {machine['loadavg_at_start'][0]:.2f}", "",
             f"R = {workload.replicas} replicas (simulated backend), K = {workload.checkpoints} checkpoints (one rare:"
             f" {RARE_SHARE:.0%} of the jobs), T = {workload.gpu_seconds:g} s per image, L = {workload.load_seconds:g} s"
             f" per load, N = {workload.jobs} jobs, GAZE_SCHEDULER_MAX_WAIT_SECONDS = {workload.max_wait:g};"
             f" burst: all jobs at t = 0 (shuffled, seed {workload.seed}); stream: {workload.load:.0%} of the farm's"
             f" capacity R / T. A fresh stack per run.", "",
             "| pattern | K | scheduling | done once | makespan | efficiency | after the start-up load"
             " | stream ceiling | ÷ ceiling | loads (reported / jobs ≥ T + L/2 / switches) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        ceiling = (f"{r['ceiling']:.3f} | {r['efficiency'] / r['ceiling']:.3f}" if r["pattern"] == "stream"
                   else "— | —")
        warm = "—" if r["warm_efficiency"] is None else f"{r['warm_efficiency']:.3f}"
        lines.append(f"| {r['pattern']} | {r['checkpoints']} | {r['mode']} | {r['jobs'] - len(r['problems'])}/{r['jobs']}"
                     f" | {r['makespan']:.1f} s | **{r['efficiency']:.3f}** | {warm} | {ceiling}"
                     f" | {r['loads']} / {r['slow_jobs']} / {r['switches']} |")
    lines += ["", "Queue wait (started_at − created_at) per checkpoint:", "",
              "| pattern | K | scheduling | checkpoint | jobs | p50 | p99 | max |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        for checkpoint, w in r["waits"].items():
            lines.append(f"| {r['pattern']} | {r['checkpoints']} | {r['mode']} | {short(checkpoint)} | {w['jobs']}"
                         f" | {w['p50']:.2f} s | {w['p99']:.2f} s | {w['max']:.2f} s |")
    lines += ["", "Targets (issue 15):", ""] + [f"- {line}" for line in targets(workload, results)]
    low = [r for r in results if all_timelines
           or r["mode"] == "checkpoint" and not all(ok for ok, _ in checks(workload, r))]
    if low:
        lines += ["", f"{'Runs' if all_timelines else 'Runs that missed a target'}, per replica (jobs, share of"
                      " the makespan busy, reported loads, checkpoints in the order it ran them):", ""]
        for r in low:
            lines.append(f"- {r['pattern']}, K = {r['checkpoints']}, {r['mode']}:")
            for replica, (count, runs) in r["timelines"].items():
                lines.append(f"  - {replica}: {count} jobs, busy {r['busy'][replica]:.2f},"
                             f" {r['loads_per_replica'].get(replica, 0)} loads: {runs}")
    for r in results:
        if r["problems"]:
            lines.append(f"\n**{r['pattern']}/{r['mode']} K={r['checkpoints']}: {len(r['problems'])} job(s) not done"
                         f" exactly once**: {', '.join(r['problems'][:10])}")
    lines += ["", f"Command: `{' '.join(['bench/checkpoints.py', *sys.argv[1:]])}`"]
    return "\n".join(lines)


def mark(ok: bool) -> str:
    return "✓" if ok else "✗"


def checks(workload: Workload, r: dict) -> list[tuple[bool, str]]:
    """The issue's targets for one checkpoint-aware run: (met, what) each."""
    name = f"{r['pattern']}, K = {r['checkpoints']}"
    if r["checkpoints"] == 1:
        # today's figure (bench/scaling.py) is measured after a warm-up: no farm avoids its first load
        return [(r["warm_efficiency"] >= 0.97,
                 f"{name}: efficiency after the start-up load {r['warm_efficiency']:.3f} ≥ 0.97 (literal, the"
                 f" first load of every replica inside the makespan: {r['efficiency']:.3f})")]
    out = []
    if r["pattern"] == "stream":
        # a farm fed at 80 % of its capacity cannot be busier than that: the target applies to the ratio
        out.append((r["efficiency"] >= 0.85 * r["ceiling"],
                    f"{name}: efficiency {r['efficiency']:.3f} ≥ 0.85 × its ceiling {r['ceiling']:.3f} (literal:"
                    f" {mark(r['efficiency'] >= 0.85)} {r['efficiency']:.3f} ≥ 0.85, which no farm fed at"
                    f" {workload.load:.0%} of its capacity reaches)"))
    else:
        out.append((r["efficiency"] >= 0.85, f"{name}: efficiency {r['efficiency']:.3f} ≥ 0.85"))
    out.append((r["loads"] <= 2 * r["checkpoints"], f"{name}: {r['loads']} loads ≤ 2 × K = {2 * r['checkpoints']}"))
    rare = r["waits"].get(workload.rare)
    if rare:
        bound = workload.max_wait + workload.load_seconds + workload.gpu_seconds
        out.append((rare["p99"] <= bound,
                    f"{name}: the rare checkpoint's p99 wait {rare['p99']:.2f} s ≤ max wait + L + T = {bound:g} s"))
    return out


def targets(workload: Workload, results: list[dict]) -> list[str]:
    out = [f"{mark(ok)} {what}" for r in results if r["mode"] == "checkpoint" for ok, what in checks(workload, r)]
    for r in results:
        if r["mode"] == "fcfs":
            warm = "" if r["warm_efficiency"] is None else f" ({r['warm_efficiency']:.3f} after the start-up load)"
            out.append(f"(peer) {r['pattern']}, K = {r['checkpoints']}, first come first served: efficiency"
                       f" {r['efficiency']:.3f}{warm}, {r['loads']} loads")
    out.append(f"{mark(all(not r['problems'] for r in results))} every job of every run done exactly once")
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--checkpoints", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--gpu-seconds", type=float, default=0.5, help="T (GAZE_SIMULATED_GPU_SECONDS)")
    parser.add_argument("--load-seconds", type=float, default=3.0, help="L (GAZE_SIMULATED_LOAD_SECONDS)")
    parser.add_argument("--max-wait", type=float, default=30.0, help="GAZE_SCHEDULER_MAX_WAIT_SECONDS")
    parser.add_argument("--load", type=float, default=0.8, help="the stream's rate, share of R / T")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--patterns", nargs="+", choices=PATTERNS, default=list(PATTERNS))
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--no-single", action="store_true", help="skip the single-checkpoint run")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run (48 jobs, T = 0.1 s, L = 0.5 s, max wait 3 s): checks that the"
                             " benchmark works; its figures are dominated by fixed costs, not the issue's")
    parser.add_argument("--timelines", action="store_true", help="print every run's per-replica timeline")
    parser.add_argument("--markdown")
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.gpu_seconds, args.load_seconds, args.max_wait = 48, 0.1, 0.5, 3.0
    workload = Workload(args.replicas, args.checkpoints, args.jobs, args.gpu_seconds, args.load_seconds,
                        args.max_wait, args.load, args.seed)
    plan = [(workload, pattern, mode) for pattern in args.patterns for mode in args.modes]
    if not args.no_single and args.checkpoints > 1:
        single = replace(workload, checkpoints=1)
        plan += [(single, "burst", mode) for mode in args.modes]
    results = []
    for each, pattern, mode in plan:
        results.append(run(each, pattern, mode))
        r = results[-1]
        log(f"{pattern}/{mode} K={each.checkpoints}: efficiency {r['efficiency']:.3f}, {r['loads']} loads,"
            f" makespan {r['makespan']:.1f} s, {len(r['problems'])} problem(s)")
    publish(report(workload, results, args.timelines), args.markdown)
    if any(r["problems"] for r in results):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
