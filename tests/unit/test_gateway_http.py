"""The real Falcon app over a fake RPC and a fake key store: validation, auth, error mapping, static files.

No broker or database: `create_app` takes its collaborators as arguments, so every branch of the HTTP
layer can be driven from here in milliseconds.
"""
from __future__ import annotations

import io
import json
import uuid

import falcon
import falcon.testing
import pytest
from nameko.exceptions import RpcTimeout

from shared.errors import InvalidField, NotFound
from services.gateway.stores.rpc import ServiceUnavailable
from tests.fakes import AUTH, GOOD_KEY, JOB, JOB_ID, JSON, SLUG, SPEC, FakeRpc
from tests.helpers import (ESCAPES, FAILING_CALLS, FAILING_IDS, assert_json_error, make_client,
                           post_generate)


@pytest.fixture
def media_root(tmp_path):
    root = tmp_path / "media"
    root.mkdir()
    return root


@pytest.fixture
def rpc():
    return FakeRpc()


@pytest.fixture
def client(media_root, rpc):
    return make_client(media_root, rpc)[0]


# --------------------------------------------------------------------------------------------------
# Bad generate bodies: each one a 400 naming the field, and jobs.create never called
# --------------------------------------------------------------------------------------------------

LONG = "x" * 2001

BAD_BODIES = [
    # count
    ("count-zero", {"count": 0}, "count"),
    ("count-21", {"count": 21}, "count"),
    ("count-string", {"count": "3"}, "count"),
    ("count-float", {"count": 2.5}, "count"),
    ("count-bool", {"count": True}, "count"),
    ("count-null", {"count": None}, "count"),
    ("count-negative", {"count": -1}, "count"),
    # seed
    ("seed-negative", {"seed": -1}, "seed"),
    ("seed-2**64", {"seed": 2**64}, "seed"),
    ("seed-2**63", {"seed": 2**63}, "seed"),
    ("seed-string", {"seed": "abc"}, "seed"),
    ("seed-numeric-string", {"seed": "42"}, "seed"),
    ("seed-float", {"seed": 1.5}, "seed"),
    ("seed-bool", {"seed": False}, "seed"),
    ("seed-batch-past-the-largest", {"seed": 2**63 - 2, "count": 3}, "seed"),   # job i gets seed + i
    # width/height pairing
    ("width-without-height", {"width": 512}, "height"),
    ("height-without-width", {"height": 512}, "width"),
    # dimensions
    ("width-not-multiple-of-8", {"width": 513, "height": 512}, "width"),
    ("height-not-multiple-of-8", {"width": 512, "height": 100}, "height"),
    ("width-below-64", {"width": 56, "height": 512}, "width"),
    ("height-below-64", {"width": 512, "height": 0}, "height"),
    ("width-negative", {"width": -512, "height": 512}, "width"),
    ("width-above-max", {"width": 2056, "height": 512}, "width"),
    ("height-above-max", {"width": 512, "height": 4096}, "height"),
    ("width-string", {"width": "512", "height": 512}, "width"),
    ("height-float", {"width": 512, "height": 512.0}, "height"),
    ("width-bool", {"width": True, "height": 512}, "width"),
    # checkpoint
    ("checkpoint-traversal", {"checkpoint": "../../etc/passwd"}, "checkpoint"),
    ("checkpoint-inner-traversal", {"checkpoint": "SDXL/../../secret.safetensors"}, "checkpoint"),
    ("checkpoint-absolute", {"checkpoint": "/abs/path"}, "checkpoint"),
    ("checkpoint-int", {"checkpoint": 123}, "checkpoint"),
    ("checkpoint-list", {"checkpoint": ["Illustrious/model.safetensors"]}, "checkpoint"),
    ("checkpoint-empty", {"checkpoint": ""}, "checkpoint"),
    ("checkpoint-newline", {"checkpoint": "a\nb.safetensors"}, "checkpoint"),
    # prompts
    ("extra_positive-int", {"extra_positive": 123}, "extra_positive"),
    ("extra_positive-null", {"extra_positive": None}, "extra_positive"),
    ("extra_positive-list", {"extra_positive": ["a", "b"]}, "extra_positive"),
    ("extra_positive-too-long", {"extra_positive": LONG}, "extra_positive"),
    ("extra_negative-int", {"extra_negative": 123}, "extra_negative"),
    ("extra_negative-null", {"extra_negative": None}, "extra_negative"),
    ("extra_negative-list", {"extra_negative": ["a"]}, "extra_negative"),
    ("extra_negative-too-long", {"extra_negative": LONG}, "extra_negative"),
    # unknown fields
    ("unknown-field", {"prompt": "override the whole prompt"}, "prompt"),
    ("unknown-field-with-valid", {"count": 1, "steps": 200}, "steps"),
]


