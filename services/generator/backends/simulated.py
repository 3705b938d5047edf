"""A stand-in for a GPU: holds its worker for a fixed time per job, blocking as a CUDA call would.

Used by the heartbeat test (a job longer than two heartbeat intervals) and the scaling and checkpoint
benchmarks (each job holds its replica for exactly T seconds: drawing the small preview picture counts
towards T). The wait is cut into the job's steps, each reported as progress (the sign of life a real
sampler gives), and a cancelled job stops at the next step.

It holds one checkpoint at a time, as a GPU holds one model: a job for another checkpoint than the one
held first "loads" it for GAZE_SIMULATED_LOAD_SECONDS (L), inside the job (it is that job's GPU time, after
its start) and before its T seconds, and reports the switch (JobContext.model_loaded). A load is cut into
short slices, each a sign of life and a chance to stop when the job is cancelled; a cancelled load keeps
the checkpoint held before, as a model swapped in only once it is complete would.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from services.generator.backends.base import GeneratedImage, JobCancelled, as_context
from services.generator.backends.preview import PreviewBackend

LOAD_SLICE_SECONDS = 0.1     # a load looks at its job's cancel (and shows life) this often


@dataclass(frozen=True)
class SimulatedSettings:
    """GAZE_BACKEND=simulated: each field read from GAZE_<FIELD NAME> (shared/config.py)."""

    simulated_gpu_seconds: float = 0.2      # how long each job holds its replica for its image
    simulated_load_seconds: float = 0.0     # what a change of checkpoint costs on top, in the job that needs it


class SimulatedGpuBackend:
    name = "simulated"
    pipelined = False
    settings_class = SimulatedSettings

    def __init__(self, seconds: float, checkpoints=None, load_seconds: float = 0.0):
        self.seconds = seconds
        self.load_seconds = load_seconds
        self.loaded = None      # the checkpoint held: none until the first job loads one
        self.preview = PreviewBackend(checkpoints)

    @classmethod
    def from_settings(cls, settings, simulated: SimulatedSettings):
        return cls(simulated.simulated_gpu_seconds, settings.checkpoints, simulated.simulated_load_seconds)

    def health(self) -> tuple[bool, str]:
        return True, f"simulated GPU ({self.seconds:g} s per image, {self.load_seconds:g} s per checkpoint change)"

    def checkpoints(self):
        return self.preview.checkpoints()

    def generate(self, spec, job=None) -> GeneratedImage:
        job = as_context(job)
        if spec.checkpoint != self.loaded:
            self._load(spec.checkpoint, job)
        started = time.monotonic()
        image = self.preview.generate(spec)
        steps = max(1, spec.steps)
        for step in range(steps):
            if job.cancelled():
                raise JobCancelled("cancelled")
            until = started + self.seconds * (step + 1) / steps
            time.sleep(max(0.0, until - time.monotonic()))
            job.progress(step + 1, steps)
        image.metadata["backend"] = self.name
        return image

    def _load(self, checkpoint, job):
        began = time.monotonic()
        until = began + self.load_seconds
        while True:
            if job.cancelled():
                raise JobCancelled("cancelled while loading its checkpoint")
            left = until - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(LOAD_SLICE_SECONDS, left))
            job.alive()
        self.loaded = checkpoint
        job.model_loaded(checkpoint, time.monotonic() - began, [checkpoint])
