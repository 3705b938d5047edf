"""The REST API as an OpenAPI 3.1 document, served at GET /api/v1/openapi.json (public, like the guide).

It describes the three endpoints of the user's guide (docs/gaze-rest-api-guide.md) exactly as the guide
does (the same paths, auth (X-API-Key header or ?api_key=), bodies, answers and status codes), and the
additions the guide copy lists after it (cancel, the key's job list). The bodies' schemas are the
pydantic models' own (shared/schemas.py): the request is the model the validation uses, with the limits of
the same settings, so the document cannot drift from what the server enforces.
tests/e2e/test_openapi_fuzz.py runs schemathesis against it.
"""
from __future__ import annotations

from shared.job_states import STATES
from shared.schemas import (SLUG_RE, AlreadyEnded, Cancelled, Error, Job, JobPage, PresetList, Queued,
                            generate_request_schema)
from services.gateway.validation import JOBS_PAGE_MAX, SINCE_LIMIT

REF_TEMPLATE = "#/components/schemas/{model}"
RESPONSE_MODELS = (PresetList, Queued, Job, JobPage, Cancelled, AlreadyEnded, Error)


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


# Prefer: wait=N (services/gateway/hold/): the answer waits until the job(s) end or N seconds pass
PREFER_WAIT = {"name": "Prefer", "in": "header", "required": False,
               "description": "wait=N (1-60): hold the answer until the job(s) end or N s pass; the answer then"
                              " carries Preference-Applied: wait=N. A malformed value is ignored (RFC 7240)",
               "schema": {"type": "string"}}
HELD_JOBS = {"type": "object", "required": ["jobs"], "properties": {"jobs": {"type": "array", "items": {
    "type": "object", "required": ["job_id", "status"], "properties": {
        "job_id": {"type": "string"}, "status": {"enum": ["queued", *STATES]},
        "result": {"type": ["object", "null"]}, "error": {"type": ["string", "null"]}}}}}}


def _events(summary, parameters):
    return {"get": {"operationId": summary[0], "summary": summary[1], "parameters": parameters, "responses": {
        "200": {"description": "Server-sent events: `event: status`, `id:` the document's version, `data:` the job"
                               " document; a keep-alive comment every 15 s",
                "content": {"text/event-stream": {"schema": {"type": "string"}}}},
        "400": _error("A bad query parameter (named in `field`)"), "404": _error("No such job"), **AUTH_ERRORS}}}


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
                    PREFER_WAIT,
                ],
                "requestBody": {"required": False, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/GenerateRequest"}}}},
                "responses": {
                    "202": {"description": "Jobs queued (a replay of an Idempotency-Key carries the header"
                                           " Idempotent-Replayed: true); with Prefer: wait, not all ended yet",
                            "content": {"application/json": {
                        "schema": {"anyOf": [{"$ref": "#/components/schemas/Queued"}, HELD_JOBS]}}}},
                    "200": {"description": "With Prefer: wait: every job ended (each with its result or error)",
                            "content": {"application/json": {"schema": HELD_JOBS}}},
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
                                "schema": {"type": "string"}}, PREFER_WAIT],
                "responses": {"200": {"description": "The job", "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/Job"}}}},
                    "404": _error("No such job"), **AUTH_ERRORS},
            }},
            "/api/v1/job/{job_id}/cancel": {"post": {
                "operationId": "cancelJob",
                "summary": "Cancel a job that has not ended",
                "parameters": [{"name": "job_id", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "responses": {
                    "202": {"description": "Cancelled: a pending job never runs, a running one is stopped",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Cancelled"}}}},
                    "409": {"description": "The job had already ended; nothing changed", "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/AlreadyEnded"}}}},
                    "404": _error("No such job"), **AUTH_ERRORS},
            }},
            "/api/v1/job/{job_id}/events": _events(("jobEvents", "Follow a job: its document now, then every change;"
                                                    " ends after a terminal state (Last-Event-ID: the current state)"),
                                                   [{"name": "job_id", "in": "path", "required": True,
                                                     "schema": {"type": "string"}}]),
            "/api/v1/events": _events(("keyEvents", "Follow every job of the calling API key from now on"),
                                      [{"name": "preset", "in": "query", "required": False,
                                        "schema": {"type": "string", "pattern": SLUG_RE.pattern}}]),
            "/api/v1/jobs": {"get": {
                "operationId": "listJobs",
                "summary": "The calling API key's jobs, newest first, a page at a time",
                "parameters": [
                    {"name": "status", "in": "query", "required": False, "schema": {"enum": list(STATES)}},
                    {"name": "preset", "in": "query", "required": False,
                     "schema": {"type": "string", "pattern": SLUG_RE.pattern}},
                    {"name": "since", "in": "query", "required": False,
                     "description": "Only jobs created at or after this Unix time (seconds)",
                     "schema": {"type": "number", "minimum": 0, "exclusiveMaximum": SINCE_LIMIT}},
                    {"name": "limit", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": JOBS_PAGE_MAX, "default": 20}},
                    {"name": "cursor", "in": "query", "required": False,
                     "description": "The previous page's next_cursor", "schema": {"type": "string"}},
                ],
                "responses": {"200": {"description": "One page of jobs", "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/JobPage"}}}},
                    "400": _error("A bad query parameter (named in `field`)"), **AUTH_ERRORS},
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
