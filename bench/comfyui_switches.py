#!/usr/bin/env python3
"""Checkpoint switches as the ComfyUI backend reports them, against a real ComfyUI's own record (issue 15).

    # a real ComfyUI at GAZE_COMFYUI_URL with two checkpoints (../shared/reference/comfyui-on-cpu.md)
    .venv/bin/python bench/comfyui_switches.py --a tiny_a.safetensors --b tiny_b.safetensors --sequence aabbab
    .venv/bin/python bench/comfyui_switches.py --pipelined ...     # all prompts queued in ComfyUI at once

Runs the backend directly (no GAZE stack), one job per letter of --sequence, each with a JobContext that
records the loads the backend reports (JobContext.model_loaded). Sequential by default; with --pipelined
every job runs on a thread of its own and its prompt waits in ComfyUI's queue behind the previous one, as
in the replica's worker process. Then it reads each prompt's /history entry: ComfyUI's own word on whether
the workflow's loader node ran (a load) or was answered from its cache (`execution_cached`). Prints one
row per job; exits 1 when a report disagrees with the history (a load reported for a cached loader, or
none for one that ran), 2 when a job failed.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.generator.backends.base import CallbackContext  # noqa: E402
from services.generator.backends.comfyui import ComfyUIBackend  # noqa: E402
from shared.schemas import GenerationSpec  # noqa: E402


class Recorder(CallbackContext):
    """A job's context that keeps what the backend told: its prompt ids and its loads."""

    def __init__(self, job_id):
        super().__init__()
        self.job_id = job_id
        self.handles: list[str] = []
        self.loads: list[tuple[str, float]] = []

    def submitted(self, handle):
        self.handles.append(handle)

    def model_loaded(self, checkpoint, seconds, resident=None):
        self.loads.append((checkpoint, seconds))


def spec(checkpoint, seed, args) -> GenerationSpec:
    return GenerationSpec(preset_slug="bench", preset_name="bench", prompt="a lighthouse at dusk, switches",
                          negative="blurry", checkpoint=checkpoint, width=args.size, height=args.size,
                          steps=args.steps, cfg=6.0, sampler="euler", seed=seed)


def queued(url, prompt_id) -> bool:
    """ComfyUI holds the prompt: waiting, running or finished."""
    queue = requests.get(f"{url}/queue", timeout=30).json()
    if any(item[1] == prompt_id for item in queue["queue_running"] + queue["queue_pending"]):
        return True
    return bool(requests.get(f"{url}/history/{prompt_id}", timeout=30).json())


def run_jobs(backend, checkpoints, args) -> tuple[list[Recorder], list]:
    """Each job's Recorder, and its error (None when it succeeded)."""
    seed = int(time.time()) % 1_000_000 * 100      # new seeds on every run: no prompt is answered whole from cache
    jobs = [Recorder(f"job-{n + 1}") for n in range(len(checkpoints))]
    errors: list = [None] * len(jobs)

    def one(n):
        try:
            backend.generate(spec(checkpoints[n], seed + n, args), jobs[n])
        except Exception as exc:  # reported in the table
            errors[n] = exc

    if not args.pipelined:
        for n in range(len(jobs)):
            one(n)
        return jobs, errors
    threads = []
    for n in range(len(jobs)):
        threads.append(threading.Thread(target=one, args=(n,), daemon=True))
        threads[-1].start()
        # the next job submits once ComfyUI holds this one's prompt: its queue's order is the sequence's
        deadline = time.monotonic() + 30
        while not (jobs[n].handles and queued(backend.url, jobs[n].handles[-1])):
            if time.monotonic() > deadline:
                raise SystemExit(f"job {n + 1}'s prompt did not reach ComfyUI's queue in 30 s")
            time.sleep(0.02)
    for thread in threads:
        thread.join()
    return jobs, errors


