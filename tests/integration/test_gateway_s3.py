"""The gateway with GAZE_MEDIA_STORE=s3, against a real S3-protocol server (moto, over HTTP): the guide's
image URLs /static/uploads/<relative_path> stream from the bucket (type, length, ETag, Last-Modified,
304s, HEAD), a missing key or any escaping path is a JSON 404 and never a 500, an unreachable store a
503; thumbnails are made from the object and cached on the gateway's disk."""
from __future__ import annotations

import io
import os
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
from PIL import Image

from shared.media import S3MediaStore, s3_client
from services.gateway.web import thumbnails
from services.gateway.web.render import thumb_url
from tests.fakes import FakeKeys, FakeRpc
from tests.helpers import ESCAPES, app_client, gateway_settings, metric_value, png
from tests.s3_server import REGION, ACCESS_KEY, SECRET_KEY, raw_client, s3_env, unique_bucket

REL = "presets/example_01/gen_1773601346_abc.png"
URL = f"/static/uploads/{REL}"


@pytest.fixture
def media_root(tmp_path):
    root = tmp_path / "media"
    root.mkdir()
    return root


@pytest.fixture
def settings(endpoint, bucket, media_root):
    """The gateway's settings for the bucket (not the session's: no database here)."""
    return gateway_settings(media_root, s3_env(endpoint, bucket, prefix="gaze/media"))


@pytest.fixture
def store(settings):
    return S3MediaStore(settings.s3_bucket, settings.s3_prefix, endpoint_url=settings.s3_endpoint_url,
                        region=REGION, access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY)


@pytest.fixture
def rpc():
    rpc = FakeRpc()
    yield rpc
    assert rpc.calls == [], "images and thumbnails never call a service"


def make_client(settings, rpc):
    return app_client(settings, rpc=rpc, keys=FakeKeys(valid=()))


@pytest.fixture
def client(settings, rpc):
    return make_client(settings, rpc)


def assert_json_404(result):
    assert result.status_code == 404, (result.status, result.text[:200])
    assert result.headers["content-type"].startswith("application/json")
    assert result.json["error"]


# --------------------------------------------------------------------------------------------------
# /static/uploads from the bucket
# --------------------------------------------------------------------------------------------------

def test_image_streams_from_the_bucket(client, store):
    data = png()
    store.save(REL, data)
    info = store.stat(REL)
    result = client.simulate_get(URL)
    assert result.status_code == 200
    assert result.content == data
    assert result.headers["content-type"] == "image/png"
    assert int(result.headers["content-length"]) == len(data)
    assert result.headers["etag"] == f'"{info.etag}"'
    assert result.headers["last-modified"] == format_datetime(info.last_modified, usegmt=True)


def test_the_bucket_not_the_local_directory_is_served(client, store, media_root):
    (media_root / "presets" / "example_01").mkdir(parents=True)
    (media_root / REL).write_bytes(b"LOCAL COPY")
    (media_root / "only-local.png").write_bytes(b"LOCAL ONLY")
    store.save(REL, b"FROM THE BUCKET")
    assert client.simulate_get(URL).content == b"FROM THE BUCKET"
    assert_json_404(client.simulate_get("/static/uploads/only-local.png"))


def test_a_larger_image_arrives_whole(client, store):
    data = os.urandom(3 * 1024 * 1024 + 17)  # several chunks
    store.save("presets/big/gen_1_big.png", data)
    result = client.simulate_get("/static/uploads/presets/big/gen_1_big.png")
    assert result.status_code == 200
    assert result.content == data


