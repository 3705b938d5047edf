"""Measure real checkpoint switches through GAZE's diffusers backend: what `job.model_loaded` reports.

Two different SDXL-shaped checkpoints (SDXL base 1.0's configuration values, bench/diffusers_gpu_check.py;
random weights, one seed each; float16 on CUDA, ~7 GB each) are written to local disk, each pipeline's
components as safetensors files (diffusers' own layout: a single-file checkpoint would need SDXL's reference
configs, which an offline machine does not have). The backend gets a loader hook that loads
`SDXL/random-a.safetensors` from the folder beside it (`SDXL/random-a/`) onto the device, as
`from_single_file` would: the disk reads, the float16 tensors and the copy to the GPU are the same size.
The page cache is emptied for those files first (posix_fadvise DONTNEED; `--drop-caches` also writes
/proc/sys/vm/drop_caches), so a checkpoint's first load reads the disk and a later one the page cache.

Then generate() — the code path a job takes — runs over a sequence of checkpoints (default a,a,b,b,a,b),
and a markdown table shows, per job, the load the backend reported (none for a repeat) and the seconds of
the whole job. Random weights draw noise, not pictures; the times are those of SDXL's shapes.

    PYTHONPATH=. python3 bench/diffusers_switch_check.py --workdir var/switch-check   # GPU: 1024², 20 steps
    PYTHONPATH=. python3 bench/diffusers_switch_check.py --tiny                        # CPU, tiny model

Needs torch, transformers, diffusers, safetensors and pillow; accelerate when present. Exits 1 when the
backend reported a switch it did not make, or missed one.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import mmap
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench.diffusers_gpu_check import (add_generation_arguments, build_pipeline, generation_settings,  # noqa: E402
                                       make_spec)
from services.generator.backends.base import CallbackContext  # noqa: E402
from services.generator.backends.diffusers_backend import DiffusersBackend  # noqa: E402

CHECKPOINTS = {"a": "SDXL/random-a.safetensors", "b": "SDXL/random-b.safetensors"}
SEEDS = {"a": 1, "b": 2}


class RecordingJob(CallbackContext):
    """A job's context that keeps the loads the backend reported for it."""

    def __init__(self, job_id):
        super().__init__()
        self.job_id = job_id
        self.loads = []

    def model_loaded(self, checkpoint, seconds, resident=None):
        self.loads.append((checkpoint, seconds, list(resident or [])))


def pipeline_dir(checkpoint_file: Path) -> Path:
    """Where the loader hook finds a checkpoint's components: the folder beside its file, without suffix."""
    return checkpoint_file.with_suffix("")


def load_saved_pipeline(path, device, dtype):
    """The loader hook: the checkpoint's safetensors components from disk onto `device`."""
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(str(pipeline_dir(Path(path))), torch_dtype=dtype,
                                                     local_files_only=True)
    return pipe.to(device)


def free_device_memory():
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def write_checkpoint(models: Path, name: str, args, device, dtype, workdir: Path, size: int, steps: int):
    """Build the checkpoint's pipeline (random weights), warm the device up with one image, save it."""
    started = time.perf_counter()
    pipe, params = build_pipeline(args.tiny, device, dtype, workdir, seed=SEEDS[name])
    built = time.perf_counter() - started
    if name == "a":
        # kernels, cuDNN plans and allocator pools are set up by the first image a process draws: do it
        # here, so that no job's seconds below carry that one-off cost
        pipe.set_progress_bar_config(disable=True)
        with torch.inference_mode():
            pipe(prompt="warm-up", width=size, height=size, num_inference_steps=steps,
                 generator=torch.Generator("cpu").manual_seed(0), output_type="pil")
    started = time.perf_counter()
    checkpoint_file = models / CHECKPOINTS[name]
    pipe.save_pretrained(str(pipeline_dir(checkpoint_file)), safe_serialization=True)
    # what the backend resolves and keys its cache on; the weights are in the folder beside it
    checkpoint_file.touch()
    files = sorted(p for p in pipeline_dir(checkpoint_file).rglob("*") if p.is_file())
    for path in files:
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
    saved = time.perf_counter() - started
    del pipe
    free_device_memory()
    return {"params": params, "files": files, "bytes": sum(p.stat().st_size for p in files),
            "build_seconds": built, "save_seconds": saved}


