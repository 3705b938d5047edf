"""Generation backends: each turns a GenerationSpec into a PNG behind the `Backend` protocol
(services/generator/backends/base.py). They run in the replica's worker process, never in its eventlet
process (services/generator/worker.py).

GAZE_BACKEND names a bundled backend (preview, simulated, comfyui, diffusers) or any class as
`package.module:ClassName` (built with `ClassName.from_settings(settings)` when it has one, else
`ClassName()`), so an operator can plug in an engine of their own, and the tests their hostile ones.
"""
from __future__ import annotations

import importlib

from services.generator.backends.base import (  # noqa: F401  (the backends' common vocabulary)
    Backend, BackendError, CallbackContext, GeneratedImage, JobCancelled, JobContext, as_context, encode_png,
    png_metadata,
)

BUNDLED = {
    "preview": ("services.generator.backends.preview", "PreviewBackend"),
    "simulated": ("services.generator.backends.simulated", "SimulatedGpuBackend"),
    "comfyui": ("services.generator.backends.comfyui", "ComfyUIBackend"),
    # the base install has no torch (pip install -e '.[diffusers]'): imported only when chosen
    "diffusers": ("services.generator.backends.diffusers_backend", "DiffusersBackend"),
}


def backend_class(name: str):
    if name in BUNDLED:
        module, cls = BUNDLED[name]
    elif ":" in name:
        module, cls = name.split(":", 1)
    else:
        raise ValueError(f"unknown GAZE_BACKEND {name!r}; choose one of {', '.join(sorted(BUNDLED))} "
                         f"or name a class as package.module:ClassName")
    try:
        return getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"GAZE_BACKEND {name!r} cannot be loaded: {exc}") from None


def make_backend(settings) -> Backend:
    cls = backend_class(settings.backend)
    factory = getattr(cls, "from_settings", None)
    return factory(settings) if factory is not None else cls()


def remove_orphans(settings, handles) -> str:
    """Remove what a killed worker left on its engine (ComfyUI prompts): called by the replica itself, in
    its eventlet process, with the handles the worker reported through JobContext.submitted. A backend
    class opts in with a `remove_orphans(settings, handles)` classmethod that uses plain sockets only."""
    if not handles:
        return "nothing to remove"
    remover = getattr(backend_class(settings.backend), "remove_orphans", None)
    return remover(settings, list(handles)) if remover is not None else "nothing to remove"
