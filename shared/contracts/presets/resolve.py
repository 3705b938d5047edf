"""Turning a preset plus a request's overrides into a full generation spec.

Pure, so both owners of a resolution use the same code: the presets service (`presets.resolve`) and the
gateway answering from the presets read model (shared/contracts/presets/view.py) when no checkpoint is overridden."""
from __future__ import annotations

from shared.errors import InvalidField
from shared.schemas import GenerationSpec


def join_prompt(base: str, extra: str) -> str:
    base, extra = base.strip(), (extra or "").strip()
    if not extra:
        return base
    if not base:
        return extra
    return f"{base}, {extra}"


def resolve(preset: dict, overrides: dict, known_checkpoints) -> GenerationSpec:
    checkpoint = overrides.get("checkpoint") or preset["checkpoint"]
    if "checkpoint" in overrides and checkpoint not in known_checkpoints:
        raise InvalidField("checkpoint", f"unknown checkpoint; known: {', '.join(known_checkpoints)}")
    return GenerationSpec(
        preset_slug=preset["slug"],
        preset_name=preset["name"],
        prompt=join_prompt(preset["prompt"], overrides.get("extra_positive", "")),
        negative=join_prompt(preset["negative"], overrides.get("extra_negative", "")),
        checkpoint=checkpoint,
        width=overrides.get("width") or preset["width"],
        height=overrides.get("height") or preset["height"],
        steps=preset["steps"],
        cfg=preset["cfg"],
        sampler=preset["sampler"],
        seed=overrides.get("seed"),
    )