def test_conditional_requests(client, store):
    store.save(REL, png())
    first = client.simulate_get(URL)
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    for headers in ({"If-None-Match": etag}, {"If-None-Match": f"W/{etag}"}, {"If-None-Match": f'"x", {etag}'},
                    {"If-None-Match": "*"}, {"If-Modified-Since": modified},
                    {"If-Modified-Since": format_datetime(datetime.now(timezone.utc) + timedelta(hours=1),
                                                          usegmt=True)}):
        again = client.simulate_get(URL, headers=headers)
        assert again.status_code == 304, headers
        assert again.content == b""
        assert again.headers["etag"] == etag
    for headers in ({"If-None-Match": '"something-else"'},
                    {"If-Modified-Since": "Wed, 21 Oct 2015 07:28:00 GMT"},
                    # If-None-Match decides when both are sent
                    {"If-None-Match": '"something-else"', "If-Modified-Since": modified}):
        fresh = client.simulate_get(URL, headers=headers)
        assert fresh.status_code == 200, headers
        assert fresh.content == first.content


def test_an_overwritten_image_gets_a_new_etag(client, store):
    store.save(REL, png(color=(1, 2, 3)))
    etag = client.simulate_get(URL).headers["etag"]
    store.save(REL, png(color=(4, 5, 6)))
    result = client.simulate_get(URL, headers={"If-None-Match": etag})
    assert result.status_code == 200
    assert result.headers["etag"] != etag
    assert result.content == png(color=(4, 5, 6))


def test_head_answers_like_get_without_a_body(client, store):
    data = png()
    store.save(REL, data)
    head = client.simulate_head(URL)
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == "image/png"
    assert int(head.headers["content-length"]) == len(data)
    assert head.headers["etag"] == client.simulate_get(URL).headers["etag"]
    assert client.simulate_head("/static/uploads/presets/x/missing.png").status_code == 404


def test_other_methods_are_refused(client, store):
    store.save(REL, png())
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        result = client.simulate_request(method, URL)
        assert result.status_code == 405, method
        assert "GET" in result.headers["allow"]
    assert client.simulate_get(URL).status_code == 200  # untouched


def test_missing_image_is_a_json_404(client):
    assert_json_404(client.simulate_get("/static/uploads/presets/x/missing.png"))
    assert_json_404(client.simulate_get("/static/uploads/presets/x"))


@pytest.mark.parametrize("path", ESCAPES + [
    "/static/uploads/presets/example_01/%0a.png", "/static/uploads/a%00",
    "/static/uploads/presets/./../../gaze-secret.png", "/static/uploads/..", "/static/uploads/.",
    "/static/uploads/" + "x" * 1100 + ".png",
])
def test_paths_cannot_escape_the_prefix(client, store, endpoint, settings, path):
    # objects beside the prefix: what an escape would reach
    raw = raw_client(endpoint)
    for key in ("secret.txt", "gaze/secret.txt", "gaze-secret.png", "etc/passwd"):
        raw.put_object(Bucket=settings.s3_bucket, Key=key, Body=b"TOP-SECRET-OUTSIDE-THE-PREFIX")
    store.save("presets/example_01/ok.png", png())
    result = client.simulate_get(path)
    assert result.status_code == 404, (path, result.status_code)
    assert "TOP-SECRET" not in result.text


def test_image_needs_no_key_but_the_api_does(client, store):
    store.save(REL, png())
    assert client.simulate_get(URL).status_code == 200
    assert client.simulate_get("/api/v1/presets").status_code == 401


def test_an_unreachable_store_is_503_not_500(media_root, rpc):
    client = make_client(gateway_settings(media_root, s3_env("http://127.0.0.1:9", "gaze-nowhere")), rpc)
    for path in (URL, thumb_url(REL, 256)):
        result = client.simulate_get(path)
        assert result.status_code == 503, (path, result.status)
        assert result.headers["retry-after"] == "5"
        assert result.headers["content-type"].startswith("application/json")
    assert client.simulate_head(URL).status_code == 503
    s3_client.cache_clear()


def test_a_missing_bucket_is_503_for_an_image(endpoint, media_root, rpc):
    settings = gateway_settings(media_root, s3_env(endpoint, unique_bucket()))
    assert make_client(settings, rpc).simulate_get(URL).status_code == 503