@pytest.mark.parametrize("body,field", [pytest.param(b, f, id=i) for i, b, f in BAD_BODIES])
def test_bad_field_is_400_naming_the_field(client, rpc, body, field):
    result = post_generate(client, body)
    assert_json_error(result, 400, field)
    assert rpc.called("jobs", "create") == []
    # validation happens before any service is asked
    assert rpc.calls == []


BAD_RAW = [
    ("not-json", b"count=3"),
    ("truncated-json", b'{"count": 3'),
    ("array", b"[]"),
    ("array-of-object", b'[{"count": 1}]'),
    ("string", b'"x"'),
    ("number", b"3"),
    ("null", b"null"),
    ("true", b"true"),
    ("NaN", b'{"seed": NaN}'),
    ("Infinity", b'{"count": Infinity}'),
    ("-Infinity", b'{"seed": -Infinity}'),
    ("bare-NaN", b"NaN"),
    ("invalid-utf8", b'{"extra_positive": "\xff\xfe"}'),
    ("duplicate-key", b'{"count": 1, "count": 20}'),
    ("nested-past-the-parsers-recursion", b"[" * 30_000 + b"]" * 30_000),   # within the 64 KiB limit
    ("object-nested-past-the-parsers-recursion", b'{"a": ' * 5_000 + b"1" + b"}" * 5_000),
]


# Text PostgreSQL cannot store (NUL) or UTF-8 cannot carry (an unpaired surrogate), in every free-text field
UNSTORABLE = [
    pytest.param(field, raw, id=f"{field}-{name}")
    for field in ("extra_positive", "extra_negative", "webhook")
    for name, raw in (("nul", "\\u0000"), ("nul-inside", "a\\u0000b"), ("lone-high-surrogate", "\\ud800"),
                      ("lone-low-surrogate", "x\\udfff"))
]


@pytest.mark.parametrize("field, escaped", UNSTORABLE)
def test_text_that_cannot_be_stored_is_400_naming_the_field(client, rpc, field, escaped):
    value = f"https://example.com/{escaped}" if field == "webhook" else escaped
    result = post_generate(client, raw=f'{{"{field}": "{value}"}}'.encode())
    assert_json_error(result, 400, field)
    assert rpc.calls == []


@pytest.mark.parametrize("raw", [pytest.param(r, id=i) for i, r in BAD_RAW])
def test_body_that_is_not_a_json_object_is_400(client, rpc, raw):
    result = post_generate(client, raw=raw)
    assert_json_error(result, 400, "body")
    assert rpc.calls == []


def test_prompt_limit_is_exact(client, rpc):
    assert post_generate(client, {"extra_positive": "x" * 2000}).status_code == 202
    assert_json_error(post_generate(client, {"extra_positive": "x" * 2001}), 400, "extra_positive")


def test_dimension_limits_are_inclusive(client, rpc):
    assert post_generate(client, {"width": 64, "height": 2048}).status_code == 202
    assert post_generate(client, {"width": 2048, "height": 64}).status_code == 202
    assert [args[1] for args in rpc.called("presets", "resolve")] == [
        {"width": 64, "height": 2048}, {"width": 2048, "height": 64}]


def test_custom_max_dimension(media_root):
    client, rpc = make_client(media_root, env={"GAZE_MAX_DIMENSION": "1024"})
    assert_json_error(post_generate(client, {"width": 1032, "height": 512}), 400, "width")
    assert_json_error(post_generate(client, {"width": 512, "height": 2048}), 400, "height")
    assert rpc.calls == []
    assert post_generate(client, {"width": 1024, "height": 1024}).status_code == 202


