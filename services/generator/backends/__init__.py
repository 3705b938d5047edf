"""Generation backends. Each turns a GenerationSpec into PNG bytes behind one small interface:

    backend.generate(spec, on_progress) -> GeneratedImage

`generate` is called on a real OS thread (see services/generator/runner.py), never on the eventlet
loop, so it may block or hold the CPU as long as it needs. `on_progress(value, max)` may be called
from that thread at any time.
"""
from __future__ import annotations

from dataclasses import dataclass, field


class BackendError(Exception):
    """A failure the user should read as the job's error (bad checkpoint, backend unreachable, ...)."""


@dataclass
class GeneratedImage:
    png: bytes
    width: int
    height: int
    metadata: dict = field(default_factory=dict)


def make_backend(settings):
    from services.generator.backends.preview import PreviewBackend
    from services.generator.backends.comfyui import ComfyUIBackend
    from services.generator.backends.simulated import SimulatedGpuBackend

    factories = {
        "preview": lambda: PreviewBackend(settings.checkpoints),
        "simulated": lambda: SimulatedGpuBackend(settings.simulated_gpu_seconds),
        "comfyui": lambda: ComfyUIBackend.from_settings(settings),
        # imported only when chosen: the base install has no torch (pip install -e '.[diffusers]')
        "diffusers": lambda: __import__("services.generator.backends.diffusers_backend",
                                        fromlist=["DiffusersBackend"]).DiffusersBackend.from_settings(settings),
    }
    try:
        return factories[settings.backend]()
    except KeyError:
        raise ValueError(
            f"unknown GAZE_BACKEND {settings.backend!r}; choose one of {', '.join(sorted(factories))}"
        ) from None
