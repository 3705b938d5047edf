"""presets.resolve: a preset plus a request's overrides -> the GenerationSpec a job runs."""
from __future__ import annotations

import pytest

from shared.errors import InvalidField
from shared.schemas import GenerationSpec
from shared.contracts.presets.resolve import join_prompt, resolve

KNOWN = ["Illustrious/model.safetensors", "SDXL/sd_xl_base_1.0.safetensors"]


def make_preset(**changes) -> dict:
    preset = {"slug": "example_01", "name": "Example Preset", "prompt": "1girl, solo, portrait",
              "negative": "lowres, bad anatomy", "checkpoint": "Illustrious/model.safetensors",
              "width": 832, "height": 1216, "steps": 28, "cfg": 6.0, "sampler": "euler_ancestral"}
    preset.update(changes)
    return preset


def test_no_overrides_gives_the_preset_values_and_no_seed():
    spec = resolve(make_preset(), {}, KNOWN)
    assert isinstance(spec, GenerationSpec)
    assert spec.model_dump() == {
        "preset_slug": "example_01", "preset_name": "Example Preset", "prompt": "1girl, solo, portrait",
        "negative": "lowres, bad anatomy", "checkpoint": "Illustrious/model.safetensors",
        "width": 832, "height": 1216, "steps": 28, "cfg": 6.0, "sampler": "euler_ancestral",
        "seed": None, "kind": "preview",
    }


def test_extra_prompts_are_appended_with_comma_space():
    spec = resolve(make_preset(), {"extra_positive": "smiling, outdoors", "extra_negative": "blurry"}, KNOWN)
    assert spec.prompt == "1girl, solo, portrait, smiling, outdoors"
    assert spec.negative == "lowres, bad anatomy, blurry"


@pytest.mark.parametrize("base,extra,expected", [
    ("a, b", "c", "a, b, c"),
    ("a", "", "a"),
    ("", "c", "c"),
    ("", "", ""),
    ("a", "   ", "a"),
    ("   ", "c", "c"),
    ("a ", " c", "a, c"),
    ("a", None, "a"),
])
def test_join_prompt_has_no_stray_comma(base, extra, expected):
    assert join_prompt(base, extra) == expected


@pytest.mark.parametrize("field", ["prompt", "negative"])
def test_empty_base_prompt_gets_just_the_extra(field):
    extra_key = "extra_positive" if field == "prompt" else "extra_negative"
    spec = resolve(make_preset(**{field: ""}), {extra_key: "blurry"}, KNOWN)
    assert getattr(spec, field) == "blurry"


def test_empty_extras_leave_prompts_untouched():
    spec = resolve(make_preset(), {"extra_positive": "", "extra_negative": ""}, KNOWN)
    assert spec.prompt == "1girl, solo, portrait"
    assert spec.negative == "lowres, bad anatomy"
    assert not spec.prompt.endswith(",") and not spec.prompt.endswith(", ")


def test_size_and_seed_overrides():
    spec = resolve(make_preset(), {"width": 512, "height": 768, "seed": 927640517599332}, KNOWN)
    assert (spec.width, spec.height, spec.seed) == (512, 768, 927640517599332)
    # the rest is still the preset's
    assert (spec.steps, spec.cfg, spec.sampler) == (28, 6.0, "euler_ancestral")


def test_seed_zero_is_kept():
    assert resolve(make_preset(), {"seed": 0}, KNOWN).seed == 0


def test_known_checkpoint_override_is_used():
    spec = resolve(make_preset(), {"checkpoint": "SDXL/sd_xl_base_1.0.safetensors"}, KNOWN)
    assert spec.checkpoint == "SDXL/sd_xl_base_1.0.safetensors"


@pytest.mark.parametrize("checkpoint", ["Other/model.safetensors", "illustrious/model.safetensors",
                                        "Illustrious/model.safetensors "])
def test_unknown_checkpoint_is_invalid_field(checkpoint):
    with pytest.raises(InvalidField) as caught:
        resolve(make_preset(), {"checkpoint": checkpoint}, KNOWN)
    assert caught.value.field == "checkpoint"
    assert "unknown checkpoint" in caught.value.message


def test_unknown_checkpoint_with_empty_known_list():
    with pytest.raises(InvalidField):
        resolve(make_preset(), {"checkpoint": "Illustrious/model.safetensors"}, [])


def test_preset_checkpoint_is_not_checked_without_an_override():
    # a preset saved with a checkpoint no longer in the list still resolves; the generator reports it
    spec = resolve(make_preset(checkpoint="Retired/old.safetensors"), {}, KNOWN)
    assert spec.checkpoint == "Retired/old.safetensors"


def test_label():
    spec = resolve(make_preset(name="Night City"), {}, KNOWN)
    assert spec.label() == "Preset: Night City – preview"
    assert "\u2013" in spec.label()  # an en dash, as the API guide shows


def test_resolve_does_not_mutate_its_inputs():
    preset, overrides = make_preset(), {"extra_positive": "x", "seed": 5}
    before = (dict(preset), dict(overrides))
    resolve(preset, overrides, KNOWN)
    assert (preset, overrides) == before
