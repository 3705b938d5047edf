"""Generation backends: each turns a GenerationSpec into a PNG behind the `Backend` protocol
(services/generator/backends/base.py). They run in the replica's worker process, never in its eventlet
process (services/generator/worker.py).

GAZE_BACKEND names a bundled backend (preview, simulated, comfyui, diffusers) or any class as
`package.module:ClassName` (built with `ClassName.from_settings(settings)` when it has one, else
`ClassName()`), so an operator can plug in an engine of their own, and the tests their hostile ones.

A backend's own settings (ComfyUI's URL, the diffusers models directory, ...) are declared beside it, as a
settings dataclass named by its `settings_class` (fields made with shared.config's `setting`, each read
from GAZE_<FIELD NAME>), and loaded where the backend is used: the worker process builds it with
`from_settings(settings, own_settings)`; `settings` is the shared Settings (GAZE_JOB_TIMEOUT_SECONDS,
GAZE_CHECKPOINTS, ...).
"""
from __future__ import annotations

import importlib

from services.generator.backends.base import (  # noqa: F401  (the backends' common vocabulary)
    Backend, BackendError, CallbackContext, GeneratedImage, JobCancelled, JobContext, as_context, encode_png,
    png_metadata,
)
from shared.config import load_settings

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


def own_settings(cls, env=None):
    """The backend class's own settings (its `settings_class`) from `env` (default: this process's
    environment); None for a backend that declares none."""
    declared = getattr(cls, "settings_class", None)
    return load_settings(declared, env) if declared is not None else None


def make_backend(settings, env=None) -> Backend:
    """The backend GAZE_BACKEND names, its own settings read from `env` (default: this process's environment)."""
    cls = backend_class(settings.backend)
    factory = getattr(cls, "from_settings", None)
    if factory is None:
        return cls()
    own = own_settings(cls, env)
    return factory(settings) if own is None else factory(settings, own)


def remove_orphans(settings, handles, env=None) -> str:
    """Remove what a killed worker left on its engine (ComfyUI prompts): called by the replica itself, in
    its eventlet process, with the handles the worker reported through JobContext.submitted. A backend
    class opts in with a `remove_orphans(own_settings, handles)` classmethod that uses plain sockets only;
    its settings come from the same environment its worker process inherited."""
    if not handles:
        return "nothing to remove"
    cls = backend_class(settings.backend)
    remover = getattr(cls, "remove_orphans", None)
    return remover(own_settings(cls, env), list(handles)) if remover is not None else "nothing to remove"