def test_custom_max_prompt_chars(media_root):
    client, rpc = make_client(media_root, env={"GAZE_MAX_PROMPT_CHARS": "10"})
    assert_json_error(post_generate(client, {"extra_negative": "x" * 11}), 400, "extra_negative")
    assert rpc.calls == []
    assert post_generate(client, {"extra_negative": "x" * 10}).status_code == 202


# --------------------------------------------------------------------------------------------------
# Body size
# --------------------------------------------------------------------------------------------------

def _oversized(limit=65536):
    return json.dumps({"extra_positive": "x" * (limit + 10)}).encode()


def test_oversized_body_with_content_length_is_413(client, rpc):
    result = post_generate(client, raw=_oversized())
    assert_json_error(result, 413)
    assert rpc.calls == []


def test_declared_content_length_over_limit_is_413_without_reading(client, rpc):
    # the header alone decides: a client announcing 10 MB is turned away before its body is read
    result = post_generate(client, raw=b"{}", headers={"Content-Length": str(10 * 1024 * 1024)})
    assert_json_error(result, 413)
    assert rpc.calls == []


def test_custom_max_body_bytes(media_root):
    client, rpc = make_client(media_root, env={"GAZE_MAX_BODY_BYTES": "100"})
    assert_json_error(post_generate(client, raw=b'{"extra_positive": "' + b"x" * 100 + b'"}'), 413)
    assert rpc.calls == []
    assert post_generate(client, {"extra_positive": "x" * 20}).status_code == 202


def _call_without_content_length(client, body: bytes, path=f"/api/v1/generate/{SLUG}"):
    """What gunicorn hands the app for a `Transfer-Encoding: chunked` request: no CONTENT_LENGTH, a
    wsgi.input that ends where the body ends, and wsgi.input_terminated set."""
    env = falcon.testing.create_environ(path=path, method="POST", headers={**AUTH, **JSON})
    env.pop("CONTENT_LENGTH", None)
    env["wsgi.input"] = io.BytesIO(body)
    env["wsgi.input_terminated"] = True
    start = falcon.testing.StartResponseMock()
    chunks = client.app(env, start)
    text = b"".join(chunks).decode()
    return start.status, dict((k.lower(), v) for k, v in start.headers), text


def test_oversized_body_without_content_length_is_413(client, rpc):
    status, headers, text = _call_without_content_length(client, _oversized())
    assert status.startswith("413"), (status, text)
    assert headers["content-type"].startswith("application/json")
    assert json.loads(text)["field"] == "body"
    assert rpc.calls == []


def test_body_without_content_length_is_still_validated(client, rpc):
    # a chunked body must not be mistaken for an empty one ("preset defaults")
    status, _, text = _call_without_content_length(client, b'{"count": 0}')
    assert status.startswith("400"), (status, text)
    assert json.loads(text)["field"] == "count"
    assert rpc.calls == []


def test_valid_body_without_content_length_is_used(client, rpc):
    status, _, text = _call_without_content_length(client, b'{"count": 2, "seed": 7}')
    assert status.startswith("202"), (status, text)
    assert rpc.called("presets", "resolve") == [(SLUG, {"seed": 7})]
    assert len(json.loads(text)["jobs"]) == 2


# --------------------------------------------------------------------------------------------------
# Slugs, job ids and RPC-side rejections
# --------------------------------------------------------------------------------------------------

def test_unknown_slug_is_404(media_root):
    client, rpc = make_client(media_root, FakeRpc(raises={("presets", "resolve"): NotFound("preset", "nope")}))
    result = post_generate(client, {}, slug="nope")
    body = assert_json_error(result, 404)
    assert "nope" in body["error"]
    assert rpc.called("presets", "resolve") == [("nope", {})]
    assert rpc.called("jobs", "create") == []


@pytest.mark.parametrize("slug", [
    "UPPER", "-leading-dash", "has.dot", "has%20space", "a" * 65, "%2e%2e", "..", "sl%C3%BCg", "x;drop",
])
def test_malformed_slug_is_404_without_rpc(client, rpc, slug):
    result = post_generate(client, {}, slug=slug)
    assert_json_error(result, 404)
    assert rpc.calls == []


