"""GET /thumbs/<size>/<relative_path> over real files in a temporary media root: made once with Pillow,
cached on disk, served from the cache afterwards; nothing outside the media root, no odd sizes."""
from __future__ import annotations

import io
import os
import threading

import falcon
import pytest
from PIL import Image

from services.gateway.web import thumbnails
from services.gateway.web.render import THUMB_SIZES, thumb_url
from tests.fakes import FakeKeys, FakeRpc
from tests.helpers import app_client, gateway_settings, png

REL = "presets/demo/gen_1_abc.png"


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "media"
    (root / "presets" / "demo").mkdir(parents=True)
    (root / REL).write_bytes(png(1000, 500))
    return root


@pytest.fixture
def client(root):
    rpc = FakeRpc()
    yield app_client(gateway_settings(root), rpc=rpc, keys=FakeKeys(valid=()))
    assert rpc.calls == [], "thumbnails never call a service"


def cache_file(root, size, rel=REL):
    return root / ".thumbs" / str(size) / (rel + ".webp")


def opened(result):
    image = Image.open(io.BytesIO(result.content))
    image.load()
    return image


def assert_404_json(result):
    assert result.status_code == 404, (result.status, result.text[:200])
    assert result.headers["content-type"].startswith("application/json")
    assert result.json["error"]


