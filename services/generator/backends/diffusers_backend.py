"""The in-process diffusers backend: Stable Diffusion 1.5 and SDXL single-file checkpoints on this replica's GPU.

Install it with the optional extra (`pip install -e '.[diffusers]'`); the base install never imports torch.

Checkpoints are single `.safetensors` (or legacy `.ckpt`) files under GAZE_MODELS_DIR; a spec's
`checkpoint` is a path relative to that directory ("SDXL/sd_xl_base_1.0.safetensors").

Nothing is downloaded at run time. `from_single_file` normally fetches the pipeline's *configuration*
(model_index.json, unet/config.json, the tokenizer's vocab.json and merges.txt, ...: a few MB of JSON and
text, no weights) from the Hugging Face hub. This backend always hands it a local directory instead:

    GAZE_DIFFUSERS_CONFIG_DIR/<repo id>/     e.g. .../stabilityai/stable-diffusion-xl-base-1.0/model_index.json

where <repo id> is the reference repository diffusers associates with the checkpoint's architecture
("stable-diffusion-v1-5/stable-diffusion-v1-5" for SD 1.x, "stabilityai/stable-diffusion-xl-base-1.0" for
SDXL and its fine-tunes such as Illustrious). When that directory is missing, the Hugging Face cache
(HF_HOME) is tried, offline. `python -m services.generator.backends.diffusers_backend fetch-configs` fills
the directory on a machine with network access; copy it to the GPU node.

The loaded pipeline stays in memory between jobs: one at a time, replaced when a job asks for another
checkpoint. Each replacement is a switch reported to the replica (`job.model_loaded`, with the seconds it
took, freeing the old pipeline included), and the scheduler routes jobs by it; a job that finds its
checkpoint loaded reports nothing. `generate` runs in the replica's worker process
(services/generator/worker.py), a plain interpreter without eventlet; a lock keeps two jobs from sharing
the pipeline at once. Each sampling step reports progress (the worker's sign of life) and stops the job
when the replica cancelled it.
"""
from __future__ import annotations

import gc
import inspect
import json
import os
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from services.generator.backends.base import (
    BackendError, GeneratedImage, JobCancelled, as_context, encode_png, png_metadata,
)
from shared.config import optional_path, resolved_path, setting

BACKEND_NAME = "diffusers"
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")
CONFIG_DIR_NAME = "diffusers-configs"  # the default config directory, inside the models directory
CONFIG_PATTERNS = ["*.json", "**/*.json", "*.txt", "**/*.txt"]  # what fetch-configs copies: no weights

# diffusers' name for a checkpoint's architecture -> the pipeline class; others are refused
SUPPORTED_MODEL_TYPES = {
    "v1": "StableDiffusionPipeline",
    "v2": "StableDiffusionPipeline",
    "xl_base": "StableDiffusionXLPipeline",
}
PIPELINE_CLASSES = ("StableDiffusionPipeline", "StableDiffusionXLPipeline")
# the pipelines' optional components that single files do not carry: loading them would need more files
OPTIONAL_COMPONENTS = ("safety_checker", "feature_extractor", "image_encoder")

