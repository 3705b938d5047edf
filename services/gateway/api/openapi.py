"""The REST API as an OpenAPI 3.1 document, served at GET /api/v1/openapi.json (public, like the guide).

It describes exactly the three endpoints of the user's guide (docs/gaze-rest-api-guide.md): the same
paths, auth (X-API-Key header or ?api_key=), bodies, answers and status codes. The bodies' schemas are the
pydantic models' own (shared/schemas.py): the request is the model the validation uses, with the limits of
the same settings, so the document cannot drift from what the server enforces.
tests/e2e/test_openapi_fuzz.py runs schemathesis against it.
"""
from __future__ import annotations

from shared.schemas import SLUG_RE, Error, Job, PresetList, Queued, generate_request_schema

REF_TEMPLATE = "#/components/schemas/{model}"
RESPONSE_MODELS = (PresetList, Queued, Job, Error)


def _error(description):
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _with_retry_after(description):
    response = _error(description)
    response["headers"] = {"Retry-After": {"description": "seconds to wait before retrying",
                                           "schema": {"type": "integer", "minimum": 1}}}
    return response


AUTH_ERRORS = {
    "401": _error("Missing API key"),
    "403": _error("Invalid API key"),
    "429": _with_retry_after("Too many requests for this API key"),
    "503": _with_retry_after("A service the gateway depends on is unreachable; retry later"),
}


def component_schemas(settings) -> dict:
    """Every schema the document refers to, by model name: the request with the settings' limits, the
    answers as they are serialised; the models they nest (`$defs`) become components of their own."""
    schemas = {"GenerateRequest": generate_request_schema(settings, ref_template=REF_TEMPLATE)}
    schemas.update((model.__name__, model.model_json_schema(mode="serialization", ref_template=REF_TEMPLATE))
                   for model in RESPONSE_MODELS)
    for schema in list(schemas.values()):
        schemas.update(schema.pop("$defs", {}))
    return schemas


def document(settings) -> dict:
    return {
        "openapi": "3.1.0",
        "info": {"title": "GAZE REST API", "version": "1.0.0",
                 "description": "Preset-based image generation: list presets, queue generations, poll jobs. "
                                "Images are served without authentication at the job's result.image_url."},
        "servers": [{"url": settings.public_url}],
        "security": [{"ApiKeyHeader": []}, {"ApiKeyQuery": []}],
        "paths": {
            "/api/v1/presets": {"get": {
                "operationId": "listPresets",
                "summary": "List presets",
                "responses": {"200": {"description": "All available presets", "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/PresetList"}}}}, **AUTH_ERRORS},
            }},
            "/api/v1/generate/{preset_slug}": {"post": {
                "operationId": "generate",
                "summary": "Queue one or more generations using a preset",
                "parameters": [
                    {"name": "preset_slug", "in": "path", "required": True,
                     "schema": {"type": "string", "pattern": SLUG_RE.pattern}},
                    {"name": "Idempotency-Key", "in": "header", "required": False,
                     "description": "Same key and body within 24 h: the same jobs again; another body: 422",
                     "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x21-\\x7e]+$"}},
                ],
                "requestBody": {"required": False, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/GenerateRequest"}}}},
                "responses": {
                    "202": {"description": "Jobs queued (a replay of an Idempotency-Key carries the header"
                                           " Idempotent-Replayed: true)", "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/Queued"}}}},
                    "400": _error("Invalid parameters (bad count, seed, or mismatched width/height), or a body"
                                  " that is not a JSON object"),
                    "404": _error("Preset slug not found"),
                    "413": _error("Request body too large"),
                    "409": _with_retry_after("A request with this Idempotency-Key is still being processed"),
                    "422": _error("Idempotency-Key reused with another body"),
                    **AUTH_ERRORS,
                },
            }},
            "/api/v1/job/{job_id}": {"get": {
                "operationId": "getJob",
                "summary": "Poll a job",
                "parameters": [{"name": "job_id", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "responses": {"200": {"description": "The job", "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/Job"}}}},
                    "404": _error("No such job"), **AUTH_ERRORS},
            }},
        },
        "components": {
            "securitySchemes": {
                "ApiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "ApiKeyQuery": {"type": "apiKey", "in": "query", "name": "api_key"},
            },
            "schemas": component_schemas(settings),
        },
    }


class OpenApiResource:
    """Public (no key), like the guide itself: it tells a client how to authenticate."""

    def __init__(self, settings):
        self.document = document(settings)

    def on_get(self, req, resp):
        resp.media = self.document