@pytest.mark.parametrize("size", THUMB_SIZES)
def test_first_request_makes_and_caches_the_thumbnail(client, root, size):
    assert not cache_file(root, size).exists()
    result = client.simulate_get(thumb_url(REL, size))
    assert result.status_code == 200
    assert result.headers["content-type"] == "image/webp"
    assert result.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert int(result.headers["content-length"]) == len(result.content)
    image = opened(result)
    assert image.format == "WEBP"
    assert image.size == (size, size // 2)  # fits within size×size, aspect ratio 2:1 kept
    cached = cache_file(root, size)
    assert cached.is_file()
    assert cached.read_bytes() == result.content
    # no temporary files left beside it
    assert [p.name for p in cached.parent.iterdir()] == [cached.name]


def test_second_request_is_served_from_the_cache_without_pillow(client, root, monkeypatch):
    first = client.simulate_get(thumb_url(REL, 256))
    assert first.status_code == 200

    def no_pillow(*args, **kwargs):
        raise AssertionError("Pillow touched for a cached thumbnail")

    monkeypatch.setattr(thumbnails, "make_thumbnail", no_pillow)
    monkeypatch.setattr(thumbnails.Image, "open", no_pillow)
    for _ in range(3):
        again = client.simulate_get(thumb_url(REL, 256))
        assert again.status_code == 200
        assert again.content == first.content
        assert again.headers["content-type"] == "image/webp"
        assert again.headers["cache-control"] == "public, max-age=31536000, immutable"


def test_each_size_is_cached_separately(client, root):
    small = client.simulate_get(thumb_url(REL, 256))
    large = client.simulate_get(thumb_url(REL, 512))
    assert opened(small).size == (256, 128)
    assert opened(large).size == (512, 256)
    assert cache_file(root, 256).is_file() and cache_file(root, 512).is_file()


@pytest.mark.parametrize("width,height,size,expected", [
    (500, 1000, 512, (256, 512)),      # portrait
    (1024, 1024, 256, (256, 256)),     # square
    (1000, 300, 256, (256, 77)),       # very wide: rounded, never squashed to a square
    (120, 80, 512, (120, 80)),         # smaller than the box: never enlarged
])
def test_aspect_ratio_is_kept(client, root, width, height, size, expected):
    rel = f"presets/demo/{width}x{height}.png"
    (root / rel).write_bytes(png(width, height))
    result = client.simulate_get(thumb_url(rel, size))
    assert result.status_code == 200
    assert opened(result).size == expected


@pytest.mark.parametrize("mode", ["RGBA", "P", "L", "LA"])
def test_other_image_modes(client, root, mode):
    rel = f"presets/demo/mode_{mode}.png"
    color = {"RGBA": (10, 20, 30, 128), "L": 100, "LA": (100, 50), "P": 1}[mode]
    out = io.BytesIO()
    Image.new(mode, (600, 300), color).save(out, "PNG")
    (root / rel).write_bytes(out.getvalue())
    result = client.simulate_get(thumb_url(rel, 256))
    assert result.status_code == 200
    assert opened(result).size == (256, 128)


def test_jpeg_sources_work_too(client, root):
    rel = "presets/demo/photo.jpg"
    Image.new("RGB", (2000, 1500), (0, 120, 0)).save(root / rel, "JPEG")
    result = client.simulate_get(thumb_url(rel, 512))
    assert result.status_code == 200
    assert opened(result).size == (512, 384)


@pytest.mark.parametrize("path", [
    f"/thumbs/128/{REL}", f"/thumbs/0/{REL}", f"/thumbs/-256/{REL}", f"/thumbs/1024/{REL}",
    f"/thumbs/abc/{REL}", f"/thumbs/256.0/{REL}", "/thumbs/256", "/thumbs/256/",
])
def test_sizes_other_than_the_allowed_ones_are_404(client, root, path):
    result = client.simulate_get(path)
    assert result.status_code == 404
    assert not (root / ".thumbs").exists() or not any((root / ".thumbs").rglob("*.webp"))


def test_missing_source_is_404(client, root):
    assert_404_json(client.simulate_get(thumb_url("presets/demo/nope.png", 256)))
    assert_404_json(client.simulate_get(thumb_url("presets/nope/gen.png", 512)))
    assert not (root / ".thumbs").exists()


def test_a_folder_is_not_an_image(client, root):
    assert_404_json(client.simulate_get("/thumbs/256/presets/demo"))


def test_a_file_that_is_not_an_image_is_404_and_not_cached(client, root):
    (root / "presets/demo/notes.txt").write_text("hello")
    (root / "presets/demo/broken.png").write_bytes(png(100, 100)[:40])
    assert_404_json(client.simulate_get(thumb_url("presets/demo/notes.txt", 256)))
    assert_404_json(client.simulate_get(thumb_url("presets/demo/broken.png", 256)))
    assert not list((root / ".thumbs").rglob("*.webp")) if (root / ".thumbs").exists() else True


@pytest.fixture
def outside(tmp_path):
    """A real image beside (not inside) the media root: what an escape would reach."""
    path = tmp_path / "secret.png"
    path.write_bytes(png(300, 300))
    return path


@pytest.mark.parametrize("path", [
    "/thumbs/256/../secret.png",
    "/thumbs/256/presets/../../secret.png",
    "/thumbs/256/presets/demo/../../../secret.png",
    "/thumbs/256/%2e%2e/secret.png",
    "/thumbs/256/presets%2f..%2f..%2fsecret.png",
    "/thumbs/256/..%5csecret.png",
    "/thumbs/256//etc/passwd",
    "/thumbs/256/%2fetc%2fpasswd",
    "/thumbs/256/presets/demo/%00.png",
])
def test_escape_attempts_are_404(client, root, outside, path):
    result = client.simulate_get(path)
    assert result.status_code == 404, (path, result.status)
    assert result.headers["content-type"].startswith("application/json")
    assert not (root / ".thumbs").exists() or not any((root / ".thumbs").rglob("*.webp"))
    assert not list(root.parent.glob("*.webp"))


def test_resource_refuses_escapes_given_directly(root, outside):
    # The router may normalise some of the URL forms above; the resource must hold on its own.
    resource = thumbnails.ThumbnailResource(str(root))
    for rel in ("../secret.png", "presets/../../secret.png", str(outside), "/etc/passwd", "a\x00b"):
        with pytest.raises(falcon.HTTPError) as caught:
            resource.on_get(None, falcon.Response(), 256, rel)
        assert caught.value.status == falcon.HTTP_404


def test_symlink_leaving_the_root_is_404(client, root, outside):
    (root / "presets/demo/link.png").symlink_to(outside)
    assert_404_json(client.simulate_get(thumb_url("presets/demo/link.png", 256)))


def test_symlink_inside_the_root_is_followed_and_cached_under_its_target(client, root):
    (root / "presets/demo/alias.png").symlink_to(root / REL)
    result = client.simulate_get(thumb_url("presets/demo/alias.png", 256))
    assert result.status_code == 200
    assert cache_file(root, 256).is_file()


def test_hidden_paths_and_the_cache_itself_are_not_thumbnailed(client, root):
    assert client.simulate_get(thumb_url(REL, 512)).status_code == 200
    # a thumbnail of a cached thumbnail, or of a temporary file, is refused
    assert_404_json(client.simulate_get(thumb_url(f".thumbs/512/{REL}.webp", 256)))
    (root / "presets/demo/.tmp-x.png").write_bytes(png(50, 50))
    assert_404_json(client.simulate_get(thumb_url("presets/demo/.tmp-x.png", 256)))
    assert not (root / ".thumbs/256").exists()


def test_names_that_need_quoting(client, root):
    rel = "presets/demo/with space & ü.png"
    (root / rel).write_bytes(png(400, 200))
    url = thumb_url(rel, 256)
    assert " " not in url
    result = client.simulate_get(url)
    assert result.status_code == 200
    assert cache_file(root, 256, rel).is_file()


def test_a_rewritten_source_gets_a_new_thumbnail(client, root):
    first = client.simulate_get(thumb_url(REL, 256))
    assert opened(first).size == (256, 128)
    (root / REL).write_bytes(png(300, 600))
    cached = cache_file(root, 256)
    stamp = cached.stat().st_mtime_ns + 5_000_000_000
    os.utime(root / REL, ns=(stamp, stamp))
    second = client.simulate_get(thumb_url(REL, 256))
    assert opened(second).size == (128, 256)


def test_concurrent_first_requests_make_one_whole_thumbnail(client, root, monkeypatch):
    calls = []
    real = thumbnails.make_thumbnail
    gate = threading.Barrier(8, timeout=10)

    def slow_make(source, size):
        calls.append(size)
        return real(source, size)

    monkeypatch.setattr(thumbnails, "make_thumbnail", slow_make)
    results = [None] * 8

    def fetch(i):
        gate.wait()
        results[i] = client.simulate_get(thumb_url(REL, 512))

    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert all(r is not None and r.status_code == 200 for r in results)
    assert len({r.content for r in results}) == 1
    assert len(calls) == 1  # the others waited for the first instead of decoding the source again
    cached = cache_file(root, 512)
    assert cached.read_bytes() == results[0].content
    assert [p.name for p in cached.parent.iterdir()] == [cached.name]


def test_racing_writers_leave_a_whole_file(tmp_path):
    # Across processes the lock does not help; the atomic rename must: many writers, one whole file.
    target = tmp_path / "t" / "x.webp"
    payloads = [bytes([i]) * 200_000 for i in range(6)]
    threads = [threading.Thread(target=thumbnails.write_atomically, args=(target, p)) for p in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert target.read_bytes() in payloads
    assert [p.name for p in target.parent.iterdir()] == ["x.webp"]


def test_head_answers_like_get_without_a_body(client, root):
    head = client.simulate_head(thumb_url(REL, 256))
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == "image/webp"
    assert head.headers["cache-control"] == "public, max-age=31536000, immutable"
    get = client.simulate_get(thumb_url(REL, 256))
    assert int(head.headers["content-length"]) == len(get.content)
    assert client.simulate_head(thumb_url("presets/demo/nope.png", 256)).status_code == 404
