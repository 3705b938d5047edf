"""Time GAZE's diffusers backend on a GPU with an SDXL-shaped, randomly initialised pipeline.

No weights and no network: the pipeline is built here from SDXL base 1.0's own configuration values (the
real UNet, VAE and both text encoders, ~3.5 billion parameters, random weights, float16 on CUDA) and handed
to DiffusersBackend through its loader hook; then generate() — the code path a job takes — runs a few
times. Random weights draw noise, not pictures, and may overflow float16 into NaNs; the timing and memory
are those of the real model's shapes.

    PYTHONPATH=. python3 bench/diffusers_gpu_check.py                 # 1024x1024, 20 steps, 4 images
    PYTHONPATH=. python3 bench/diffusers_gpu_check.py --tiny          # a tiny SDXL-shaped model on the CPU

Needs torch, transformers, diffusers and pillow (and numpy, safetensors, huggingface_hub, which those
bring); pydantic is used when present, nameko/eventlet not at all. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from services.generator.backends.diffusers_backend import DiffusersBackend  # noqa: E402

CHECKPOINT = "SDXL/random-sdxl-base.safetensors"

# stabilityai/stable-diffusion-xl-base-1.0, unet/config.json (the values that shape the model)
SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816, norm_num_groups=32,
)
SDXL_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=1024,
    block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, scaling_factor=0.13025, force_upcast=True,
)
SDXL_TEXT_1 = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                   projection_dim=768, hidden_act="quick_gelu", vocab_size=49408, max_position_embeddings=77)
SDXL_TEXT_2 = dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=20, num_hidden_layers=32,
                   projection_dim=1280, hidden_act="gelu", vocab_size=49408, max_position_embeddings=77)
SDXL_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
                      timestep_spacing="leading", prediction_type="epsilon")

# the same architecture, shrunk until it runs on a laptop CPU in seconds
TINY_UNET = dict(SDXL_UNET, sample_size=32, block_out_channels=(32, 64),
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), transformer_layers_per_block=(1, 2),
                 attention_head_dim=(2, 4), cross_attention_dim=64, addition_time_embed_dim=8,
                 projection_class_embeddings_input_dim=8 * 6 + 32)
TINY_VAE = dict(SDXL_VAE, block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, sample_size=64)
TINY_TEXT_1 = dict(SDXL_TEXT_1, hidden_size=32, intermediate_size=37, num_attention_heads=4,
                   num_hidden_layers=2, projection_dim=32)
TINY_TEXT_2 = dict(SDXL_TEXT_2, hidden_size=32, intermediate_size=37, num_attention_heads=4,
                   num_hidden_layers=2, projection_dim=32)


@dataclasses.dataclass
class Spec:
    """GenerationSpec's fields, for machines without pydantic."""
    preset_slug: str
    preset_name: str
    prompt: str
    negative: str
    checkpoint: str
    width: int
    height: int
    steps: int
    cfg: float
    sampler: str
    seed: int | None = None
    kind: str = "preview"


def make_spec(**fields):
    try:
        from shared.schemas import GenerationSpec
        return GenerationSpec(**fields)
    except ImportError:
        return Spec(**fields)


def tokenizer(directory: Path):
    """A small CLIP BPE tokenizer (the weights are random: which ids the prompt gets does not matter)."""
    from transformers import CLIPTokenizer

    letters = "abcdefghijklmnopqrstuvwxyz"
    merges = ["l i", "li g", "h t</w>"]
    tokens = ["<|startoftext|>", "<|endoftext|>", *letters, *(c + "</w>" for c in letters),
              *(m.replace(" ", "") for m in merges)]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer.from_pretrained(str(directory), model_max_length=77)


def build_pipeline(tiny: bool, device: str, dtype, workdir: Path, seed: int = 0):
    """(pipeline, parameter count); another `seed` gives another model of the same shapes."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    unet_cfg, vae_cfg, te1_cfg, te2_cfg = ((TINY_UNET, TINY_VAE, TINY_TEXT_1, TINY_TEXT_2) if tiny
                                           else (SDXL_UNET, SDXL_VAE, SDXL_TEXT_1, SDXL_TEXT_2))
    tok = tokenizer(workdir / "tokenizer")
    # initialise on the target device: random init of 2.6 B UNet parameters on a CPU takes minutes
    with torch.device(device):
        unet = UNet2DConditionModel(**unet_cfg)
        vae = AutoencoderKL(**vae_cfg)
        text_encoder = CLIPTextModel(CLIPTextConfig(**te1_cfg, bos_token_id=0, eos_token_id=1, pad_token_id=1))
        text_encoder_2 = CLIPTextModelWithProjection(
            CLIPTextConfig(**te2_cfg, bos_token_id=0, eos_token_id=1, pad_token_id=1))
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                     tokenizer=tok, tokenizer_2=tok, unet=unet,
                                     scheduler=EulerDiscreteScheduler(**SDXL_SCHEDULER))
    pipe = pipe.to(device=device, dtype=dtype)
    params = sum(p.numel() for m in (unet, vae, text_encoder, text_encoder_2) for p in m.parameters())
    return pipe, params


def add_generation_arguments(parser):
    """The options of a GPU check's images (this script's and bench/diffusers_switch_check.py's)."""
    parser.add_argument("--tiny", action="store_true", help="tiny SDXL-shaped models, CPU, 64x64, 3 steps")
    parser.add_argument("--size", type=int, default=None, help="width = height (default 1024; --tiny: 64)")
    parser.add_argument("--steps", type=int, default=None, help="default 20 (--tiny: 3)")
    parser.add_argument("--sampler", default="euler_ancestral")
    parser.add_argument("--cfg", type=float, default=6.0)
    parser.add_argument("--device", default="", help="default: cuda when available, else cpu (--tiny: cpu)")
    parser.add_argument("--dtype", default="", help="default: float16 on cuda, float32 on cpu")
    parser.add_argument("--json", help="also write the numbers as JSON to this file")


