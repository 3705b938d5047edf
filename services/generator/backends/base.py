"""What every backend is: the `Backend` protocol, the `JobContext` a backend reports through, the image it
returns, the error a user reads, and the PNG text chunks every backend writes.

Backends run in the replica's worker process (services/generator/worker.py), a plain Python interpreter
without eventlet: their code is ordinary blocking Python and may use threads, `requests` and `logging`
freely. They never run inside the replica's eventlet process.
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from typing import NamedTuple, Optional, Protocol, runtime_checkable

from PIL import Image
from PIL.PngImagePlugin import PngInfo


class Reason(NamedTuple):
    """A failure said twice. `public` is what the job's client reads as its `error`: a reason they can act
    on ("checkpoint 'x' is not installed on this node; installed: a, b"), with no URL, host, file path or
    exception text. `detail` is the operator's: the same with the server, the cause, the file; the replica
    logs it under the job id (services/generator/service.py `_fail`)."""

    public: str
    detail: str


class JobError(Exception):
    """Why a job ended badly, in two texts: `str(exc)` and `public` are what its client reads, `detail` what
    the operator reads in the generator's log (the public text when not given). Picklable with both."""

    def __init__(self, public: str, detail: str | None = None):
        super().__init__(public)
        self.public = public
        self.detail = detail if detail is not None else public

    def __reduce__(self):
        return type(self), (self.public, self.detail)


class BackendError(JobError):
    """A job's failure (bad checkpoint, backend unreachable, ...). `raise BackendError(*reason)` for a Reason."""


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

    def model_loaded(self, checkpoint: str, seconds: float, resident: Optional[list[str]] = None) -> None:
        """For this job the backend changed the model it holds to `checkpoint` (a load from disk or from
        memory), which took `seconds`; `resident`: the checkpoints it keeps in memory now, where it can tell.
        Not called when the job found its checkpoint already loaded. The replica reports it
        (GeneratorStatus.loaded_checkpoint, loads) and the scheduler routes by it."""

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

    def model_loaded(self, checkpoint, seconds, resident=None):
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


# What no job error a client reads may carry, whoever wrote it (a bundled backend's words are built without
# them; a plugged-in one's, GAZE_BACKEND=package.module:Class, may not be): URLs, absolute file paths,
# IP addresses and host:port pairs. `public_text` replaces each with HIDDEN, as the last step before a job's
# error leaves the replica.
HIDDEN = "[internal]"
_INTERNALS = (
    re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s'\"<>()\[\]]+"),          # scheme://anything
    re.compile(r"\b[A-Za-z]:\\[^\s'\"]*"),                                  # C:\windows\path
    re.compile(r"(?<![\w.~\-/])(?:~|\.{1,2})?/[^\s/'\"(),;]+(?:/[^\s/'\"(),;]*)*"),  # /an/absolute/path
    re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?\b"),                      # 10.0.0.7[:8188]
    re.compile(r"\[[0-9a-fA-F:]*:[0-9a-fA-F:]+\](?::\d{1,5})?"),                  # [::1]:8188
    re.compile(r"\b[A-Za-z][\w\-]*(?:\.[\w\-]+)*:\d{2,5}\b"),                       # gpu-3:8188, host.lan:443
)


def public_text(text: str) -> str:
    """`text` without URLs, absolute paths, IP addresses or host:port pairs (each replaced by HIDDEN)."""
    text = str(text)
    for pattern in _INTERNALS:
        text = pattern.sub(HIDDEN, text)
    return text
