"""The CPU preview backend: deterministic, parameter-sensitive, honest about its size and metadata."""
from __future__ import annotations

import io

import pytest
from PIL import Image

from shared.schemas import GenerationSpec
from services.generator.backends import GeneratedImage
from services.generator.backends.preview import PreviewBackend

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_spec(**changes) -> GenerationSpec:
    fields = dict(preset_slug="example_01", preset_name="Example Preset", prompt="a lighthouse at dusk",
                  negative="blurry, lowres", checkpoint="Illustrious/model.safetensors", width=128, height=96,
                  steps=6, cfg=6.0, sampler="euler_ancestral", seed=1234)
    fields.update(changes)
    return GenerationSpec(**fields)


def generate(spec, on_progress=None):
    backend = PreviewBackend()
    result = backend.generate(spec) if on_progress is None else backend.generate(spec, on_progress)
    assert isinstance(result, GeneratedImage)
    assert result.png.startswith(PNG_MAGIC)
    return result


def pixels(result) -> bytes:
    with Image.open(io.BytesIO(result.png)) as image:
        return image.convert("RGB").tobytes()


def test_same_spec_gives_identical_bytes_and_pixels():
    first, second = generate(make_spec()), generate(make_spec())
    assert first.png == second.png
    assert pixels(first) == pixels(second)


def test_determinism_does_not_depend_on_the_backend_instance_or_order():
    a = PreviewBackend().generate(make_spec(seed=1))
    PreviewBackend().generate(make_spec(seed=2))  # unrelated work in between
    b = PreviewBackend().generate(make_spec(seed=1))
    assert a.png == b.png


@pytest.mark.parametrize("change", [
    pytest.param({"seed": 1235}, id="seed"),
    pytest.param({"seed": 0}, id="seed-zero"),
    pytest.param({"prompt": "a lighthouse at dawn"}, id="prompt"),
    pytest.param({"negative": "blurry"}, id="negative"),
    pytest.param({"checkpoint": "SDXL/sd_xl_base_1.0.safetensors"}, id="checkpoint"),
])
def test_a_different_parameter_gives_different_pixels(change):
    base = pixels(generate(make_spec()))
    other = pixels(generate(make_spec(**change)))
    assert len(base) == len(other)
    # not just a different caption: a good share of the picture differs
    differing = sum(1 for x, y in zip(base, other) if x != y)
    assert differing > len(base) // 4


def test_seeds_give_many_distinct_images():
    images = {pixels(generate(make_spec(seed=seed))) for seed in range(8)}
    assert len(images) == 8


@pytest.mark.parametrize("width,height", [(128, 96), (96, 128), (64, 64), (200, 72)])
def test_output_size_matches_the_spec(width, height):
    result = generate(make_spec(width=width, height=height))
    assert (result.width, result.height) == (width, height)
    with Image.open(io.BytesIO(result.png)) as image:
        assert image.size == (width, height)
        assert image.format == "PNG"


def test_png_text_metadata_describes_the_spec():
    spec = make_spec(prompt="red fox, snow, ünïcode ✓", negative="watermark", seed=927640517599332)
    result = generate(spec)
    with Image.open(io.BytesIO(result.png)) as image:
        text = dict(image.text)
    expected = {
        "prompt": "red fox, snow, ünïcode ✓",
        "negative_prompt": "watermark",
        "seed": "927640517599332",
        "width": "128",
        "height": "96",
        "checkpoint": "Illustrious/model.safetensors",
        "preset": "example_01",
    }
    for key, value in expected.items():
        assert text.get(key) == value, key
    # the GeneratedImage carries the same metadata it wrote
    for key, value in expected.items():
        assert result.metadata[key] == value


def test_metadata_follows_the_spec_not_a_constant():
    a = generate(make_spec(seed=1, width=64, height=72))
    with Image.open(io.BytesIO(a.png)) as image:
        assert (image.text["seed"], image.text["width"], image.text["height"]) == ("1", "64", "72")


@pytest.mark.parametrize("steps", [1, 5, 12])
def test_progress_increases_and_ends_at_steps(steps):
    calls = []
    generate(make_spec(steps=steps), on_progress=lambda value, maximum: calls.append((value, maximum)))
    assert calls, "on_progress was never called"
    values = [value for value, _ in calls]
    assert values == sorted(values) and len(set(values)) == len(values), calls
    assert all(maximum == steps for _, maximum in calls)
    assert all(1 <= value <= steps for value in values)
    assert calls[-1] == (steps, steps)


def test_progress_callback_is_optional():
    # the default no-op is used; nothing raises
    assert generate(make_spec(steps=2)).png
