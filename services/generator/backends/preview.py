"""The CPU preview backend: a deterministic abstract picture drawn with Pillow.

It is not a diffusion model and does not pretend to be one: the caption says "GAZE preview". It exists
so the whole pipeline runs on machines without a GPU. Same (prompt, negative, seed, width, height,
checkpoint) → the same pixels and the same PNG bytes; another seed → another picture.

It holds no model, yet reports a change of checkpoint as a load that took no time (JobContext.model_loaded),
as a GPU backend does: checkpoint-aware scheduling and its metrics then work on the CPU backend too.
"""
from __future__ import annotations

import hashlib
import json
import random

from PIL import Image, ImageDraw, ImageFilter, ImageFont

from services.generator.backends.base import GeneratedImage, as_context, encode_png, png_metadata

BACKEND_NAME = "preview"


def _noop(value, maximum):
    pass


def _rng(spec) -> random.Random:
    key = json.dumps([spec.prompt, spec.negative, spec.seed, spec.width, spec.height, spec.checkpoint])
    return random.Random(hashlib.sha256(key.encode()).digest())


def render(spec, on_progress=_noop) -> Image.Image:
    rng = _rng(spec)
    width, height = spec.width, spec.height
    # Work at a quarter of the size and scale up: the picture is soft by design and this keeps a
    # 1024² preview well under a tenth of a second.
    small = (max(16, width // 4), max(16, height // 4))
    top = tuple(rng.randrange(256) for _ in range(3))
    bottom = tuple(rng.randrange(256) for _ in range(3))
    mask = Image.linear_gradient("L").resize(small)
    canvas = Image.composite(Image.new("RGB", small, bottom), Image.new("RGB", small, top), mask)
    steps = max(1, spec.steps)
    shapes_per_step = 3
    for step in range(steps):
        layer = Image.new("RGBA", small, (0, 0, 0, 0))
        draw = ImageDraw.Draw(layer)
        for _ in range(shapes_per_step):
            cx, cy = rng.uniform(0, small[0]), rng.uniform(0, small[1])
            radius = rng.uniform(0.05, 0.35) * min(small)
            colour = tuple(rng.randrange(256) for _ in range(3)) + (rng.randrange(40, 140),)
            box = [cx - radius, cy - radius, cx + radius, cy + radius]
            if rng.random() < 0.7:
                draw.ellipse(box, fill=colour)
            else:
                draw.rectangle(box, fill=colour)
        canvas = Image.alpha_composite(canvas.convert("RGBA"), layer).convert("RGB")
        on_progress(step + 1, steps)
    canvas = canvas.filter(ImageFilter.GaussianBlur(radius=max(1, min(small) // 60)))
    image = canvas.resize((width, height), Image.Resampling.BICUBIC)
    _caption(image, spec)
    return image


def _caption(image, spec):
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    band = 28
    draw.rectangle([0, image.height - band, image.width, image.height], fill=(0, 0, 0))
    text = f"GAZE preview (not AI) · seed {spec.seed} · {spec.prompt[:80]}"
    draw.text((8, image.height - band + 8), text, fill=(235, 235, 235), font=font)


class PreviewBackend:
    name = BACKEND_NAME
    pipelined = False

    def __init__(self, checkpoints=None):
        self._checkpoints = list(checkpoints) if checkpoints is not None else []
        self.loaded = None      # the checkpoint of the last job: what a GPU backend would hold now

    def checkpoints(self) -> list[str]:
        """Any checkpoint name draws the same kind of picture: report the configured list."""
        return list(self._checkpoints)

    def health(self) -> tuple[bool, str]:
        return True, "preview backend"

    @classmethod
    def from_settings(cls, settings):
        return cls(settings.checkpoints)

    def generate(self, spec, job=None) -> GeneratedImage:
        job = as_context(job)
        if spec.checkpoint != self.loaded:
            self.loaded = spec.checkpoint
            job.model_loaded(spec.checkpoint, 0.0, [spec.checkpoint])
        metadata = png_metadata(spec, self.name)
        return GeneratedImage(encode_png(render(spec, job.progress), metadata), spec.width, spec.height, metadata)