def comfyui_view(url, prompt_id, loader_nodes) -> tuple[str, float | None]:
    """("cached" | "executed" | "unknown: ...", ComfyUI's seconds for the whole prompt) from /history."""
    entry = requests.get(f"{url}/history/{prompt_id}", timeout=30).json().get(prompt_id)
    if not entry:
        return "unknown: no history entry", None
    messages = {kind: data for kind, data in entry["status"]["messages"]}
    span = None
    start, end = messages.get("execution_start"), messages.get("execution_success")
    if start and end and "timestamp" in start and "timestamp" in end:
        span = (end["timestamp"] - start["timestamp"]) / 1000
    cached = set(messages.get("execution_cached", {}).get("nodes", []))
    if loader_nodes <= cached:
        return "cached", span
    if entry["status"].get("status_str") == "success":
        return "executed", span
    return "unknown: the prompt failed", span


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comfyui-url", default=os.environ.get("GAZE_COMFYUI_URL", "http://127.0.0.1:8188"))
    parser.add_argument("--a", default="tiny_a.safetensors", help="the checkpoint of the letter a")
    parser.add_argument("--b", default="tiny_b.safetensors", help="the checkpoint of the letter b")
    parser.add_argument("--sequence", default="aabbab", help="one job per letter, a or b")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--pipelined", action="store_true", help="queue every prompt in ComfyUI at once")
    args = parser.parse_args()
    names = {"a": args.a, "b": args.b}
    if not args.sequence or set(args.sequence) - set(names):
        parser.error("--sequence is made of the letters a and b")
    url = args.comfyui_url.rstrip("/")
    backend = ComfyUIBackend(url, timeout_seconds=600, retry_seconds=10, poll_seconds=0.5)
    ok, detail = backend.health()
    if not ok:
        raise SystemExit(detail)
    missing = {names[letter] for letter in args.sequence} - set(backend.checkpoints())
    if missing:
        raise SystemExit(f"not installed on {url}: {', '.join(sorted(missing))}")

    checkpoints = [names[letter] for letter in args.sequence]
    started = time.monotonic()
    jobs, errors = run_jobs(backend, checkpoints, args)
    elapsed = time.monotonic() - started

    loader_nodes = set(backend.loader_nodes)
    mode = "pipelined (all queued at once)" if args.pipelined else "sequential"
    print(f"### ComfyUI checkpoint switches: reported by the backend vs ComfyUI's /history "
          f"({args.sequence}, {mode}, {args.size}², {args.steps} steps)\n")
    print(f"| job | checkpoint | switch reported | ComfyUI: loader node {', '.join(sorted(loader_nodes))} "
          f"| prompt (ComfyUI) | agrees |")
    print("|---|---|---|---|---|---|")
    disagreements = failures = 0
    for job, checkpoint, error in zip(jobs, checkpoints, errors):
        reported = (f"yes, {sum(s for _, s in job.loads):.2f} s" + (f" ({len(job.loads)} reports)"
                                                                     if len(job.loads) > 1 else "")
                    if job.loads else "no")
        view, span = comfyui_view(url, job.handles[-1], loader_nodes) if job.handles else ("not submitted", None)
        if error is not None:
            failures += 1
            view += f"; job failed: {error}"
        agrees = (view == "executed" and len(job.loads) == 1) or (view == "cached" and not job.loads)
        disagreements += not agrees
        print(f"| {job.job_id} | {checkpoint} | {reported} | {view} | "
              f"{f'{span:.2f} s' if span is not None else '?'} | {'yes' if agrees else '**NO**'} |")
    loads = sum(len(job.loads) for job in jobs)
    print(f"\n{loads} loads reported over {len(jobs)} jobs in {elapsed:.1f} s; {disagreements} disagreement(s) "
          f"with ComfyUI's history; the backend's last checkpoint: {backend.loaded_checkpoint}.")
    print(f"ComfyUI at {url}: {detail}")
    if failures:
        sys.exit(2)
    if disagreements:
        sys.exit(1)


if __name__ == "__main__":
    main()