def test_checkpoint_rejected_by_presets_service_is_400(media_root):
    rejection = InvalidField("checkpoint", "unknown checkpoint; known: Illustrious/model.safetensors")
    client, rpc = make_client(media_root, FakeRpc(raises={("presets", "resolve"): rejection}))
    result = post_generate(client, {"checkpoint": "Other/model.safetensors"})
    body = assert_json_error(result, 400, "checkpoint")
    assert "unknown checkpoint" in body["error"]
    assert rpc.called("presets", "resolve") == [(SLUG, {"checkpoint": "Other/model.safetensors"})]
    assert rpc.called("jobs", "create") == []


def test_get_job(client, rpc):
    result = client.simulate_get(f"/api/v1/job/{JOB_ID}", headers=AUTH)
    assert result.status_code == 200
    assert result.json == {**JOB, "queue_position": None}   # the guide's fields, plus the line's place
    assert rpc.calls == [("jobs", "get", (JOB_ID,))]


def test_job_id_is_normalised_before_the_rpc(client, rpc):
    client.simulate_get(f"/api/v1/job/{JOB_ID.upper()}", headers=AUTH)
    assert rpc.calls == [("jobs", "get", (JOB_ID,))]


def test_unknown_job_is_404(media_root):
    client, rpc = make_client(media_root, FakeRpc(raises={("jobs", "get"): NotFound("job", JOB_ID)}))
    result = client.simulate_get(f"/api/v1/job/{JOB_ID}", headers=AUTH)
    body = assert_json_error(result, 404)
    assert JOB_ID in body["error"]
    assert rpc.calls == [("jobs", "get", (JOB_ID,))]


@pytest.mark.parametrize("job_id", ["not-a-uuid", "123", "783f0268-ba85-4426-8ca2-6393c844c88",
                                    "783f0268-ba85-4426-8ca2-6393c844c887x", "%27%20OR%201=1"])
def test_malformed_job_id_is_404_without_rpc(client, rpc, job_id):
    result = client.simulate_get(f"/api/v1/job/{job_id}", headers=AUTH)
    assert_json_error(result, 404)
    assert rpc.calls == []


# --------------------------------------------------------------------------------------------------
# The happy path
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw,headers", [
    pytest.param(None, {}, id="no-body"),
    pytest.param(b"", {}, id="empty-body"),
    pytest.param(b"   \n", {}, id="whitespace-body"),
    pytest.param(b"{}", {}, id="empty-object"),
    pytest.param(b"{}", {"Content-Type": ""}, id="no-content-type"),
    pytest.param(b"{}", {"Content-Type": "application/x-www-form-urlencoded"}, id="curl-default-type"),
])
def test_empty_request_means_preset_defaults(client, rpc, raw, headers):
    all_headers = {**AUTH, **JSON, **headers}
    if headers.get("Content-Type") == "":
        del all_headers["Content-Type"]
    result = client.simulate_post(f"/api/v1/generate/{SLUG}", body=raw, headers=all_headers)
    assert result.status_code == 202, result.text
    assert rpc.called("presets", "resolve") == [(SLUG, {})]
    assert rpc.called("jobs", "create") == [(SPEC, 1)]
    assert len(result.json["jobs"]) == 1


def test_full_body_passes_exactly_the_given_overrides(client, rpc):
    body = {"count": 3, "checkpoint": "SDXL/sd_xl_base_1.0.safetensors", "extra_positive": "smiling, outdoors",
            "extra_negative": "blurry", "seed": 927640517599332, "width": 832, "height": 1216}
    result = post_generate(client, body)
    assert result.status_code == 202, result.text
    expected = {k: v for k, v in body.items() if k != "count"}
    assert rpc.called("presets", "resolve") == [(SLUG, expected)]
    # the spec the presets service returned goes to jobs.create untouched, with the count
    assert rpc.called("jobs", "create") == [(SPEC, 3)]


