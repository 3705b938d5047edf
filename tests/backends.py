"""Backends for the runtime tests, plugged in as GAZE_BACKEND=tests.backends:ScriptedBackend.

The prompt says what the job does, so one stack serves every case:
- plain prompt: log a line, GET an HTTP URL through one `requests` session shared by every job (the
  backend's own code doing what ComfyUI's does: logging and HTTP at the moment the replica logs
  `started`), report each step, log again, return a small preview picture;
- "hang": block for good, with no sign of life;
- "crash-exit": `os._exit(3)` (a C extension calling exit); "crash-segv": SIGSEGV to itself;
- "crash-once:<path>": crash unless <path> exists (created first), so the retry succeeds;
- "fail": fail at once with a readable error (a BackendError), as a bad checkpoint does;
- "slow:<seconds>": that long in 20 steps, stopping when cancelled;
- "stubborn:<seconds>": that long, reporting steps but ignoring a cancel (only a kill stops it).

The probe URL is GAZE_TEST_PROBE_URL, else the stack's own /healthz (GAZE_PUBLIC_URL), else none.
"""
from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

import requests

from services.generator.backends.preview import PreviewBackend, render
from services.generator.backends.base import (BackendError, GeneratedImage, JobCancelled, as_context, encode_png,
                                              png_metadata)

log = logging.getLogger("tests.backends")


class ScriptedBackend:
    name = "scripted"
    pipelined = False

    def __init__(self):
        self.preview = PreviewBackend()
        self.http = requests.Session()
        public = os.environ.get("GAZE_PUBLIC_URL")
        self.url = os.environ.get("GAZE_TEST_PROBE_URL") or (public + "/healthz" if public else None)

    def health(self):
        return True, "scripted test backend"

    def checkpoints(self):
        return None

    def generate(self, spec, job=None):
        job = as_context(job)
        prompt = spec.prompt
        if "hang" in prompt.split():
            log.info("hanging for good")
            while True:
                time.sleep(3600)
        if "fail" in prompt.split():
            raise BackendError("scripted failure")
        if "crash-exit" in prompt:
            os._exit(3)
        if "crash-segv" in prompt:
            os.kill(os.getpid(), signal.SIGSEGV)
        for word in prompt.split():
            if word.startswith("crash-once:"):
                marker = Path(word.split(":", 1)[1])
                if not marker.exists():
                    marker.touch()
                    os._exit(4)
            if word.startswith(("slow:", "stubborn:")):
                kind, seconds = word.split(":")
                self._wait(job, float(seconds), cancellable=kind == "slow")
        log.info("job started in the backend: %s", prompt[:40])
        if self.url:
            self.http.get(self.url, timeout=10).raise_for_status()
        steps = max(1, spec.steps)
        for step in range(steps):
            job.progress(step + 1, steps)
        log.info("job finished in the backend")
        metadata = png_metadata(spec, self.name)
        return GeneratedImage(encode_png(render(spec), metadata), spec.width, spec.height, metadata)

    @staticmethod
    def _wait(job, seconds, cancellable):
        until = time.monotonic() + seconds
        step = 0
        while time.monotonic() < until:
            if cancellable and job.cancelled():
                raise JobCancelled("cancelled")
            time.sleep(seconds / 20)
            step += 1
            job.progress(min(step, 20), 20)
