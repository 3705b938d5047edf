"""A stand-in for a GPU: blocks its thread for a fixed time, as a CUDA call would, then draws the preview.

Used by the heartbeat test (a job longer than two heartbeat intervals) and the scaling benchmark
(each job holds its replica for exactly T seconds). `time.sleep` is taken from the unpatched module on
purpose: under eventlet the patched one would yield, hiding exactly the blocking this simulates.
"""
from __future__ import annotations

from eventlet import patcher

from services.generator.backends import GeneratedImage
from services.generator.backends.preview import PreviewBackend

_blocking_sleep = patcher.original("time").sleep


class SimulatedGpuBackend:
    name = "simulated"

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.preview = PreviewBackend()

    def generate(self, spec, on_progress=None) -> GeneratedImage:
        _blocking_sleep(self.seconds)
        image = self.preview.generate(spec)
        image.metadata["backend"] = self.name
        return image