def test_metrics_label_the_route_like_the_static_route(client, store):
    store.save(REL, png())
    client.simulate_get(URL)
    client.simulate_get("/static/uploads/presets/x/missing.png")
    text = client.simulate_get("/metrics").text
    for status in ("200", "404"):
        assert metric_value(text, "gaze_http_requests_total", method="GET", route="/static/uploads/{path}",
                            status=status) == 1, status
    assert "gen_1773601346_abc" not in text


# --------------------------------------------------------------------------------------------------
# Thumbnails from the bucket
# --------------------------------------------------------------------------------------------------

def cache_file(media_root, size, rel=REL):
    return media_root / ".thumbs" / str(size) / (rel + ".webp")


def opened(result):
    image = Image.open(io.BytesIO(result.content))
    image.load()
    return image


def test_thumbnail_is_made_from_the_object_and_cached_on_local_disk(client, store, media_root, monkeypatch):
    store.save(REL, png(1000, 500))
    result = client.simulate_get(thumb_url(REL, 256))
    assert result.status_code == 200
    assert result.headers["content-type"] == "image/webp"
    assert result.headers["cache-control"] == "public, max-age=31536000, immutable"
    image = opened(result)
    assert image.format == "WEBP" and image.size == (256, 128)
    cached = cache_file(media_root, 256)
    assert cached.read_bytes() == result.content
    assert cached.stat().st_mtime_ns == store.stat(REL).mtime_ns  # the source's time, not the gateway's clock
    # served from the cache from now on: the object is not read again, Pillow not touched
    monkeypatch.setattr(thumbnails, "make_thumbnail", lambda *a: pytest.fail("Pillow touched"))
    monkeypatch.setattr(store.__class__, "read_bytes", lambda *a: pytest.fail("object read again"))
    again = client.simulate_get(thumb_url(REL, 256))
    assert again.status_code == 200 and again.content == result.content
    head = client.simulate_head(thumb_url(REL, 256))
    assert head.status_code == 200 and int(head.headers["content-length"]) == len(result.content)
    # nothing was written to the bucket by the gateway
    assert store.stat(f".thumbs/256/{REL}.webp") is None


def test_a_rewritten_object_gets_a_new_thumbnail(client, store, media_root):
    store.save(REL, png(1000, 500))
    assert opened(client.simulate_get(thumb_url(REL, 512))).size == (512, 256)
    cached = cache_file(media_root, 512)
    older = store.stat(REL).mtime_ns - 5_000_000_000  # as if the object had been rewritten since
    os.utime(cached, ns=(older, older))
    store.save(REL, png(300, 600))
    assert opened(client.simulate_get(thumb_url(REL, 512))).size == (256, 512)


def test_thumbnail_404s(client, store, media_root, endpoint, settings):
    store.save(REL, png())
    store.save("presets/demo/notes.txt", b"hello")
    store.save("presets/demo/.hidden.png", png())
    raw_client(endpoint).put_object(Bucket=settings.s3_bucket, Key="secret.png", Body=png())
    for path in (thumb_url("presets/demo/nope.png", 256), thumb_url("presets/demo/notes.txt", 256),
                 thumb_url("presets/demo/.hidden.png", 256), thumb_url("presets/example_01", 256),
                 "/thumbs/256/../secret.png", "/thumbs/256/%2e%2e/%2e%2e/secret.png",
                 "/thumbs/256/presets/..%2f..%2f..%2fsecret.png", "/thumbs/256//secret.png",
                 "/thumbs/256/presets/%00.png", f"/thumbs/128/{REL}"):
        assert_json_404(client.simulate_get(path))
    assert not (media_root / ".thumbs").exists() or not list((media_root / ".thumbs").rglob("*.webp"))


def test_an_oversized_object_is_not_read_for_a_thumbnail(client, store, monkeypatch):
    store.save(REL, png())
    monkeypatch.setattr(thumbnails, "MAX_SOURCE_BYTES", 100)
    assert_json_404(client.simulate_get(thumb_url(REL, 256)))
