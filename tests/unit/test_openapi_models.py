"""The API's shapes are written once, as pydantic models (shared/schemas.py): the OpenAPI document
(services/gateway/api/openapi.py) and the web UI's Generate form (services/gateway/web/presets.py) are
read off them. Pinned here: the document's request schema agrees with what validation accepts, limits the
settings set included; the answers' schemas are the models'; the form shows every field of GenerateRequest
with the same limits; and a field added to the model appears in both without another edit. No I/O.
"""
from __future__ import annotations

import re
from typing import Optional

import falcon
import falcon.testing
import pytest
from jsonschema import Draft202012Validator
from markupsafe import escape
from pydantic import Field

from shared import config, media, schemas
from shared.job_states import STATES
from shared.schemas import MAX_COUNT, MAX_SEED, GenerateRequest, value_schema
from services.gateway import validation
from services.gateway.api import openapi
from services.gateway.errors import ApiError
from services.gateway.web import presets as web_presets

SETTINGS = config.Settings(max_dimension=1024, max_prompt_chars=500)   # not the defaults: they must travel
SLUG = "example_01"
PRESET = {"preset_id": SLUG, "slug": SLUG, "name": "Example Preset", "prompt": "a traveller", "negative": "",
          "checkpoint": "Illustrious/model.safetensors", "width": 832, "height": 1216, "steps": 28, "cfg": 5.5,
          "sampler": "euler_ancestral", "cover_path": None}


def request_schema(settings=SETTINGS) -> dict:
    return openapi.document(settings)["components"]["schemas"]["GenerateRequest"]


def server_accepts(body: dict, settings=SETTINGS) -> bool:
    try:
        validation.generate_request(body, settings)
    except ApiError:
        return False
    return True


# --------------------------------------------------------------------------------------------------
# the OpenAPI document
# --------------------------------------------------------------------------------------------------

def test_every_request_field_is_documented_with_the_models_constraints():
    properties = request_schema()["properties"]
    assert list(properties) == list(GenerateRequest.model_fields)
    bounds = {"ge": "minimum", "le": "maximum"}
    for name, field in GenerateRequest.model_fields.items():
        documented = value_schema(properties[name])
        declared = {bounds[kind]: getattr(rule, kind) for rule in field.metadata for kind in bounds
                    if hasattr(rule, kind)}
        assert declared.items() <= documented.items(), name
        assert properties[name]["title"] == field.title and properties[name]["description"] == field.description
    assert (value_schema(properties["count"])["maximum"], value_schema(properties["seed"])["maximum"]) == (MAX_COUNT,
                                                                                                         MAX_SEED)
    assert request_schema()["additionalProperties"] is False   # extra="forbid"


def test_the_settings_limits_are_documented():
    properties = request_schema()["properties"]
    for name in ("width", "height"):
        assert value_schema(properties[name]) == {"type": "integer", "minimum": 64, "maximum": 1024, "multipleOf": 8}
    for name in ("extra_positive", "extra_negative"):
        assert properties[name]["maxLength"] == 500
    other = config.Settings(max_dimension=4096, max_prompt_chars=20)
    assert value_schema(request_schema(other)["properties"]["width"])["maximum"] == 4096
    assert request_schema(other)["properties"]["extra_negative"]["maxLength"] == 20


# Bodies at every limit, on both sides of it. JSON Schema alone cannot say one thing the server does:
# 650.0 is a JSON Schema integer, which strict validation refuses (tests/e2e/test_openapi_fuzz.py skips
# that check for it), so no float is listed here.
BODIES = [
    {}, {"count": 1}, {"count": MAX_COUNT}, {"count": 0}, {"count": MAX_COUNT + 1}, {"count": "3"}, {"count": True},
    {"count": None},
    {"seed": 0}, {"seed": MAX_SEED}, {"seed": -1}, {"seed": MAX_SEED + 1}, {"seed": None},
    {"width": 64, "height": 1024}, {"width": 56, "height": 512}, {"width": 512, "height": 1032},
    {"width": 500, "height": 512}, {"width": 512}, {"height": 512}, {"width": None, "height": None},
    {"extra_positive": "x" * 500}, {"extra_positive": "x" * 501}, {"extra_negative": "x" * 501},
    {"extra_negative": 5},
    {"checkpoint": "Illustrious/model.safetensors"}, {"checkpoint": "../etc/passwd"}, {"checkpoint": "/abs"},
    {"checkpoint": ""}, {"checkpoint": None},
    {"colour": "red"},
]


@pytest.mark.parametrize("body", BODIES, ids=[repr(body)[:60] for body in BODIES])
def test_the_documented_request_is_what_validation_accepts(body):
    assert Draft202012Validator(request_schema()).is_valid(body) == server_accepts(body)


def test_the_answers_schemas_are_the_models():
    components = openapi.document(SETTINGS)["components"]["schemas"]
    for model in openapi.RESPONSE_MODELS:
        generated = model.model_json_schema(mode="serialization", ref_template=openapi.REF_TEMPLATE)
        nested = generated.pop("$defs", {})
        assert components[model.__name__] == generated
        assert all(components[name] == schema for name, schema in nested.items())
    assert components["Job"]["properties"]["status"]["enum"] == list(STATES)
    # shared/media.py cannot lend its prefix to the model (it imports shared/schemas.py): the two must agree
    assert re.match(components["Result"]["properties"]["image_url"]["pattern"], f"{media.URL_PREFIX}/presets/a.png")


def test_every_reference_in_the_document_is_a_component():
    document = openapi.document(SETTINGS)
    references = set(re.findall(r"'\$ref': '#/components/schemas/(\w+)'", repr(document)))
    assert references and references <= set(document["components"]["schemas"])
    assert "$defs" not in repr(document)


