"""A stand-in for a GPU: holds its worker for a fixed time per job, blocking as a CUDA call would.

Used by the heartbeat test (a job longer than two heartbeat intervals) and the scaling benchmark (each job
holds its replica for exactly T seconds: drawing the small preview picture counts towards T). The wait is
cut into the job's steps, each reported as progress (the sign of life a real sampler gives), and a
cancelled job stops at the next step.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from services.generator.backends.base import GeneratedImage, JobCancelled, as_context
from services.generator.backends.preview import PreviewBackend


@dataclass(frozen=True)
class SimulatedSettings:
    """GAZE_BACKEND=simulated: each field read from GAZE_<FIELD NAME> (shared/config.py)."""

    simulated_gpu_seconds: float = 0.2      # how long each job holds its replica


class SimulatedGpuBackend:
    name = "simulated"
    pipelined = False
    settings_class = SimulatedSettings

    def __init__(self, seconds: float, checkpoints=None):
        self.seconds = seconds
        self.preview = PreviewBackend(checkpoints)

    @classmethod
    def from_settings(cls, settings, simulated: SimulatedSettings):
        return cls(simulated.simulated_gpu_seconds, settings.checkpoints)

    def health(self) -> tuple[bool, str]:
        return True, f"simulated GPU ({self.seconds:g} s per image)"

    def checkpoints(self):
        return self.preview.checkpoints()

    def generate(self, spec, job=None) -> GeneratedImage:
        job = as_context(job)
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
