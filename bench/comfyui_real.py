#!/usr/bin/env python3
"""GAZE against a real ComfyUI (issue 10): the same prompts through GAZE and straight to ComfyUI, and a soak.

    # a real ComfyUI at GAZE_COMFYUI_URL (see ../shared/reference/comfyui-on-cpu.md), pinned to core 0;
    # this script pins itself and the GAZE stack it starts to the other cores
    .venv/bin/python bench/comfyui_real.py compare --images 6 --rounds 3 --replicas 1 --checkpoint tiny_sd15.safetensors
    .venv/bin/python bench/comfyui_real.py soak --jobs 500 --replicas 2 --restart-cmd '/work/comfyui/stop.sh && /work/comfyui/start.sh'

compare: per round, N images through GAZE (N POSTs with explicit seeds, the stack's generators drive
ComfyUI with the bundled workflow template) and N prompts of the same workflow, size and steps submitted
to ComfyUI directly (all queued at once, then each image fetched with /view, as a direct client would),
alternating which goes first. Makespan: GAZE from just before the first POST to the jobs service
recording the last `done`; direct from just before the first POST /prompt to the last image fetched.
ComfyUI's idle time between consecutive prompts comes from its own /history timestamps
(execution_start of one minus execution_success of the one before). Seeds never repeat, so ComfyUI's
cache answers nothing.

soak: M jobs over R replicas sharing the one ComfyUI; a third of the way in, one replica's worker process
is killed (SIGKILL); half-way, ComfyUI is restarted with --restart-cmd. Counts: done, failed, still not
ended (stuck), lost (accepted but unknown), doubled (more than one image file for a job).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.stack import GAZE, PRESET, Proc, Stack, log, machine_description, percentile, publish  # noqa: E402
from services.generator.backends.comfyui import DEFAULT_WORKFLOW, Workflow  # noqa: E402
from shared.schemas import GenerationSpec  # noqa: E402


class ComfyStack(Stack):
    """The bench stack with its example preset set to the workflow's checkpoint, size and steps (before the
    presets service starts, so its read model has them from the first request)."""

    def __init__(self, workdir, args):
        super().__init__(workdir, presets=1)
        self.args = args

    def _add_presets(self):
        super()._add_presets()
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            conn.execute("UPDATE presets.presets SET checkpoint = %s, width = %s, height = %s, steps = %s,"
                         " sampler = 'euler', cfg = 6 WHERE slug = %s",
                         (self.args.checkpoint, self.args.size, self.args.size, self.args.steps, PRESET))


class Bench:
    def __init__(self, args):
        self.args = args
        self.url = args.comfyui_url.rstrip("/")
        self.workflow = Workflow.load(DEFAULT_WORKFLOW)
        self.stack = ComfyStack(Path(tempfile.mkdtemp(prefix="gaze-comfyui-")), args)

    def start(self):
        self.stack.start()
        for n in range(self.args.replicas):
            env = dict(self.stack.env, GAZE_BACKEND="comfyui", GAZE_COMFYUI_URL=self.url,
                       GAZE_REPLICA_NAME=f"bench-comfyui-{n}")
            self.stack.procs[f"generator-{n}"] = Proc.start(f"generator-{n}", [GAZE, "service", "generator"], env,
                                                           self.stack.workdir)
        self.stack.wait_for_replicas(self.args.replicas)

    # ---- the two ways in

    def through_gaze(self, seeds) -> float:
        started = time.time()
        ids = []
        for seed in seeds:
            answer = self.stack.session.post(f"{self.stack.url}/api/v1/generate/{PRESET}",
                                             json={"count": 1, "seed": seed}, timeout=30)
            answer.raise_for_status()
            ids += [job["job_id"] for job in answer.json()["jobs"]]
        rows = self.stack.wait_finished(ids, timeout=600)
        failed = [r for r in rows if r["status"] != "done"]
        if failed:
            raise SystemExit(f"{len(failed)} GAZE job(s) failed")
        return max(r["finished_at"] for r in rows) - started

    def direct(self, seeds) -> float:
        http = requests.Session()
        started = time.time()
        prompt_ids = []
        for seed in seeds:
            spec = self.spec(seed)
            answer = http.post(f"{self.url}/prompt", json={"prompt": self.workflow.fill(spec),
                                                           "client_id": uuid.uuid4().hex}, timeout=30)
            answer.raise_for_status()
            prompt_ids.append(answer.json()["prompt_id"])
        for prompt_id in prompt_ids:
            while True:
                entry = http.get(f"{self.url}/history/{prompt_id}", timeout=30).json().get(prompt_id)
                if entry and entry.get("status", {}).get("completed"):
                    break
                time.sleep(0.02)
            image = next(i for out in entry["outputs"].values() for i in out.get("images", []))
            http.get(f"{self.url}/view", params=image, timeout=30).raise_for_status()
        return time.time() - started

    def spec(self, seed):
        return GenerationSpec(preset_slug=PRESET, preset_name="bench", prompt="a lighthouse at dusk, bench",
                              negative="blurry", checkpoint=self.args.checkpoint, width=self.args.size,
                              height=self.args.size, steps=self.args.steps, cfg=6.0, sampler="euler", seed=seed)

    def gaps(self, seeds) -> list[float]:
        """ComfyUI's idle milliseconds between consecutive prompts of these seeds, from its /history."""
        history = requests.get(f"{self.url}/history", params={"max_items": 10000}, timeout=30).json()
        spans = []
        for entry in history.values():
            graph = entry["prompt"][2]
            if graph.get("3", {}).get("inputs", {}).get("seed") not in seeds:
                continue
            stamps = {m[0]: m[1].get("timestamp") for m in entry["status"]["messages"]}
            spans.append((stamps["execution_start"], stamps["execution_success"]))
        spans.sort()
        return [nxt[0] - cur[1] for cur, nxt in zip(spans, spans[1:])]

    # ---- the runs

    def compare(self):
        args, rounds = self.args, []
        seed = 10_000_000 + int(time.time()) % 1_000_000 * 100
        self.through_gaze([seed])     # warm-up: the checkpoint loads, the text encodings get cached
        self.direct([seed + 1])
        for n in range(args.rounds):
            gaze_seeds = [seed + 1000 * (n + 1) + i for i in range(args.images)]
            direct_seeds = [seed + 1000 * (n + 1) + 500 + i for i in range(args.images)]
            order = ("gaze", "direct") if n % 2 == 0 else ("direct", "gaze")
            result = {}
            for way in order:
                result[way] = self.through_gaze(gaze_seeds) if way == "gaze" else self.direct(direct_seeds)
                log(f"round {n + 1}: {way} {result[way]:.2f} s")
            result["gaze_gaps_ms"] = self.gaps(set(gaze_seeds))
            result["direct_gaps_ms"] = self.gaps(set(direct_seeds))
            rounds.append(result)
        gaze_gaps = [g for r in rounds for g in r["gaze_gaps_ms"]]
        direct_gaps = [g for r in rounds for g in r["direct_gaps_ms"]]
        lines = [f"### GAZE → real ComfyUI vs ComfyUI alone ({args.images} images × {args.rounds} rounds, "
                 f"{args.replicas} replica(s), {args.size}², {args.steps} steps)", "",
                 "| round | GAZE makespan (s) | ComfyUI alone (s) | ratio |", "|---|---|---|---|"]
        for n, r in enumerate(rounds, 1):
            lines.append(f"| {n} | {r['gaze']:.2f} | {r['direct']:.2f} | {r['gaze'] / r['direct']:.3f} |")
        total_gaze, total_direct = sum(r["gaze"] for r in rounds), sum(r["direct"] for r in rounds)
        ratios = [r["gaze"] / r["direct"] for r in rounds]
        lines += ["", f"Sum over rounds: GAZE {total_gaze:.2f} s, alone {total_direct:.2f} s, ratio "
                      f"**{total_gaze / total_direct:.3f}** (median of rounds {statistics.median(ratios):.3f}).",
                  f"ComfyUI idle between consecutive prompts (its /history timestamps): through GAZE p50 "
                  f"**{percentile(gaze_gaps, 50):.0f} ms**, max {max(gaze_gaps, default=float('nan')):.0f} ms "
                  f"({len(gaze_gaps)} gaps); fed directly p50 {percentile(direct_gaps, 50):.0f} ms, max "
                  f"{max(direct_gaps, default=float('nan')):.0f} ms.", "", self.machine()]
        publish("\n".join(lines), args.markdown)
        if args.json:
            Path(args.json).write_text(json.dumps(rounds, indent=1))

    def soak(self):
        args = self.args
        seed = 20_000_000 + int(time.time()) % 1_000_000 * 1000
        ids, killed, restarted = [], None, False
        started = time.time()
        for n in range(args.jobs):
            answer = self.stack.session.post(f"{self.stack.url}/api/v1/generate/{PRESET}",
                                             json={"count": 1, "seed": seed + n}, timeout=30)
            answer.raise_for_status()
            ids += [job["job_id"] for job in answer.json()["jobs"]]
        log(f"{len(ids)} jobs accepted")
        while True:
            counts = self.stack.job_rows()
            finished = counts.get("done", 0) + counts.get("failed", 0)
            if killed is None and finished >= args.jobs // 3:
                killed = self.kill_a_worker()
            if not restarted and finished >= args.jobs // 2:
                log(f"restarting ComfyUI: {args.restart_cmd}")
                subprocess.run(args.restart_cmd, shell=True, check=True)
                restarted = True
            if finished >= len(ids) or time.time() - started > args.timeout:
                break
            time.sleep(1)
        rows = self.stack.wait_finished(ids, timeout=5) if finished >= len(ids) else []
        with psycopg.connect(self.stack.db_url, autocommit=True) as conn:
            states = dict(conn.execute("SELECT status, count(*) FROM jobs.jobs WHERE id = ANY(%s::uuid[])"
                                       " GROUP BY status", (ids,)).fetchall())
            known = sum(states.values())
            errors = conn.execute("SELECT error, count(*) FROM jobs.jobs WHERE status = 'failed' GROUP BY error"
                                  ).fetchall()
            restarts = conn.execute("SELECT replica, restarts FROM jobs.replicas").fetchall()
        files = {}
        for path in (self.stack.workdir / "media").rglob("*.png"):
            job = path.stem.rsplit("_", 1)[-1]
            files[job] = files.get(job, 0) + 1
        doubled = sum(1 for count in files.values() if count > 1)
        lines = [f"### Soak: {len(ids)} jobs over {args.replicas} replicas sharing one real ComfyUI", "",
                 f"- a worker process SIGKILLed at {args.jobs // 3} finished jobs ({killed}); ComfyUI restarted "
                 f"at {args.jobs // 2} ({'done' if restarted else 'not reached'})",
                 f"- done {states.get('done', 0)}, failed {states.get('failed', 0)}, stuck (not ended) "
                 f"{sum(v for k, v in states.items() if k not in ('done', 'failed'))}, lost "
                 f"{len(ids) - known}, doubled {doubled}; makespan {time.time() - started:.0f} s",
                 f"- worker restarts per replica: {', '.join(f'{r}: {n}' for r, n in restarts)}"]
        lines += [f"- failed: {count} × {error}" for error, count in errors]
        lines += ["", self.machine()]
        publish("\n".join(lines), args.markdown)
        return rows

    def kill_a_worker(self):
        found = subprocess.run(["pgrep", "-f", "services.generator.worker"], capture_output=True, text=True)
        pids = [int(p) for p in found.stdout.split()]
        if not pids:
            return "no worker found"
        os.kill(pids[0], signal.SIGKILL)
        log(f"killed worker process {pids[0]}")
        return f"pid {pids[0]}"

    def machine(self):
        info = machine_description()
        system = requests.get(f"{self.url}/system_stats", timeout=10).json()["system"]
        return (f"Machine: {info['cpu_model']}, {os.cpu_count()} cores; ComfyUI "
                f"{system.get('comfyui_version')} on the CPU (affinity set outside this script), GAZE pinned "
                f"to CPUs {sorted(os.sched_getaffinity(0))}; checkpoint {self.args.checkpoint}.")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["compare", "soak"])
    parser.add_argument("--comfyui-url", default=os.environ.get("GAZE_COMFYUI_URL", "http://127.0.0.1:8188"))
    parser.add_argument("--checkpoint", default="tiny_sd15.safetensors")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--restart-cmd", default="/work/comfyui/stop.sh && /work/comfyui/start.sh")
    parser.add_argument("--gaze-cpus", default="1", help="CPUs for this script and the GAZE stack ('' = all)")
    parser.add_argument("--markdown")
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.gaze_cpus:
        os.sched_setaffinity(0, {int(c) for c in args.gaze_cpus.split(",")})
    bench = Bench(args)
    try:
        bench.start()
        bench.compare() if args.mode == "compare" else bench.soak()
    finally:
        bench.stack.stop()


if __name__ == "__main__":
    main()
