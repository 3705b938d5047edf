"""The Python client's models (clients/python/gaze_client/models.py) against the server's OpenAPI document
(services/gateway/api/openapi.py, derived from shared/schemas.py): each client model has the schema of the
same name, with the same fields, the same required ones and the same JSON types, so client and server
cannot drift apart."""
import pydantic
import pytest

from gaze_client import models
from services.gateway.api.openapi import document
from shared import config
from shared.job_states import STATES, TERMINAL

CLIENT_MODELS = [models.Preset, models.Result, models.Progress, models.Job, models.JobPage, models.Cancelled]


def shape(schema):
    """A property's schema as a set of JSON types: a $ref as its model's name, an enum as its values."""
    if "$ref" in schema:
        return {"ref:" + schema["$ref"].rsplit("/", 1)[1]}
    if "anyOf" in schema:
        return set().union(*(shape(branch) for branch in schema["anyOf"]))
    if "enum" in schema:
        return {("enum", tuple(sorted(schema["enum"])))}
    if "const" in schema:
        return {("enum", (schema["const"],))}
    if schema.get("type") == "array":
        return {("array", frozenset(shape(schema["items"])))}
    kind = schema.get("type")
    return set(kind) if isinstance(kind, list) else {kind}


@pytest.fixture(scope="module")
def server_schemas():
    return document(config.load({}))["components"]["schemas"]


def test_every_client_model_is_in_the_document(server_schemas):
    defined = {name for name, value in vars(models).items()
               if isinstance(value, type) and issubclass(value, pydantic.BaseModel)
               and value.__module__ == models.__name__ and not name.startswith("_")}
    assert defined == {model.__name__ for model in CLIENT_MODELS}
    assert defined <= set(server_schemas)


@pytest.mark.parametrize("model", CLIENT_MODELS, ids=lambda model: model.__name__)
def test_fields_required_fields_and_types_agree(server_schemas, model):
    server = server_schemas[model.__name__]
    client = model.model_json_schema(mode="serialization")
    assert set(client["properties"]) == set(server["properties"])
    assert set(client.get("required", ())) == set(server.get("required", ()))
    for name, prop in server["properties"].items():
        assert shape(client["properties"][name]) == shape(prop), f"{model.__name__}.{name}"


def test_the_status_words_are_the_servers():
    assert models.STATUSES == tuple(STATES)
    assert models.TERMINAL == frozenset(TERMINAL)


def test_the_check_sees_a_drift():
    """The comparison fails for a model whose field type or required set differs."""
    class Progress(pydantic.BaseModel):
        value: int
        max: str

    server = models.Progress.model_json_schema(mode="serialization")
    client = Progress.model_json_schema(mode="serialization")
    assert shape(client["properties"]["max"]) != shape(server["properties"]["max"])
    assert shape({"anyOf": [{"type": "integer"}, {"type": "null"}]}) == {"integer", "null"}