def generation_settings(args):
    """(size, steps, device) from `add_generation_arguments`' options, their defaults filled in."""
    size = args.size or (64 if args.tiny else 1024)
    steps = args.steps or (3 if args.tiny else 20)
    device = args.device or ("cpu" if args.tiny else ("cuda" if torch.cuda.is_available() else "cpu"))
    warnings.filterwarnings("ignore", message="invalid value encountered in cast")  # NaNs of random fp16
    return size, steps, device


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_generation_arguments(parser)
    parser.add_argument("--runs", type=int, default=None, help="images to generate (default 4; --tiny: 2)")
    args = parser.parse_args(argv)
    size, steps, device = generation_settings(args)
    runs = args.runs or (2 if args.tiny else 4)

    with tempfile.TemporaryDirectory(prefix="gaze-diffusers-bench-") as tmp:
        models = Path(tmp) / "models"
        (models / CHECKPOINT).parent.mkdir(parents=True)
        (models / CHECKPOINT).touch()   # the backend checks the checkpoint exists; the loader hook builds it
        built = {}
        backend = DiffusersBackend(models, device=device, dtype=args.dtype,
                                   loader=lambda path, device, dtype: built["pipe"])
        ok, detail = backend.health()
        print(f"health: {'ok' if ok else 'NOT OK'}: {detail}", file=sys.stderr)
        cuda = backend.device.startswith("cuda")
        # build first, so that neither its time nor its float32 staging counts in the numbers below
        started = time.perf_counter()
        built["pipe"], built["params"] = build_pipeline(args.tiny, backend.device, backend.dtype, Path(tmp))
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        built["seconds"] = time.perf_counter() - started
        print(f"built {built['params'] / 1e6:.1f} M parameters in {built['seconds']:.1f} s", file=sys.stderr)

        times, denoise, right_size = [], [], []
        for run in range(runs):
            marks = []
            spec = make_spec(preset_slug="bench", preset_name="Bench", prompt="a lighthouse at dusk, detailed",
                             negative="blurry, lowres", checkpoint=CHECKPOINT, width=size, height=size,
                             steps=steps, cfg=args.cfg, sampler=args.sampler, seed=1000 + run)
            started = time.perf_counter()
            image = backend.generate(spec, lambda value, maximum, marks=marks: marks.append(time.perf_counter()))
            seconds = time.perf_counter() - started
            times.append(seconds)
            denoise.append(marks[-1] - marks[0] if len(marks) > 1 else float("nan"))
            right_size.append(image.width == size and image.height == size)
            print(f"run {run + 1}/{runs}: {seconds:.3f} s", file=sys.stderr)
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
        resident = torch.cuda.memory_allocated() / 2**30 if cuda else float("nan")

    steady = times[1:] or times
    # denoise spans the steps between the first and the last step callback: steps - 1 UNet steps
    per_step = [d / (steps - 1) for d in denoise[1:] or denoise] if steps > 1 else [float("nan")]
    import diffusers
    import transformers
    device_name = torch.cuda.get_device_name() if cuda else platform.processor() or platform.machine()
    results = {
        "device": f"{backend.device} ({device_name})", "dtype": str(backend.dtype).replace("torch.", ""),
        "model": "tiny SDXL-shaped" if args.tiny else "SDXL base 1.0 shapes, random weights",
        "parameters": built.get("params", 0), "size": f"{size}x{size}", "steps": steps, "sampler": args.sampler,
        "cfg": args.cfg, "runs": runs, "build_seconds": round(built.get("seconds", 0.0), 3),
        "first_image_seconds": round(times[0], 3), "steady_image_seconds": round(statistics.median(steady), 3),
        "steady_steps_per_second": None if math.isnan(per_step[0]) else round(1 / statistics.median(per_step), 2),
        "peak_gpu_memory_gib": None if math.isnan(peak) else round(peak, 2),
        "resident_gpu_memory_gib": None if math.isnan(resident) else round(resident, 2),
        "torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
        "all_images_right_size": all(right_size),
    }
    print(f"\n## GAZE diffusers backend: {results['model']}\n")
    print("| what | value |\n| --- | --- |")
    labels = {
        "device": "device", "dtype": "dtype", "parameters": "parameters (UNet + VAE + text encoders)",
        "size": "image size", "steps": "steps", "sampler": "sampler", "cfg": "CFG scale", "runs": "images",
        "build_seconds": "pipeline build (random init), s", "first_image_seconds": "first image, s",
        "steady_image_seconds": "steady-state image (median of the rest), s",
        "steady_steps_per_second": "denoising steps per second (steady)",
        "peak_gpu_memory_gib": "peak GPU memory while generating (max_memory_allocated), GiB",
        "resident_gpu_memory_gib": "GPU memory held between jobs (memory_allocated), GiB",
        "torch": "torch", "diffusers": "diffusers", "transformers": "transformers",
        "all_images_right_size": "every PNG the requested size",
    }
    for key, label in labels.items():
        value = results[key]
        if key == "parameters":
            value = f"{value / 1e9:.2f} B" if value > 1e8 else f"{value / 1e6:.2f} M"
        print(f"| {label} | {'n/a' if value is None else value} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
