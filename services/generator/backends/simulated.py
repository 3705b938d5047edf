"""A stand-in for a GPU: holds its thread for a fixed time per job, blocking as a CUDA call would.

Used by the heartbeat test (a job longer than two heartbeat intervals) and the scaling benchmark
(each job holds its replica for exactly T seconds: drawing the small preview picture counts towards T). `time.sleep` is taken from the unpatched module on
purpose: under eventlet the patched one would yield, hiding exactly the blocking this simulates.
"""
from __future__ import annotations

from eventlet import patcher

from services.generator.backends import GeneratedImage
from services.generator.backends.preview import PreviewBackend

_blocking_sleep = patcher.original("time").sleep
_monotonic = patcher.original("time").monotonic


class SimulatedGpuBackend:
    name = "simulated"

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.preview = PreviewBackend()

    def generate(self, spec, on_progress=None) -> GeneratedImage:
        started = _monotonic()
        image = self.preview.generate(spec)
        _blocking_sleep(max(0.0, self.seconds - (_monotonic() - started)))
        image.metadata["backend"] = self.name
        return image