# GAZE's sampler names (ComfyUI's) -> (diffusers scheduler class, config overrides).
# A "_karras" suffix (e.g. "dpmpp_2m_karras") adds Karras sigmas where the scheduler supports them.
SAMPLERS = {
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpm_2": ("KDPM2DiscreteScheduler", {}),
    "dpm_2_ancestral": ("KDPM2AncestralDiscreteScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpmpp_2m_sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}),
    "dpmpp_3m_sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 3}),
    "dpmpp_sde": ("DPMSolverSDEScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "pndm": ("PNDMScheduler", {}),
    "uni_pc": ("UniPCMultistepScheduler", {}),
    "deis": ("DEISMultistepScheduler", {}),
    "lcm": ("LCMScheduler", {}),
}
KARRAS_SUFFIX = "_karras"
# samplers whose diffusers scheduler needs a package the extra does not install
SAMPLER_NEEDS = {"lms": "scipy", "dpmpp_sde": "torchsde"}


NOT_INSTALLED = "the diffusers backend is not installed on this generator (its log says how to install it)"


def _torch():
    try:
        import torch
    except ImportError as exc:
        raise BackendError(NOT_INSTALLED,
                           "the diffusers backend needs torch: pip install -e '.[diffusers]'") from exc
    return torch


def _diffusers():
    # belt and braces: every call below already passes local files only
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import diffusers
    except ImportError as exc:
        raise BackendError(NOT_INSTALLED,
                           "the diffusers backend needs diffusers: pip install -e '.[diffusers]'") from exc
    return diffusers


@dataclass(frozen=True)
class DiffusersSettings:
    """GAZE_BACKEND=diffusers: each field read from GAZE_<FIELD NAME> (shared/config.py)."""

    models_dir: str = setting("var/models", parse=resolved_path)  # checkpoints; a spec's checkpoint is a path relative to it
    diffusers_config_dir: str = setting("", parse=optional_path)  # "" = <models_dir>/diffusers-configs: <repo id>/model_index.json, ...
    diffusers_device: str = ""              # "" = cuda when torch sees a GPU, else cpu
    diffusers_dtype: str = ""               # "" = float16 on cuda, float32 on cpu; or bfloat16, float32


class DiffusersBackend:
    """`loader(path, device, dtype) -> pipeline` replaces the single-file loader (tests, the GPU bench)."""

    name = BACKEND_NAME
    pipelined = False
    settings_class = DiffusersSettings

    def __init__(self, models_dir, config_dir=None, device="", dtype="", loader=None):
        self.models_dir = Path(models_dir)
        self.config_dir = Path(config_dir) if config_dir else self.models_dir / CONFIG_DIR_NAME
        self._device_setting = device or ""
        self._dtype_setting = dtype or ""
        self._loader = loader or self._load_single_file
        self._lock = threading.Lock()   # the worker's threads are OS threads: no eventlet in its process
        self._loaded_key = None   # (relative path, size, mtime) of the pipeline in memory
        self._pipe = None
        self._base_scheduler_config = None
        self.loads = 0            # how many checkpoints were loaded: one per job.model_loaded

    @classmethod
    def from_settings(cls, settings, diffusers: DiffusersSettings):
        return cls(diffusers.models_dir, diffusers.diffusers_config_dir or None,
                   diffusers.diffusers_device, diffusers.diffusers_dtype)

    # ---- device -------------------------------------------------------------------------------------

    @property
    def device(self) -> str:
        if self._device_setting:
            return self._device_setting
        return "cuda" if _torch().cuda.is_available() else "cpu"

    @property
    def dtype(self):
        torch = _torch()
        names = {"float16": torch.float16, "fp16": torch.float16, "bfloat16": torch.bfloat16,
                 "bf16": torch.bfloat16, "float32": torch.float32, "fp32": torch.float32}
        if self._dtype_setting:
            try:
                return names[self._dtype_setting.lower()]
            except KeyError:
                raise BackendError("the generator's diffusers backend is misconfigured (its log says how)",
                                   f"GAZE_DIFFUSERS_DTYPE {self._dtype_setting!r} is not one of "
                                   "float16, bfloat16, float32") from None
        return torch.float16 if self.device.startswith("cuda") else torch.float32

    # ---- the interface ------------------------------------------------------------------------------

    def checkpoints(self) -> list[str]:
        """The checkpoint files under the models directory, as paths relative to it."""
        if not self.models_dir.is_dir():
            return []
        found, seen = [], set()
        config_dir = self.config_dir.resolve()
        for root, dirs, files in os.walk(self.models_dir, followlinks=True):
            root_path = Path(root)
            seen.add(root_path.resolve())
            # symlinked folders are followed (models often live on another disk), each real folder once
            dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                             and (root_path / d).resolve() not in seen | {config_dir})
            for name in files:
                if name.lower().endswith(CHECKPOINT_SUFFIXES) and not name.startswith("."):
                    found.append((root_path / name).relative_to(self.models_dir).as_posix())
        return sorted(found)

    def health(self) -> tuple[bool, str]:
        if not self.models_dir.is_dir():
            return False, f"models directory {self.models_dir} does not exist (GAZE_MODELS_DIR)"
        try:
            torch = _torch()
            diffusers = _diffusers()
        except BackendError as exc:
            return False, exc.detail
        device = self.device
        if device.startswith("cuda"):
            if not torch.cuda.is_available():
                return False, f"GAZE_DIFFUSERS_DEVICE is {device} but torch {torch.__version__} sees no CUDA device"
            index = torch.device(device).index or 0
            props = torch.cuda.get_device_properties(index)
            where = f"{device} ({props.name}, {props.total_memory / 2**30:.0f} GiB)"
        else:
            where = device
        loaded = self._loaded_key[0] if self._loaded_key else "none"
        configs = sorted(p.parent.relative_to(self.config_dir).as_posix()
                         for p in self.config_dir.glob("*/*/model_index.json"))
        configs = ", ".join(configs) or "none here, HF cache only"
        return True, (f"diffusers {diffusers.__version__}, torch {torch.__version__} on {where}; "
                      f"models in {self.models_dir}; pipeline configs: {configs}; loaded: {loaded}")

    def generate(self, spec, job=None) -> GeneratedImage:
        job = as_context(job)
        path = self.resolve_checkpoint(spec.checkpoint)
        scheduler_class, overrides = self._sampler(spec.sampler)   # refuse an unknown sampler before loading
        torch = _torch()
        with self._lock:
            pipe = self._pipeline(spec.checkpoint, path, job)
            pipe.scheduler = self._scheduler(scheduler_class, overrides, spec.sampler)
            try:
                image = self._run(pipe, spec, job)
            except torch.cuda.OutOfMemoryError:
                self._free_cuda()
                raise BackendError(f"out of GPU memory generating {spec.width}x{spec.height} with "
                                   f"{spec.checkpoint}; try a smaller size") from None
            except ValueError as exc:  # the pipeline's own input checks (sizes, prompts): the text is the log's
                raise BackendError("diffusers refused the job's parameters (its size, prompt or steps)",
                                   f"diffusers refused the job: {exc}") from exc
        metadata = png_metadata(spec, self.name)
        return GeneratedImage(encode_png(image, metadata), image.width, image.height, metadata)

    # ---- checkpoints --------------------------------------------------------------------------------

    def resolve_checkpoint(self, checkpoint: str) -> Path:
        """The checkpoint's file; refuses paths that would leave the models directory."""
        relative = PurePosixPath(checkpoint.replace("\\", "/"))
        if (not checkpoint or relative.is_absolute() or ".." in relative.parts
                or os.path.isabs(checkpoint) or any(ord(c) < 32 for c in checkpoint)):
            raise BackendError(f"checkpoint {checkpoint!r} must be a path inside the models directory")
        if not checkpoint.lower().endswith(CHECKPOINT_SUFFIXES):
            raise BackendError(f"checkpoint {checkpoint!r} is not a .safetensors or .ckpt file")
        path = self.models_dir / Path(*relative.parts)
        if not path.is_file():
            raise BackendError(f"checkpoint {checkpoint!r} not found in the models directory",
                               f"checkpoint {checkpoint!r} not found in the models directory {self.models_dir}")
        return path

    @property
    def resident(self) -> list[str]:
        """The checkpoints whose pipelines this backend keeps in memory now (at most one)."""
        return [self._loaded_key[0]] if self._loaded_key else []

    def _pipeline(self, checkpoint, path, job):
        stat = path.stat()
        key = (checkpoint, stat.st_size, stat.st_mtime_ns)
        if self._pipe is not None and self._loaded_key == key:
            return self._pipe
        # the switch's cost is freeing the old pipeline as well as loading the new one: both are timed
        started = time.perf_counter()
        # one pipeline at a time: free the old one before loading the next
        self._pipe, self._loaded_key, self._base_scheduler_config = None, None, None
        self._free_cuda()
        try:
            pipe = self._loader(path, self.device, self.dtype)
        except BackendError:
            raise
        except _torch().cuda.OutOfMemoryError:
            self._free_cuda()
            raise BackendError(f"out of GPU memory loading checkpoint {checkpoint!r}") from None
        except Exception as exc:
            raise BackendError(f"could not load checkpoint {checkpoint!r} (the generator's log has the details)",
                               f"could not load checkpoint {checkpoint!r}: {type(exc).__name__}: {exc}") from exc
        if hasattr(pipe, "set_progress_bar_config"):
            pipe.set_progress_bar_config(disable=True)
        self._synchronize()   # CUDA copies may still be in flight: the seconds are the load's, not its launch's
        self._pipe, self._loaded_key = pipe, key
        self._base_scheduler_config = dict(pipe.scheduler.config)
        self.loads += 1
        job.model_loaded(checkpoint, time.perf_counter() - started, self.resident)
        return pipe

    def _synchronize(self):
        device = self.device
        torch = sys.modules.get("torch")
        if torch is not None and device.startswith("cuda") and torch.cuda.is_available():
            torch.cuda.synchronize(device)

    def _free_cuda(self):
        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _load_single_file(self, path: Path, device: str, dtype):
        """The real loader: diffusers' from_single_file with a local config directory, never the hub."""
        diffusers = _diffusers()
        model_type = infer_model_type(path)
        class_name = SUPPORTED_MODEL_TYPES.get(model_type)
        if class_name is None:
            raise BackendError(f"checkpoint {path.name} is a {model_type!r} model; the diffusers backend runs "
                               "Stable Diffusion 1.x/2.x and SDXL text-to-image checkpoints")
        repo_id = reference_repo(model_type)
        config = self.local_config(repo_id)
        class_name = _pipeline_class_name(config) or class_name
        pipeline_class = getattr(diffusers, class_name)
        expected = inspect.signature(pipeline_class.__init__).parameters
        extra = {name: None for name in OPTIONAL_COMPONENTS if name in expected}
        if "requires_safety_checker" in expected:
            extra["requires_safety_checker"] = False
        pipe = pipeline_class.from_single_file(str(path), config=str(config), local_files_only=True,
                                               torch_dtype=dtype, **extra)
        return pipe.to(device)

    def local_config(self, repo_id: str) -> Path:
        """The local diffusers config directory for `repo_id`: GAZE_DIFFUSERS_CONFIG_DIR, else the HF cache."""
        candidate = self.config_dir / repo_id
        if (candidate / "model_index.json").is_file():
            return candidate
        try:
            from huggingface_hub import snapshot_download
            cached = Path(snapshot_download(repo_id, local_files_only=True, allow_patterns=CONFIG_PATTERNS))
            if (cached / "model_index.json").is_file():
                return cached
        except Exception:  # not in the cache either: say what to put where
            pass
        raise BackendError(
            f"the generator has no diffusers pipeline configuration for {repo_id} checkpoints (its operator "
            f"must install it)",
            f"no local diffusers config for {repo_id}: put its config files (model_index.json, */config.json, "
            f"tokenizer files; no weights) in {candidate} — `python -m "
            f"services.generator.backends.diffusers_backend fetch-configs {self.config_dir}` on a machine "
            "with network access downloads them")

    # ---- samplers -----------------------------------------------------------------------------------

    @staticmethod
    def _sampler(sampler: str):
        base, karras = sampler, False
        if sampler not in SAMPLERS and sampler.endswith(KARRAS_SUFFIX):
            base, karras = sampler[: -len(KARRAS_SUFFIX)], True
        if base not in SAMPLERS:
            raise BackendError(f"unknown sampler {sampler!r} for the diffusers backend; known: "
                               f"{', '.join(sorted(SAMPLERS))} (add {KARRAS_SUFFIX} for Karras sigmas)")
        class_name, overrides = SAMPLERS[base]
        overrides = dict(overrides)
        if karras:
            overrides["use_karras_sigmas"] = True
        return class_name, overrides

    def _scheduler(self, class_name, overrides, sampler):
        diffusers = _diffusers()
        try:
            cls = getattr(diffusers, class_name)
            if "use_karras_sigmas" in overrides and \
                    "use_karras_sigmas" not in inspect.signature(cls.__init__).parameters:
                raise BackendError(f"sampler {sampler!r}: {class_name} has no Karras sigmas")
            return cls.from_config(self._base_scheduler_config, **overrides)
        except BackendError:
            raise
        except ImportError:  # diffusers' placeholder class for a scheduler whose package is missing
            package = SAMPLER_NEEDS.get(sampler.removesuffix(KARRAS_SUFFIX), "a package that is not installed")
            raise BackendError(f"sampler {sampler!r} is not available on this generator (it needs {package})",
                               f"sampler {sampler!r} needs {package} on the generator (pip install "
                               f"{package if package in SAMPLER_NEEDS.values() else '...'})") from None

    # ---- running ------------------------------------------------------------------------------------

    def _run(self, pipe, spec, job):
        torch = _torch()
        seed = 0 if spec.seed is None else int(spec.seed) % 2**64
        # noise comes from a CPU generator, so a seed gives the same starting noise on every machine
        generator = torch.Generator(device="cpu").manual_seed(seed)
        total = spec.steps

        def step_end(pipeline, step, timestep, callback_kwargs):
            steps = getattr(pipeline, "_num_timesteps", None) or total
            job.progress(step + 1, steps)
            if job.cancelled():
                raise JobCancelled("cancelled")
            return callback_kwargs

        with torch.inference_mode():
            result = pipe(prompt=spec.prompt, negative_prompt=spec.negative or None,
                          width=spec.width, height=spec.height, num_inference_steps=spec.steps,
                          guidance_scale=spec.cfg, generator=generator,
                          callback_on_step_end=step_end, output_type="pil")
        return result.images[0].convert("RGB")


# ---- helpers --------------------------------------------------------------------------------------


class _LazyStateDict(Mapping):
    """A safetensors file's tensors, read one at a time: enough to tell its architecture cheaply."""

    def __init__(self, handle):
        self._handle = handle
        self._keys = set(handle.keys())

    def __contains__(self, key):
        return key in self._keys

    def __getitem__(self, key):
        if key not in self._keys:
            raise KeyError(key)
        return self._handle.get_tensor(key)

    def __iter__(self):
        return iter(self._keys)

    def __len__(self):
        return len(self._keys)


def infer_model_type(path: Path) -> str:
    """diffusers' architecture name for a checkpoint ("v1", "xl_base", ...), read from its keys."""
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type, load_single_file_checkpoint

    if str(path).lower().endswith(".safetensors"):
        from safetensors import safe_open
        try:
            with safe_open(str(path), framework="pt") as handle:
                return infer_diffusers_model_type(_LazyStateDict(handle))
        except Exception as exc:
            raise BackendError(f"{path.name} is not a readable safetensors file",
                               f"{path} is not a readable safetensors file: {exc}") from exc
    return infer_diffusers_model_type(load_single_file_checkpoint(str(path), local_files_only=True))


def reference_repo(model_type: str) -> str:
    from diffusers.loaders.single_file_utils import DIFFUSERS_DEFAULT_PIPELINE_PATHS

    return DIFFUSERS_DEFAULT_PIPELINE_PATHS[model_type]["pretrained_model_name_or_path"]


def _pipeline_class_name(config: Path):
    try:
        name = json.loads((config / "model_index.json").read_text()).get("_class_name")
    except (OSError, ValueError):
        return None
    return name if name in PIPELINE_CLASSES else None


def fetch_configs(dest, model_types=("v1", "xl_base")):
    """Download the reference configs (JSON and tokenizer text, no weights) into dest/<repo id>/.
    Run where the hub is reachable; the GPU node only reads the result."""
    os.environ.pop("HF_HUB_OFFLINE", None)
    from huggingface_hub import snapshot_download

    for model_type in model_types:
        repo_id = reference_repo(model_type)
        target = Path(dest) / repo_id
        snapshot_download(repo_id, allow_patterns=CONFIG_PATTERNS, local_dir=str(target))
        print(f"{model_type}: {repo_id} -> {target}")


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(prog="python -m services.generator.backends.diffusers_backend")
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch-configs", help="download the SD 1.5 and SDXL pipeline configs (no weights)")
    fetch.add_argument("dest", help="GAZE_DIFFUSERS_CONFIG_DIR on the GPU node")
    fetch.add_argument("--types", default="v1,xl_base", help="diffusers model types (default: v1,xl_base)")
    args = parser.parse_args(argv)
    fetch_configs(args.dest, [t.strip() for t in args.types.split(",") if t.strip()])


if __name__ == "__main__":
    main()