def evict_from_page_cache(files, drop_caches: bool) -> str:
    os.sync()
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    if not drop_caches:
        return "posix_fadvise(DONTNEED)"
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return "posix_fadvise(DONTNEED) + drop_caches"
    except OSError as exc:
        return f"posix_fadvise(DONTNEED); drop_caches refused ({exc.strerror})"


def cached_fraction(files):
    """The share of the files' pages in the page cache now (mincore), or None where it cannot be read."""
    try:
        import numpy
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                              ctypes.c_long]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
        page = os.sysconf("SC_PAGE_SIZE")
        resident = total = 0
        for path in files:
            size = path.stat().st_size
            if size == 0:
                continue
            pages = (size + page - 1) // page
            with open(path, "rb") as handle:
                address = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, handle.fileno(), 0)
                if address in (None, ctypes.c_void_p(-1).value):
                    return None
                vector = (ctypes.c_ubyte * pages)()
                try:
                    if libc.mincore(address, size, vector) != 0:
                        return None
                finally:
                    libc.munmap(address, size)
            resident += int((numpy.frombuffer(vector, dtype=numpy.uint8) & 1).sum())
            total += pages
        return resident / total if total else None
    except (OSError, AttributeError):
        return None


def filesystem(path: Path) -> str:
    """The type and mount point of the filesystem holding `path` (from /proc/mounts)."""
    path = path.resolve()
    best = ("?", "?")
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            _, mount, kind, *_ = line.split()
            if (path == Path(mount) or Path(mount) in path.parents) and len(mount) >= len(best[1]):
                best = (kind, mount)
    except OSError:
        pass
    return f"{best[0]} at {best[1]}"