def test_partial_body_passes_only_what_was_given(client, rpc):
    post_generate(client, {"seed": 0, "extra_negative": ""})
    assert rpc.called("presets", "resolve") == [(SLUG, {"seed": 0, "extra_negative": ""})]
    assert rpc.called("jobs", "create") == [(SPEC, 1)]


def test_max_seed_is_accepted(client, rpc):
    assert post_generate(client, {"seed": 2**63 - 1}).status_code == 202
    assert rpc.called("presets", "resolve") == [(SLUG, {"seed": 2**63 - 1})]


@pytest.mark.parametrize("count", [1, 3, 20])
def test_202_body_shape(client, rpc, count):
    ids = [str(uuid.uuid4()) for _ in range(count)]
    rpc.results[("jobs", "create")] = ids
    result = post_generate(client, {"count": count})
    assert result.status_code == 202
    assert result.json == {"jobs": [{"job_id": job_id, "status": "queued"} for job_id in ids]}


def test_presets_list_has_exactly_four_keys(client, rpc):
    result = client.simulate_get("/api/v1/presets", headers=AUTH)
    assert result.status_code == 200
    assert result.json == {"presets": [
        {"preset_id": "example_01", "slug": "example_01", "name": "Example Preset", "has_cover": True},
        {"preset_id": "second", "slug": "second", "name": "Second", "has_cover": False},
    ]}
    for preset in result.json["presets"]:
        assert set(preset) == {"preset_id", "slug", "name", "has_cover"}
    assert rpc.calls == [("presets", "list", ())]


def test_trailing_slash_is_the_same_route(client, rpc):
    assert client.simulate_get("/api/v1/presets/", headers=AUTH).status_code == 200


# --------------------------------------------------------------------------------------------------
# Auth
# --------------------------------------------------------------------------------------------------

ROUTES = [
    ("GET", "/api/v1/presets"),
    ("POST", f"/api/v1/generate/{SLUG}"),
    ("GET", f"/api/v1/job/{JOB_ID}"),
]


@pytest.mark.parametrize("method,path", ROUTES)
def test_missing_key_is_401(client, rpc, method, path):
    result = client.simulate_request(method, path, body=b"{}" if method == "POST" else None)
    assert_json_error(result, 401)
    assert rpc.calls == []


@pytest.mark.parametrize("method,path", ROUTES)
@pytest.mark.parametrize("wrong", ["gz_wrong", "wrong", GOOD_KEY + "x", GOOD_KEY.upper()])
def test_wrong_key_is_403(client, rpc, method, path, wrong):
    result = client.simulate_request(method, path, headers={"X-API-Key": wrong},
                                     body=b"{}" if method == "POST" else None)
    assert_json_error(result, 403)
    assert rpc.calls == []


@pytest.mark.parametrize("method,path", ROUTES)
def test_wrong_key_in_query_is_403(client, rpc, method, path):
    result = client.simulate_request(method, path, params={"api_key": "gz_wrong"},
                                     body=b"{}" if method == "POST" else None)
    assert_json_error(result, 403)
    assert rpc.calls == []


@pytest.mark.parametrize("method,path", ROUTES)
@pytest.mark.parametrize("how", ["header", "query"])
def test_good_key_is_accepted(client, rpc, method, path, how):
    kwargs = {"headers": AUTH} if how == "header" else {"params": {"api_key": GOOD_KEY}}
    result = client.simulate_request(method, path, body=b"{}" if method == "POST" else None, **kwargs)
    assert result.status_code == (202 if method == "POST" else 200), result.text
    assert rpc.calls


def test_empty_key_header_is_401(client, rpc):
    result = client.simulate_get("/api/v1/presets", headers={"X-API-Key": ""})
    assert_json_error(result, 401)
    assert rpc.calls == []


def test_auth_comes_before_validation(client, rpc):
    # an anonymous caller learns nothing about slugs or bodies
    assert_json_error(client.simulate_post("/api/v1/generate/NOT_A_SLUG", body=b"[]"), 401)
    assert_json_error(client.simulate_get("/api/v1/job/not-a-uuid"), 401)


def test_unknown_api_route_is_json_404(client):
    assert_json_error(client.simulate_get("/api/v1/nothing-here", headers=AUTH), 404)


