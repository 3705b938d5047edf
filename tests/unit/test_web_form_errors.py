"""The web UI's field errors (services/gateway/web/form_errors.py): every problem of a form at once, in
words taken from the model's constraints, never pydantic's own ("String should match pattern '^[a-z0-9]…'")."""
from __future__ import annotations

import pytest

from shared import config
from shared.schemas import GenerateRequest, PresetFields, generate_request_schema
from services.gateway import validation
from services.gateway.web.form_errors import MESSAGES, form_errors
from services.gateway.web.presets import PRESET_LABELS, PRESET_SCHEMA, preset_errors

GOOD_PRESET = {"slug": "rainy_street", "name": "Rainy street", "checkpoint": "SDXL/sd_xl_base_1.0.safetensors"}
# what pydantic says when left to itself: none of it may reach a person
PYDANTIC_WORDS = ("should", "Input", "pattern", "^", "Value error", "valid integer", "Extra inputs")


def plain(message: str) -> bool:
    return not any(word in message for word in PYDANTIC_WORDS)


def test_every_bad_field_of_a_preset_is_named_at_once_in_plain_words():
    errors = preset_errors({"slug": "Bad Slug", "name": "", "checkpoint": "../etc/passwd", "width": 100,
                            "height": "tall", "steps": 0, "cfg": 99.0, "sampler": "Euler A"})
    assert errors == {
        "slug": "Slug may use lowercase letters, digits, _ and - only, starting with a letter or digit (e.g. my_preset)",
        "name": "Name is required",
        "checkpoint": "Checkpoint must be a model path such as Illustrious/model.safetensors (not starting with /, no ..)",
        "width": "Width must be a multiple of 8 between 64 and 8192",
        "height": "Height must be a multiple of 8 between 64 and 8192",
        "steps": "Steps must be a whole number from 1 to 200",
        "cfg": "CFG must be a number from 0 to 40",
        "sampler": "Sampler may use lowercase letters, digits and _ only (e.g. euler_ancestral)",
    }


def test_a_valid_preset_has_no_errors_and_a_services_own_reason_is_added():
    assert preset_errors(GOOD_PRESET) == {}
    from shared.errors import Conflict
    errors = preset_errors({**GOOD_PRESET, "width": 7}, Conflict("slug", "a preset with slug 'rainy_street' already exists"))
    assert errors == {"width": "Width must be a multiple of 8 between 64 and 8192",
                      "slug": "Slug: a preset with slug 'rainy_street' already exists"}


@pytest.mark.parametrize("data", [
    {"slug": ""}, {"slug": "x" * 65}, {"slug": 5}, {"name": "x" * 201}, {"name": None}, {"prompt": "x" * 4001},
    {"prompt": "nul\x00"}, {"checkpoint": "/abs"}, {"width": 1.5}, {"width": "  "}, {"width": 8200},
    {"steps": 201}, {"cfg": "lots"}, {"cfg": -1}, {"sampler": ""}, {"colour": "red"},
])
def test_no_preset_problem_is_said_in_pydantics_words(data):
    errors = preset_errors({**GOOD_PRESET, **data})
    assert errors and all(plain(message) for message in errors.values()), errors


def test_numbers_in_the_words_come_from_the_model():
    # the table holds no number of its own: they are the schema's, so a changed limit changes the words
    assert not any(ch.isdigit() for template in MESSAGES.values() for ch in template)
    schema = {**PRESET_SCHEMA, "properties": {**PRESET_SCHEMA["properties"],
                                              "steps": {**PRESET_SCHEMA["properties"]["steps"], "maximum": 150}}}
    assert form_errors(PresetFields, {**GOOD_PRESET, "steps": 500}, schema, PRESET_LABELS) == {
        "steps": "Steps must be a whole number from 1 to 150"}


def test_every_pattern_of_the_forms_has_words():
    """A constrained string a form shows needs an entry of its own: the generic words cannot say which
    characters are allowed, and the pattern itself is no help to a person."""
    settings = config.load({})
    for model_schema in (PRESET_SCHEMA, generate_request_schema(settings)):
        for name, prop in model_schema["properties"].items():
            branches = prop.get("anyOf", [prop])
            if any("pattern" in branch for branch in branches):
                assert (name, "string_pattern_mismatch") in MESSAGES or (name, "value_error") in MESSAGES, name


def test_the_generate_form_names_every_problem_with_the_operators_limits():
    settings = config.load({"GAZE_MAX_DIMENSION": "1024", "GAZE_MAX_PROMPT_CHARS": "10"})
    errors = form_errors(GenerateRequest, {"count": 50, "seed": -1, "width": 2000, "height": 500,
                                           "extra_positive": "x" * 11, "checkpoint": "../x"},
                         generate_request_schema(settings), context=validation.generate_context(settings))
    assert errors == {
        "count": "Images must be a whole number from 1 to 20",
        "checkpoint": "Checkpoint must be a model path such as Illustrious/model.safetensors (not starting with /, no ..)",
        "extra_positive": "Extra positive can be at most 10 characters (this has 11)",
        "seed": "Seed must be a whole number from 0 to 9223372036854775807",
        "width": "Width must be a multiple of 8 between 64 and 1024",
        "height": "Height must be a multiple of 8 between 64 and 1024",
    }


def test_a_check_across_fields_names_its_field():
    settings = config.load({})
    errors = form_errors(GenerateRequest, {"width": 512}, generate_request_schema(settings),
                         context=validation.generate_context(settings))
    assert errors == {"height": "Width and height must be given together"}


def test_a_required_field_left_empty_is_said_to_be_required():
    assert preset_errors({"slug": "", "name": "", "checkpoint": ""}) == {
        "slug": "Slug is required", "name": "Name is required", "checkpoint": "Checkpoint is required"}
