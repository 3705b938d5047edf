#!/usr/bin/env python3
"""The gateway under load from wrk on loopback (issue 5), against this machine's ceiling.

    .venv/bin/python bench/gateway_load.py [--duration 30] [--connections 32] [--threads 2]
                                           [--markdown FILE] [--json FILE] [--per-state]

Needs wrk (`make bench-tools`, or `apt-get install -y wrk`), PostgreSQL and RabbitMQ as for the tests
(admin database GAZE_TEST_ADMIN_DATABASE_URL, broker GAZE_TEST_AMQP_BASE, `rabbitmqctl` on PATH).

What it does, in order:

1. Starts an isolated stack, the way tests/stack.py does: its own database, RabbitMQ vhost,
   port, media and run directories, so a dev stack on the same machine is never touched. The processes
   are the ones `gaze up` supervises, started one by one so the generator can be stopped on its own:
   the gateway (gunicorn with services/gateway/gunicorn_conf.py, as in deploy/supervisord.conf), the
   presets and jobs services; `gaze init` migrates and makes the API key; the preset list gets
   --presets presets in all.
2. Prepares jobs in each state: `done` (a generator runs, finishes them, is stopped with SIGTERM),
   `pending` (submitted with no generator running) and `processing` (submitted with no generator
   running, then started exactly as a generator starts a job: the jobs.claim RPC, a job_started and a
   job_progress event, from a replica that does not exist, so they stay `processing` for the whole run
   and every part of the stack, a read model included, records them as it records real ones).
3. Runs each scenario with wrk (-t THREADS -c CONNECTIONS -d DURATION --latency, after a short warm-up
   run that is not counted) through bench/wrk_report.lua, which counts every non-2xx answer:
     ceiling   a bare Falcon app (bench/bare_falcon.py) served by gunicorn with the gateway's own
               configuration file, returning a constant JSON
     polls     GET /api/v1/job/<id>, rotating over the pending, processing and done jobs
     presets   GET /api/v1/presets
     submit    POST /api/v1/generate/example_01 {"count": 1}, with no generator running: every job
               stays pending and its work message waits in the queue
   and the CPU each part of the stack used meanwhile (from /proc).
4. Checks that every accepted submission is a pending row and a queued message, then removes
   everything: the stack is stopped, its database dropped (every job row with it), its vhost deleted
   (the work queue and the messages in it with it), its Redis keys deleted (the stack runs with
   GAZE_REDIS_PREFIX set to its database's name, as the e2e tests do) and its working directory removed.

Prints the machine, a markdown table (scenario, req/s, p50, p99, errors, ratio to the ceiling, target,
met?) and the CPU breakdown; --markdown writes the same text to a file, --json the raw numbers.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.stack import (GUNICORN, GUNICORN_CONF, PRESET, REPLICA, ROOT, WORK_QUEUE, CpuMeter, Proc, Stack,  # noqa: E402
                         free_port, log, machine_description, queue_state)
from shared import config  # noqa: E402

LUA = ROOT / "bench" / "wrk_report.lua"
BARE_APP = "bench.bare_falcon:app"
POLL_RATIO, POLL_P99_MS, SUBMIT_RPS = 0.3, 30.0, 300.0
WRK_MISSING = ("wrk is not installed. Install it with `make bench-tools` "
               "or `apt-get install -y wrk` (Debian's package), then run this again.")

# --- wrk ------------------------------------------------------------------------------------------------

def run_wrk(url, args, duration, *, paths=None, method="GET", body=None, key=None) -> dict:
    env = dict(os.environ, GAZE_WRK_PATHS=str(paths or ""), GAZE_WRK_METHOD=method, GAZE_WRK_BODY=body or "",
               GAZE_WRK_KEY=key or "")
    argv = ["wrk", "-t", str(args.threads), "-c", str(args.connections), "-d", f"{duration}s",
            "--timeout", f"{args.timeout}s", "--latency", "-s", str(LUA), url]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=duration + 60)
    for line in out.stdout.splitlines():
        if line.startswith("GAZE_WRK_RESULT "):
            result = json.loads(line.split(" ", 1)[1])
            sock = result["socket_errors"]
            result["errors"] = int(result["non_2xx"] + sock["connect"] + sock["read"] + sock["write"]
                                   + sock["timeout"])
            result["command"] = shlex.join(argv)
            result["wrk_output"] = out.stdout
            return result
    raise SystemExit(f"wrk gave no result (exit {out.returncode}):\n{out.stdout}\n{out.stderr}")


@dataclass
class Scenario:
    key: str
    title: str
    url: str
    paths: Path | None = None
    method: str = "GET"
    body: str | None = None
    target: str = "—"
    result: dict = field(default_factory=dict)
    cpu: dict = field(default_factory=dict)

    def measure(self, args, api_key, meter: CpuMeter):
        if args.warmup:
            run_wrk(self.url, args, args.warmup, paths=self.paths, method=self.method, body=self.body, key=api_key)
        log(f"{self.key}: wrk -c {args.connections} -d {args.duration}s")
        meter.start()
        self.result = run_wrk(self.url, args, args.duration, paths=self.paths, method=self.method,
                              body=self.body, key=api_key)
        self.cpu = meter.stop()
        r = self.result
        log(f"{self.key}: {r['rps']:.0f} req/s, p50 {r['latency_ms']['p50']:.1f} ms, "
            f"p99 {r['latency_ms']['p99']:.1f} ms, errors {r['errors']}")


def verdict(scenario: Scenario, ceiling_rps) -> tuple[str, str]:
    """(ratio to the ceiling, met?) for the table."""
    r = scenario.result
    ratio = r["rps"] / ceiling_rps if ceiling_rps else float("nan")
    if scenario.key == "ceiling":
        return "1.00", "—"
    if scenario.key == "submit":
        ok = r["rps"] >= SUBMIT_RPS and r["errors"] == 0
    else:
        ok = ratio >= POLL_RATIO and r["latency_ms"]["p99"] <= POLL_P99_MS and r["errors"] == 0
    return f"{ratio:.2f}", "yes" if ok else "**no**"


def errors_cell(r) -> str:
    if not r["errors"]:
        return "0"
    parts = [f"{code}×{int(n)}" for code, n in sorted(r["non_2xx_statuses"].items())]
    parts += [f"{name} {int(n)}" for name, n in r["socket_errors"].items() if n]
    return f"{r['errors']} ({', '.join(parts)})"


CPU_COLUMNS = ("wrk", "gateway", "presets", "jobs", "rabbitmq", "postgres", "redis", "bare", "other", "machine")


def report(args, machine, scenarios, notes) -> str:
    ceiling = next((s.result["rps"] for s in scenarios if s.key == "ceiling"), 0.0)
    m = machine
    lines = [
        "## Gateway under load (wrk on loopback)",
        "",
        f"Machine: {m['nproc']} cores (nproc), {m['cpu_model']}, {m['memory_gib']} GiB; Linux {m['kernel']}; "
        f"Python {m['python']}, gunicorn {m['gunicorn']} ({args.gunicorn}), Falcon {m['falcon']}, wrk {m['wrk']}; "
        f"PostgreSQL {m['postgresql']} and RabbitMQ {m['rabbitmq'] or '?'} on the same machine. "
        f"Load average at start: {' / '.join(f'{x:.2f}' for x in m['loadavg_at_start'])}.",
        "",
        f"Command: `{args.command}`. Each scenario: `wrk -t {args.threads} -c {args.connections} "
        f"-d {args.duration}s --timeout {args.timeout}s --latency -s bench/wrk_report.lua`"
        + (f", after a {args.warmup} s warm-up run that is not counted" if args.warmup else "")
        + ". Errors are non-2xx answers plus wrk's socket errors (connect, read, write, timeout).",
        "",
        "| scenario | req/s | p50 | p99 | errors | ratio to ceiling | target | met? |",
        "|---|---:|---:|---:|---|---:|---|---|",
    ]
    for s in scenarios:
        r = s.result
        ratio, met = verdict(s, ceiling)
        lines.append(f"| {s.title} | {r['rps']:,.0f} | {r['latency_ms']['p50']:.1f} ms | "
                     f"{r['latency_ms']['p99']:.1f} ms | {errors_cell(r)} | {ratio} | {s.target} | {met} |")
    lines += ["", f"CPU used during each measured run, in cores (of {m['nproc']}; from /proc, "
                  "`other` = processes outside this benchmark's stack, `machine` = all CPU time, kernel included):",
              "", "| scenario | " + " | ".join(CPU_COLUMNS) + " |", "|---|" + "---:|" * len(CPU_COLUMNS)]
    for s in scenarios:
        lines.append(f"| {s.key} | " + " | ".join(f"{s.cpu.get(c, 0.0):.2f}" for c in CPU_COLUMNS) + " |")
    busiest = max(scenarios, key=lambda s: s.cpu.get("other", 0.0), default=None)
    if busiest and busiest.cpu.get("other", 0.0) > 0.2:
        lines += ["", f"**The machine was not quiet:** processes outside this benchmark used up to "
                      f"{busiest.cpu['other']:.2f} cores (during `{busiest.key}`); these numbers understate it."]
    lines += ["", *notes]
    return "\n".join(lines) + "\n"


# --- main -----------------------------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", "--duration", type=int, default=30, help="seconds per measured wrk run (30)")
    parser.add_argument("-c", "--connections", type=int, default=32, help="concurrent connections (32)")
    parser.add_argument("-t", "--threads", type=int, default=2, help="wrk threads (2)")
    parser.add_argument("--timeout", type=int, default=2, help="wrk's request timeout in seconds (2)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="seconds of uncounted wrk warm-up per scenario (2; 0: none)")
    parser.add_argument("--jobs-per-state", type=int, default=20, help="pending, processing and done jobs each (20)")
    parser.add_argument("--presets", type=int, default=20, help="presets in the list, example included (20)")
    parser.add_argument("--per-state", action="store_true",
                        help="also poll pending-only, processing-only and done-only jobs, one run each")
    parser.add_argument("--scenarios", default="ceiling,polls,presets,submit",
                        help="comma-separated subset of ceiling,polls,presets,submit")
    parser.add_argument("--markdown", type=Path, help="also write the report to this file")
    parser.add_argument("--json", type=Path, help="write the raw results (wrk output included) to this file")
    parser.add_argument("--keep-workdir", action="store_true", help="keep the stack's logs and media")
    args = parser.parse_args()
    args.command = ".venv/bin/python bench/gateway_load.py " + shlex.join(sys.argv[1:])
    wanted = [s.strip() for s in args.scenarios.split(",") if s.strip()]

    if not shutil.which("wrk"):
        raise SystemExit(WRK_MISSING)
    settings = config.load()
    args.gunicorn = (f"uvicorn workers + a2wsgi, {settings.gateway_workers} workers × {settings.gateway_threads} threads, "
                     "services/gateway/gunicorn_conf.py")
    machine = machine_description()
    log(f"machine: {machine['nproc']} cores, {machine['cpu_model']}, {machine['memory_gib']} GiB; "
        f"gateway: {args.gunicorn}")

    workdir = Path(tempfile.mkdtemp(prefix="gaze-gateway-load-"))
    stack = Stack(workdir, presets=max(1, args.presets))
    scenarios: list[Scenario] = []
    notes: list[str] = []
    bare = None
    try:
        log(f"starting an isolated stack in {workdir}")
        stack.start()
        jobs = stack.prepare_jobs(args.jobs_per_state)
        mixed = workdir / "paths-mixed.txt"
        mixed.write_text("".join(f"/api/v1/job/{job_id}\n" for trio in zip(jobs["pending"], jobs["processing"],
                                                                              jobs["done"]) for job_id in trio))
        groups = {p.pgrp: name for name, p in stack.procs.items()}
        meter = CpuMeter(groups)
        n = args.jobs_per_state
        poll_target = f"≥ {POLL_RATIO} × ceiling, p99 ≤ {POLL_P99_MS:.0f} ms, 0 errors"

        if "ceiling" in wanted:
            port = free_port()
            bare_env = dict(stack.env, GAZE_BIND=f"127.0.0.1:{port}", GAZE_RUN_DIR=str(workdir / "bare-run"),
                            PROMETHEUS_MULTIPROC_DIR=str(workdir / "bare-run" / "prometheus"))
            (workdir / "bare-run").mkdir()
            bare = Proc.start("bare", [GUNICORN, "--config", GUNICORN_CONF, BARE_APP], bare_env, workdir)
            groups[bare.pgrp] = "bare"
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(requests.RequestException):
                    if requests.get(f"http://127.0.0.1:{port}/ceiling", timeout=5).status_code == 200:
                        break
                if time.monotonic() > deadline or not bare.alive():
                    raise SystemExit(f"the bare Falcon app did not come up:\n{bare.tail()}")
                time.sleep(0.2)
            s = Scenario("ceiling", "ceiling: bare Falcon app, constant JSON, same gunicorn settings",
                         f"http://127.0.0.1:{port}/ceiling")
            s.measure(args, None, meter)
            scenarios.append(s)
            bare.stop()
            bare = None

        if "polls" in wanted:
            s = Scenario("polls", f"job-status polls, GET /api/v1/job/<id> rotating over {n} pending, "
                                  f"{n} processing, {n} done", stack.url + "/", paths=mixed, target=poll_target)
            s.measure(args, stack.key, meter)
            scenarios.append(s)
            if args.per_state:
                for status in ("pending", "processing", "done"):
                    paths = workdir / f"paths-{status}.txt"
                    paths.write_text("".join(f"/api/v1/job/{job_id}\n" for job_id in jobs[status]))
                    s = Scenario(f"polls-{status}", f"job-status polls, {n} {status} jobs only", stack.url + "/",
                                 paths=paths, target=poll_target)
                    s.measure(args, stack.key, meter)
                    scenarios.append(s)

        if "presets" in wanted:
            s = Scenario("presets", f"presets list, GET /api/v1/presets ({stack.presets} presets)",
                         stack.url + "/api/v1/presets", target=poll_target)
            s.measure(args, stack.key, meter)
            scenarios.append(s)

        if "submit" in wanted:
            before = sum(stack.job_rows().values())
            queue_before = queue_state(stack.vhost)
            body = json.dumps({"count": 1})
            s = Scenario("submit", f"submissions, POST /api/v1/generate/{PRESET} {body}",
                         f"{stack.url}/api/v1/generate/{PRESET}", method="POST", body=body,
                         target=f"≥ {SUBMIT_RPS:.0f}/s, 0 errors")
            # count the warm-up's submissions too: run it here, then the measured run without one
            warm = run_wrk(s.url, args, args.warmup, method="POST", body=body, key=stack.key) if args.warmup else None
            warmup, args.warmup = args.warmup, 0
            s.measure(args, stack.key, meter)
            args.warmup = warmup
            scenarios.append(s)
            accepted = int(s.result["ok_2xx"] + (warm["ok_2xx"] if warm else 0))
            # wrk stops with up to one request per connection in flight: the gateway still serves those.
            # Wait until the job rows and the queued messages stop growing before counting them.
            created = queued = -1
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                time.sleep(1.0)
                now = (sum(stack.job_rows().values()) - before,
                       queue_state(stack.vhost)["messages"] - queue_before["messages"])
                if now == (created, queued):
                    break
                created, queued = now
            consumers = queue_state(stack.vhost)["consumers"]
            in_flight = created - accepted
            consistent = created == queued and 0 <= in_flight <= 2 * args.connections
            notes.append(
                f"Submissions: no generator process was running (the one that finished the `done` jobs had been "
                f"stopped with SIGTERM; the work queue had {consumers} consumers), so every job stayed `pending`. "
                f"{accepted:,} submissions answered 202 to wrk (warm-up run included) and {created - accepted:,} more "
                f"were in flight when wrk stopped (at most one per connection per run, served after wrk had hung "
                f"up): {created:,} new job rows, {queued:,} new messages in `{WORK_QUEUE}`"
                + ("." if consistent else " — **rows and messages should be equal, and the surplus over the 202s at "
                   f"most {2 * args.connections}**."))
        notes.append(
            f"Data: {n} `done` jobs (256×256, finished by one CPU-preview generator, which was then stopped), "
            f"{n} `pending` jobs (submitted with no generator running) and {n} `processing` jobs (submitted the "
            f"same way, then started the way a generator starts a job: the jobs.claim RPC, a job_started and a "
            f"job_progress event, from replica `{REPLICA}`; no generator runs, so they stay `processing`). "
            f"The presets list holds the example preset and {stack.presets - 1} copies of it.")
    finally:
        if bare:
            bare.stop()
        stack.stop(keep_workdir=args.keep_workdir)
    notes.append("Isolated stack (own database, RabbitMQ vhost, Redis key prefix, port and directories; gateway, "
                 "presets and jobs processes as `gaze up` runs them). Clean-up after the run: every process "
                 "stopped, " + "; ".join(stack.cleanup_notes) + ".")

    text = report(args, machine, scenarios, notes)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "command": args.command,
                                         "scenarios": [{"key": s.key, "title": s.title, "target": s.target,
                                                        "result": s.result, "cpu_cores": s.cpu} for s in scenarios],
                                         "notes": notes}, indent=2))


if __name__ == "__main__":
    main()