def test_wrong_method_is_405(client, rpc):
    result = client.simulate_delete("/api/v1/presets", headers=AUTH)
    assert result.status_code == 405
    assert rpc.calls == []


# --------------------------------------------------------------------------------------------------
# Static files
# --------------------------------------------------------------------------------------------------

def test_image_is_served_without_a_key(client, rpc, media_root):
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    path = media_root / "presets" / SLUG / "gen_1773601346_abc.png"
    path.parent.mkdir(parents=True)
    path.write_bytes(png)
    result = client.simulate_get(f"/static/uploads/presets/{SLUG}/gen_1773601346_abc.png")
    assert result.status_code == 200
    assert result.content == png
    assert result.headers["content-type"] == "image/png"
    assert rpc.calls == []


def test_missing_image_is_404(client):
    assert_json_error(client.simulate_get("/static/uploads/presets/x/missing.png"), 404)


@pytest.mark.parametrize("path", ESCAPES)
def test_static_paths_cannot_escape_the_media_root(client, rpc, media_root, path):
    secret = media_root.parent / "secret.txt"
    secret.write_text("TOP-SECRET-OUTSIDE-MEDIA-ROOT")
    # a file inside the root must not be a stepping stone either
    (media_root / "presets").mkdir(exist_ok=True)
    result = client.simulate_get(path)
    assert result.status_code == 404, (path, result.status_code)
    assert "TOP-SECRET" not in result.text
    assert "root:" not in result.text


def test_static_route_does_not_require_but_api_does(client, media_root):
    (media_root / "a.png").write_bytes(b"x")
    assert client.simulate_get("/static/uploads/a.png").status_code == 200
    assert client.simulate_get("/api/v1/presets").status_code == 401


# --------------------------------------------------------------------------------------------------
# Backend failures
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("service,method,request_", FAILING_CALLS, ids=FAILING_IDS)
def test_rpc_timeout_is_504(media_root, service, method, request_):
    client, _ = make_client(media_root, FakeRpc(raises={(service, method): RpcTimeout()}))
    assert_json_error(request_(client), 504)


@pytest.mark.parametrize("service,method,request_", FAILING_CALLS, ids=FAILING_IDS)
def test_service_unavailable_is_503_with_retry_after(media_root, service, method, request_):
    client, _ = make_client(
        media_root, FakeRpc(raises={(service, method): ServiceUnavailable(f"service '{service}' is not running")}))
    result = request_(client)
    body = assert_json_error(result, 503)
    assert service in body["error"]
    retry_after = result.headers.get("retry-after")
    assert retry_after is not None and int(retry_after) > 0


@pytest.mark.parametrize("service,method,request_", FAILING_CALLS, ids=FAILING_IDS)
def test_unexpected_error_is_opaque_500(media_root, service, method, request_, caplog):
    error = RuntimeError("kaboom: password=hunter2 at /srv/gaze/services/secret.py")
    client, _ = make_client(media_root, FakeRpc(raises={(service, method): error}))
    result = request_(client)
    assert result.status_code == 500
    assert result.headers["content-type"].startswith("application/json")
    body = result.json
    assert set(body) == {"error"}
    assert isinstance(body["error"], str) and body["error"]
    for leak in ("Traceback", "kaboom", "hunter2", "RuntimeError", "secret.py", 'File "'):
        assert leak not in result.text
    # ...but the operator can find it in the log
    assert any(record.exc_info and record.exc_info[1] is error for record in caplog.records)


def test_job_created_but_resolve_not_repeated_on_success(client, rpc):
    post_generate(client, {"count": 2})
    assert [(s, m) for s, m, _ in rpc.calls] == [("presets", "resolve"), ("jobs", "create")]


def test_every_submission_carries_a_fresh_create_request_id(client, rpc):
    """The jobs service answers a repeated delivery of one create request with the same jobs; two
    submissions are two requests."""
    assert post_generate(client, {}).status_code == 202
    assert post_generate(client, {}).status_code == 202
    first, second = rpc.request_ids
    assert uuid.UUID(first) and uuid.UUID(second) and first != second
