"""What every backend is: the `Backend` protocol, the `JobContext` a backend reports through, the image it
returns, the error a user reads, and the PNG text chunks every backend writes.

Backends run in the replica's worker process (services/generator/worker.py), a plain Python interpreter
without eventlet: their code is ordinary blocking Python and may use threads, `requests` and `logging`
freely. They never run inside the replica's eventlet process.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Optional, Protocol, runtime_checkable

from PIL import Image
from PIL.PngImagePlugin import PngInfo


class BackendError(Exception):
    """A failure the user should read as the job's error (bad checkpoint, backend unreachable, ...)."""


class JobCancelled(BackendError):
    """The job was cancelled while the backend ran it (its time limit, or its claim said not to run it)."""


@dataclass
class GeneratedImage:
    png: bytes
    width: int
    height: int
    metadata: dict = field(default_factory=dict)


class JobContext(Protocol):
    """How a backend reports on the job it runs. Each call is also a sign of life: the replica declares
    its worker stuck when a busy worker makes none for GAZE_WORKER_STALL_SECONDS, so a backend calls them
    from its own work (a sampling step, an engine's event), never from a timer."""

    job_id: str

    def started(self) -> None:
        """The engine began this job (ComfyUI's execution_start): the job turns `processing` and its time
        limit starts. Backends that are not `pipelined` need not call it: the worker does, just before
        `generate`."""

    def progress(self, value: int, maximum: int) -> None:
        """A step of the job is done."""

    def alive(self) -> None:
        """The backend is working on this job (an engine answered about it) without a step to report."""

    def submitted(self, handle: str) -> None:
        """The engine holds work of this job under `handle` (a ComfyUI prompt_id): if the worker is killed,
        the replica removes it from the engine itself (`Backend.remove_orphans`)."""

    def cancelled(self) -> bool:
        """True once the replica asked to stop this job: the backend ends it soon (JobCancelled)."""


@runtime_checkable
class Backend(Protocol):
    name: str
    # True when the engine queues jobs itself (ComfyUI): the worker hands it the next job while one runs,
    # and the backend calls job.started() when the engine really starts it.
    pipelined: bool

    def generate(self, spec, job: JobContext) -> GeneratedImage: ...

    def health(self) -> tuple[bool, str]: ...

    def checkpoints(self) -> Optional[list[str]]:
        """The checkpoints this node can load; None when it takes any configured one."""


class CallbackContext:
    """A JobContext around a plain `on_progress(value, max)` callable: for direct callers (tests, the GPU
    check) that only want progress."""

    job_id = "direct"

    def __init__(self, on_progress=None):
        self._on_progress = on_progress

    def started(self):
        pass

    def progress(self, value, maximum):
        if self._on_progress is not None:
            self._on_progress(value, maximum)

    def alive(self):
        pass

    def submitted(self, handle):
        pass

    def cancelled(self):
        return False


def as_context(job) -> JobContext:
    """`generate(spec, job)` takes a JobContext, a bare progress callable, or nothing."""
    if job is None or callable(job):
        return CallbackContext(job)
    return job


def png_metadata(spec, backend_name) -> dict:
    """The parameters written into the PNG's text chunks, the same for every backend."""
    return {
        "prompt": spec.prompt,
        "negative_prompt": spec.negative,
        "seed": str(spec.seed),
        "width": str(spec.width),
        "height": str(spec.height),
        "checkpoint": spec.checkpoint,
        "steps": str(spec.steps),
        "cfg": str(spec.cfg),
        "sampler": spec.sampler,
        "preset": spec.preset_slug,
        "backend": backend_name,
        "parameters": (f"{spec.prompt}\nNegative prompt: {spec.negative}\nSteps: {spec.steps}, "
                       f"Sampler: {spec.sampler}, CFG scale: {spec.cfg}, Seed: {spec.seed}, "
                       f"Size: {spec.width}x{spec.height}, Model: {spec.checkpoint}"),
    }


def encode_png(image: Image.Image, metadata: dict) -> bytes:
    info = PngInfo()
    for key, value in metadata.items():
        info.add_itxt(key, value)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info, compress_level=1)
    return buffer.getvalue()