def quiet_progress_bars():
    """diffusers' and transformers' loading and saving bars: noise between the lines this script prints."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def checksum(pipe) -> str:
    """A fingerprint of the UNet in memory: tells the two checkpoints apart, and a reload from its first load."""
    return f"{float(pipe.unet.conv_in.weight.detach().float().sum()):+.4f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_generation_arguments(parser)
    parser.add_argument("--sequence", default="a,a,b,b,a,b", help="the jobs' checkpoints, in order")
    parser.add_argument("--workdir", default=None,
                        help="where the checkpoints are written (on the disk to measure; not a tmpfs); "
                             "default: a temporary folder")
    parser.add_argument("--drop-caches", action="store_true",
                        help="also empty the whole page cache (root, a machine of your own) before the jobs")
    parser.add_argument("--keep", action="store_true", help="leave the written checkpoints in place")
    args = parser.parse_args(argv)
    sequence = [name.strip() for name in args.sequence.split(",") if name.strip()]
    if not sequence or set(sequence) - set(CHECKPOINTS):
        parser.error(f"--sequence takes checkpoints out of {', '.join(CHECKPOINTS)}")
    size, steps, device = generation_settings(args)
    quiet_progress_bars()

    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="gaze-switch-check-", dir=args.workdir))
    try:
        models = tmp / "models"
        (models / "SDXL").mkdir(parents=True)
        backend = DiffusersBackend(models, device=device, dtype=args.dtype, loader=load_saved_pipeline)
        cuda = backend.device.startswith("cuda")
        written = {name: write_checkpoint(models, name, args, backend.device, backend.dtype, tmp, size, steps)
                   for name in sorted(set(sequence))}
        for name, info in written.items():
            print(f"checkpoint {name}: {info['params'] / 1e6:.1f} M parameters, {info['bytes'] / 2**30:.2f} GiB "
                  f"in {len(info['files'])} files, built in {info['build_seconds']:.1f} s, "
                  f"saved in {info['save_seconds']:.1f} s", file=sys.stderr)
        eviction = evict_from_page_cache([p for info in written.values() for p in info["files"]],
                                         args.drop_caches)

        rows, first_loaded = [], set()
        for number, name in enumerate(sequence, 1):
            checkpoint = CHECKPOINTS[name]
            switching = backend.resident != [checkpoint]
            cached = cached_fraction(written[name]["files"]) if switching else None
            job = RecordingJob(f"job-{number}")
            spec = make_spec(preset_slug="bench", preset_name="Bench", prompt="a lighthouse at dusk, detailed",
                             negative="blurry, lowres", checkpoint=checkpoint, width=size, height=size,
                             steps=steps, cfg=args.cfg, sampler=args.sampler, seed=1000 + number)
            started = time.perf_counter()
            image = backend.generate(spec, job)
            seconds = time.perf_counter() - started
            load = sum(s for _, s, _ in job.loads)
            rows.append({
                "job": number, "checkpoint": name, "switch": switching, "reported": job.loads,
                "load_seconds": round(load, 3) if job.loads else None,
                "first_load": bool(job.loads) and name not in first_loaded,
                "cached_before_load": None if cached is None else round(cached, 3),
                "job_seconds": round(seconds, 3), "image_seconds": round(seconds - load, 3),
                "unet_checksum": checksum(backend._pipe), "right_size": (image.width, image.height) == (size, size),
            })
            if job.loads:
                first_loaded.add(name)
            print(f"job {number} ({name}): load {load:.2f} s, job {seconds:.2f} s", file=sys.stderr)
        held = torch.cuda.memory_allocated() / 2**30 if cuda else None
        where = filesystem(models)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    # what the backend should have reported: a load exactly where the checkpoint changed, naming it alone
    expected = [[(CHECKPOINTS[name], [CHECKPOINTS[name]])] if row["switch"] else []
                for name, row in zip(sequence, rows)]
    got = [[(checkpoint, resident) for checkpoint, _, resident in row["reported"]] for row in rows]
    switches = sum(row["switch"] for row in rows)
    correct = got == expected and backend.loads == switches
    cold = [row["load_seconds"] for row in rows if row["first_load"]]
    warm = [row["load_seconds"] for row in rows if row["load_seconds"] is not None and not row["first_load"]]
    images = [row["image_seconds"] for row in rows]

    import diffusers
    import transformers
    device_name = torch.cuda.get_device_name() if cuda else platform.processor() or platform.machine()
    results = {
        "device": f"{backend.device} ({device_name})", "dtype": str(backend.dtype).replace("torch.", ""),
        "model": "tiny SDXL-shaped" if args.tiny else "SDXL base 1.0 shapes, random weights",
        "parameters": written[sequence[0]]["params"],
        "checkpoint_gib": round(written[sequence[0]]["bytes"] / 2**30, 2), "disk": where,
        "page_cache_emptied_by": eviction, "size": f"{size}x{size}", "steps": steps, "sampler": args.sampler,
        "sequence": ",".join(sequence), "switches": switches, "loads_reported": sum(len(g) for g in got),
        "reports_correct": correct,
        "first_load_seconds_mean": round(statistics.mean(cold), 3) if cold else None,
        "page_cache_load_seconds_mean": round(statistics.mean(warm), 3) if warm else None,
        "image_seconds_median": round(statistics.median(images), 3),
        "gpu_memory_held_after_gib": None if held is None else round(held, 2),
        "torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
        "jobs": rows,
    }

    print(f"\n## GAZE diffusers backend, checkpoint switches: {results['model']}\n")
    print(f"{results['device']}, {results['dtype']}; {results['size']}, {steps} steps, {args.sampler}; "
          f"each checkpoint {results['checkpoint_gib']} GiB on {where}; page cache emptied by {eviction}.\n")
    print("| job | checkpoint | load reported, s | job (generate()), s | image (job − load), s "
          "| in page cache before the load | UNet fingerprint |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        load = "—" if row["load_seconds"] is None else (
            f"{row['load_seconds']:.2f}" + (" (first)" if row["first_load"] else " (again)"))
        cached = "—" if not row["switch"] else (
            "n/a" if row["cached_before_load"] is None else f"{row['cached_before_load']:.0%}")
        print(f"| {row['job']} | {row['checkpoint']} | {load} | {row['job_seconds']:.2f} "
              f"| {row['image_seconds']:.2f} | {cached} | {row['unet_checksum']} |")
    print()
    print("| what | value |\n| --- | --- |")
    summary = {
        "switches in the sequence / loads reported": f"{switches} / {results['loads_reported']}",
        "every report where it belongs (none for a repeat), resident = the one pipeline": correct,
        "first load of a checkpoint (from disk), mean s": results["first_load_seconds_mean"],
        "load again (page cache), mean s": results["page_cache_load_seconds_mean"],
        "image, median s (job minus its load)": results["image_seconds_median"],
        "GPU memory held after the jobs (one pipeline), GiB": results["gpu_memory_held_after_gib"],
        "every PNG the requested size": all(row["right_size"] for row in rows),
        "torch / diffusers / transformers": " / ".join((torch.__version__, diffusers.__version__,
                                                        transformers.__version__)),
    }
    for label, value in summary.items():
        print(f"| {label} | {'n/a' if value is None else value} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0 if correct else 1


if __name__ == "__main__":
    sys.exit(main())