# --------------------------------------------------------------------------------------------------
# the web UI's Generate form
# --------------------------------------------------------------------------------------------------

class StubRpc:
    """What the preset page asks the services: the preset, the checkpoints, its gallery (empty)."""

    def call(self, service, method, *args):
        answers = {("presets", "get"): dict(PRESET),
                   ("presets", "checkpoints"): ["Illustrious/model.safetensors", "SDXL/sd_xl_base_1.0.safetensors"],
                   ("jobs", "images"): []}
        return answers[(service, method)]


def render_preset_page(settings=SETTINGS) -> str:
    req = falcon.testing.create_req(path=f"/presets/{SLUG}")
    resp = falcon.Response()
    web_presets.PresetResource(StubRpc(), settings).on_get(req, resp, SLUG)
    return resp.text


def control(html: str, name: str) -> str:
    """The opening tag of the form control named `name`."""
    match = re.search(rf'<(input|textarea|select)\b[^>]*\bname="{name}"[^>]*>', html)
    assert match, f"the form has no control named {name}"
    return match.group(0)


def form_fields():
    """The model's fields a person sets on the web form: all but those the form leaves to API clients."""
    names = [name for name in GenerateRequest.model_fields if name not in web_presets.NOT_ON_THE_FORM]
    assert len(names) == len(GenerateRequest.model_fields) - len(web_presets.NOT_ON_THE_FORM)
    return names


def test_the_webhook_fields_are_not_on_the_form():
    html = render_preset_page()
    assert web_presets.NOT_ON_THE_FORM == ("webhook", "webhook_events_filter")
    assert 'name="webhook' not in html and "Webhook" not in html


def test_the_form_has_every_model_field_in_order_with_the_documented_limits():
    fields = web_presets.generate_form(SETTINGS)
    assert [field.name for field in fields] == form_fields()
    properties = request_schema()["properties"]
    html_names = {"minimum": "min", "maximum": "max", "multipleOf": "step", "maxLength": "maxlength"}
    for field in fields:
        documented = value_schema(properties[field.name])
        assert {html_names[key]: value for key, value in documented.items() if key in html_names}.items() \
            <= field.attrs.items(), field.name
        assert (field.label, field.help) == (properties[field.name]["title"], properties[field.name]["description"])


def test_the_page_renders_every_model_field():
    html = render_preset_page()
    names = re.findall(r'<(?:input|textarea|select)\b[^>]*\bname="(\w+)"', re.split(r'data-generate\b[^>]*>', html)[1]
                       .split("</form>")[0])
    assert [name for name in names if name != "csrf_token"] == form_fields()
    assert 'type="number"' in control(html, "count") and 'max="20"' in control(html, "count")
    assert 'max="1024"' in control(html, "width") and 'step="8"' in control(html, "width")
    assert 'placeholder="832"' in control(html, "width")        # empty: the preset's own width
    assert 'placeholder="random"' in control(html, "seed")
    assert 'maxlength="500"' in control(html, "extra_positive")
    assert control(html, "checkpoint").startswith("<select")     # the known checkpoints, not free text
    assert "Illustrious/model.safetensors (preset default)" in html
    for field in map(GenerateRequest.model_fields.get, form_fields()):
        assert f">{field.title}<" in html and str(escape(field.description)) in html   # as Jinja escapes it


def test_the_form_sends_the_guides_types():
    fields = web_presets.generate_form(SETTINGS)
    form = {"count": "3", "seed": " 42 ", "extra_positive": " in the rain ", "extra_negative": "",
            "width": "512", "height": "abc", "checkpoint": " SDXL/sd_xl_base_1.0.safetensors "}
    assert web_presets.generate_body(form, fields) == {
        "count": 3, "seed": 42, "extra_positive": " in the rain ", "width": 512, "height": "abc",
        "checkpoint": "SDXL/sd_xl_base_1.0.safetensors"}


# --------------------------------------------------------------------------------------------------
# a field added to the model shows up in both
# --------------------------------------------------------------------------------------------------

class WithMoreFields(GenerateRequest):
    style: str = Field("", max_length=40, title="Style", description="A style to apply")
    steps: Optional[int] = Field(None, ge=1, le=50, title="Steps", description="Sampling steps")


@pytest.fixture
def more_fields(monkeypatch):
    monkeypatch.setattr(schemas, "GenerateRequest", WithMoreFields)


def test_a_new_model_field_is_documented(more_fields):
    properties = request_schema()["properties"]
    assert properties["style"]["maxLength"] == 40
    assert value_schema(properties["steps"]) == {"type": "integer", "minimum": 1, "maximum": 50}
    assert list(properties)[-2:] == ["style", "steps"]


def test_a_new_model_field_is_in_the_form(more_fields):
    html = render_preset_page()
    assert 'maxlength="40"' in control(html, "style") and control(html, "style").startswith("<textarea")
    assert 'min="1"' in control(html, "steps") and 'max="50"' in control(html, "steps")
    assert ">Steps<" in html and "Sampling steps" in html
    fields = web_presets.generate_form(SETTINGS)
    assert web_presets.generate_body({"steps": "30", "style": "ink"}, fields) == {"steps": 30, "style": "ink"}


def test_a_field_the_form_cannot_show_is_an_error_not_a_silent_gap(monkeypatch):
    class WithAFlag(GenerateRequest):
        upscale: bool = False

    monkeypatch.setattr(schemas, "GenerateRequest", WithAFlag)
    with pytest.raises(TypeError, match="upscale"):
        web_presets.generate_form(SETTINGS)
