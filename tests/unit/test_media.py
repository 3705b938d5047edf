"""shared.media: the store never leaves its root, writes atomically, and names files per job; the settings
that choose a store, checked when they are loaded. (The S3 store against a real S3 server:
tests/integration/test_media_s3.py.)"""
from __future__ import annotations

import dataclasses
import re
import uuid

import pytest

from shared import config
from shared.media import (URL_PREFIX, LocalMediaStore, UnsafePath, image_relative_path, image_url,
                          open_media_store)

NAME_RE = re.compile(r"^presets/(?P<slug>[a-z0-9][a-z0-9_-]*)/gen_(?P<stamp>\d+)_(?P<hex>[0-9a-f]+)\.png$")


@pytest.fixture
def store(tmp_path):
    root = tmp_path / "media"
    root.mkdir()
    return LocalMediaStore(root)


@pytest.mark.parametrize("bad", [
    "", "/etc/passwd", "../x", "a/../../x", "presets/../../x", "..", ".", "a/..", "x\x00.png",
    "presets/ok\x00/../../x",
])
def test_resolve_refuses_paths_outside_the_root(store, bad):
    with pytest.raises(UnsafePath):
        store.resolve(bad)


def test_resolve_refuses_a_symlink_that_leaves_the_root(store, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (store.root / "link").symlink_to(outside)
    with pytest.raises(UnsafePath):
        store.resolve("link/x.png")


def test_resolve_accepts_paths_inside_the_root(store):
    path = store.resolve("presets/example_01/gen_1_ab.png")
    assert path == store.root / "presets" / "example_01" / "gen_1_ab.png"
    assert store.resolve("a/../b.png") == store.root / "b.png"


@pytest.mark.parametrize("bad", ["", "/etc/passwd", "../x", "a/../../x", "x\x00"])
def test_save_refuses_unsafe_paths_and_writes_nothing(store, tmp_path, bad):
    before = sorted(p for p in tmp_path.rglob("*"))
    with pytest.raises(UnsafePath):
        store.save(bad, b"data")
    assert sorted(p for p in tmp_path.rglob("*")) == before


def test_save_writes_creates_directories_and_leaves_no_temp_files(store):
    path = store.save("presets/example_01/gen_1_ab.png", b"first")
    assert path.read_bytes() == b"first"
    assert store.exists("presets/example_01/gen_1_ab.png")
    assert [p.name for p in path.parent.iterdir()] == ["gen_1_ab.png"]


def test_save_overwrites(store):
    store.save("presets/s/a.png", b"first version, longer")
    path = store.save("presets/s/a.png", b"second")
    assert path.read_bytes() == b"second"
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.png"]
    assert not list(store.root.rglob(".tmp*"))


def test_save_failure_leaves_no_temp_file_and_keeps_the_old_file(store, monkeypatch):
    store.save("presets/s/a.png", b"old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("shared.media.os.replace", broken_replace)
    with pytest.raises(OSError):
        store.save("presets/s/a.png", b"new")
    assert (store.root / "presets/s/a.png").read_bytes() == b"old"
    assert sorted(p.name for p in (store.root / "presets/s").iterdir()) == ["a.png"]


def test_exists_is_false_for_missing_and_directories(store):
    assert not store.exists("presets/s/missing.png")
    (store.root / "presets").mkdir()
    assert not store.exists("presets")


def test_image_relative_path_is_unique_per_job_in_one_second():
    created_at = 1773601346.25
    ids = [str(uuid.uuid4()) for _ in range(20)]
    paths = [image_relative_path("example_01", job_id, created_at) for job_id in ids]
    assert len(set(paths)) == 20
    for job_id, path in zip(ids, paths):
        match = NAME_RE.match(path)
        assert match, path
        assert match["slug"] == "example_01"
        assert match["stamp"] == "1773601346"
        assert match["hex"] == job_id.replace("-", "")


def test_image_relative_path_is_stable_for_the_same_job(store):
    job_id, created_at = str(uuid.uuid4()), 1773601346.9
    first = image_relative_path("example_01", job_id, created_at)
    assert image_relative_path("example_01", job_id, created_at) == first
    # a redelivered job writes the same file again: one file, the newest bytes
    store.save(first, b"attempt 1")
    store.save(image_relative_path("example_01", job_id, created_at), b"attempt 2")
    files = [p for p in store.root.rglob("*") if p.is_file()]
    assert files == [store.root / first]
    assert files[0].read_bytes() == b"attempt 2"


@pytest.mark.parametrize("slug", ["", "../x", "a/b", "UPPER", "-x", "x" * 65, "a\x00", "..", "a b"])
def test_image_relative_path_rejects_a_bad_slug(slug):
    with pytest.raises(UnsafePath):
        image_relative_path(slug, str(uuid.uuid4()), 1773601346.0)


def test_image_url():
    assert image_url("presets/a/gen_1_ab.png") == f"{URL_PREFIX}/presets/a/gen_1_ab.png"
    assert URL_PREFIX == "/static/uploads"


# --------------------------------------------------------------------------------------------------
# Settings and the factory
# --------------------------------------------------------------------------------------------------

def test_local_is_the_default(tmp_path):
    settings = config.load({"GAZE_MEDIA_ROOT": str(tmp_path)})
    assert settings.media_store == "local"
    store = open_media_store(settings)
    assert isinstance(store, LocalMediaStore) and store.root == tmp_path.resolve()


@pytest.mark.parametrize("env,message", [
    ({"GAZE_MEDIA_STORE": "ftp"}, "GAZE_MEDIA_STORE"),
    ({"GAZE_MEDIA_STORE": "s3"}, "GAZE_S3_BUCKET"),
    ({"GAZE_MEDIA_STORE": "s3", "GAZE_S3_BUCKET": "b", "GAZE_S3_ACCESS_KEY_ID": "k"}, "GAZE_S3_SECRET"),
    ({"GAZE_S3_SECRET_ACCESS_KEY": "s"}, "GAZE_S3_ACCESS_KEY_ID"),
])
def test_bad_settings_are_refused_at_load(env, message):
    with pytest.raises(ValueError, match=message):
        config.load(env)


def test_media_store_name_is_case_insensitive():
    assert config.load({"GAZE_MEDIA_STORE": " S3 ", "GAZE_S3_BUCKET": "b"}).media_store == "s3"
    assert config.load({"GAZE_MEDIA_STORE": ""}).media_store == "local"


def test_factory_refuses_an_unknown_store():
    settings = dataclasses.replace(config.load({}), media_store="ftp")
    with pytest.raises(ValueError, match="GAZE_MEDIA_STORE"):
        open_media_store(settings)


def test_gaze_init_makes_the_local_directory(tmp_path):
    from operations.cli import ensure_media_store

    ensure_media_store(config.load({"GAZE_MEDIA_ROOT": str(tmp_path / "media")}))
    assert (tmp_path / "media").is_dir()
