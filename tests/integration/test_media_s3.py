"""shared.media.S3MediaStore against a real S3-protocol server (moto in server mode, over HTTP): the same
interface and the same path rules as the local store, keys under the prefix, overwrites, a missing
bucket or an unreachable server as MediaStoreError; the S3 settings, and `gaze init` creating the bucket.
(The settings' validation and the local store: tests/unit/test_media.py.)"""
from __future__ import annotations

import pytest

from shared import config
from shared.media import (LocalMediaStore, MediaNotFound, MediaStoreError, S3MediaStore, UnsafePath,
                          open_media_store, s3_client, safe_relative_path)
from tests.s3_server import (ACCESS_KEY, REGION, SECRET_KEY, all_keys, raw_client, s3_env,
                             unique_bucket)

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
REL = "presets/example_01/gen_1773601346_abc.png"

# every path the local store refuses (tests/unit/test_media.py), plus backslashes and control characters
UNSAFE = ["", "/etc/passwd", "../x", "a/../../x", "presets/../../x", "..", ".", "a/..", "x\x00.png",
          "presets/ok\x00/../../x", "..\\x", "presets\\..\\..\\x", "a\nb.png", "a\x7fb.png", "//x", "./..",
          "a/./../..", "presets/%00/x\x00"]




def make_store(endpoint, bucket, prefix="media"):
    return S3MediaStore(bucket, prefix, endpoint_url=endpoint, region=REGION, access_key_id=ACCESS_KEY,
                        secret_access_key=SECRET_KEY)


@pytest.fixture
def store(endpoint, bucket):
    return make_store(endpoint, bucket)


def test_save_exists_stat_read(store, endpoint, bucket):
    assert not store.exists(REL)
    assert store.stat(REL) is None
    key = store.save(REL, PNG)
    assert key == f"media/{REL}"
    assert store.exists(REL)
    info = store.stat(REL)
    assert info.relative_path == REL
    assert info.size == len(PNG)
    assert info.content_type == "image/png"
    assert info.etag and '"' not in info.etag
    assert info.mtime_ns > 0 and info.last_modified.tzinfo is not None
    assert store.read_bytes(REL) == PNG
    opened, body = store.open(REL)
    try:
        assert body.read() == PNG
    finally:
        body.close()
    assert opened.etag == info.etag and opened.size == len(PNG)
    # what is really in the bucket: one object under the prefix, stored as a PNG
    client = raw_client(endpoint)
    assert all_keys(client, bucket) == [f"media/{REL}"]
    head = client.head_object(Bucket=bucket, Key=f"media/{REL}")
    assert head["ContentType"] == "image/png"
    assert head["ContentLength"] == len(PNG)


def test_overwrite_keeps_one_object_with_the_newest_bytes(store, endpoint, bucket):
    store.save(REL, b"first version, the longer one")
    first = store.stat(REL)
    store.save(REL, b"second")
    assert store.read_bytes(REL) == b"second"
    assert store.stat(REL).etag != first.etag
    assert all_keys(raw_client(endpoint), bucket) == [f"media/{REL}"]


def test_without_a_prefix_keys_are_the_relative_paths(endpoint, bucket):
    store = make_store(endpoint, bucket, prefix="")
    assert store.save(REL, PNG) == REL
    assert all_keys(raw_client(endpoint), bucket) == [REL]
    assert make_store(endpoint, bucket, prefix="/nested/deeper/").key(REL) == f"nested/deeper/{REL}"


@pytest.mark.parametrize("bad", UNSAFE)
def test_both_stores_refuse_the_same_unsafe_paths(store, endpoint, bucket, tmp_path, bad):
    local = LocalMediaStore(tmp_path)
    with pytest.raises(UnsafePath):
        safe_relative_path(bad)
    with pytest.raises(UnsafePath):
        local.resolve(bad)
    for call in (lambda: store.save(bad, b"x"), lambda: store.exists(bad), lambda: store.stat(bad),
                 lambda: store.open(bad), lambda: store.read_bytes(bad)):
        with pytest.raises(UnsafePath):
            call()
    assert all_keys(raw_client(endpoint), bucket) == []


def test_a_path_cannot_reach_outside_the_prefix(store, endpoint, bucket):
    client = raw_client(endpoint)
    client.put_object(Bucket=bucket, Key="secret.png", Body=b"outside the prefix")
    client.put_object(Bucket=bucket, Key="other/x.png", Body=b"another prefix")
    for bad in ("../secret.png", "presets/../../secret.png", "../other/x.png"):
        with pytest.raises(UnsafePath):
            store.read_bytes(bad)
    assert store.stat("secret.png") is None  # media/secret.png: inside the prefix, and absent


def test_paths_are_normalised_like_the_local_store(store, tmp_path):
    local = LocalMediaStore(tmp_path)
    for path, normal in (("a/./b.png", "a/b.png"), ("a/../b.png", "b.png"), ("a//b.png", "a/b.png")):
        assert store.key(path) == f"media/{normal}"
        assert local.resolve(path) == local.root / normal
    store.save("presets/s/./x.png", b"data")
    assert store.read_bytes("presets/s/x.png") == b"data"


def test_overlong_and_unencodable_keys_are_refused(store):
    with pytest.raises(UnsafePath):
        store.key("a/" + "x" * 1100 + ".png")
    with pytest.raises(UnsafePath):
        store.key("a/\udc80.png")
    assert store.key("presets/demo/with space & ü.png") == "media/presets/demo/with space & ü.png"


def test_missing_objects_and_folders(store):
    store.save(REL, PNG)
    assert not store.exists("presets/example_01/nope.png")
    assert not store.exists("presets/example_01")  # a "folder" is no object
    assert not store.exists("presets")
    with pytest.raises(MediaNotFound):
        store.open("presets/example_01/nope.png")
    with pytest.raises(MediaNotFound):
        store.read_bytes("presets/example_01/nope.png")


def test_names_that_need_quoting(store):
    rel = "presets/demo/with space & ü + %.png"
    store.save(rel, PNG)
    assert store.read_bytes(rel) == PNG
    assert store.stat(rel).relative_path == rel


def test_ensure_bucket_creates_it_once(endpoint):
    name = unique_bucket()
    store = make_store(endpoint, name)
    client = raw_client(endpoint)
    assert name not in [b["Name"] for b in client.list_buckets()["Buckets"]]
    assert store.ensure_bucket() is True
    assert store.ensure_bucket() is False
    assert name in [b["Name"] for b in client.list_buckets()["Buckets"]]
    store.save(REL, PNG)
    assert store.exists(REL)


def test_ensure_bucket_outside_us_east_1_sets_the_location(endpoint):
    name = unique_bucket()
    store = S3MediaStore(name, endpoint_url=endpoint, region="eu-central-1", access_key_id=ACCESS_KEY,
                         secret_access_key=SECRET_KEY)
    assert store.ensure_bucket() is True
    assert raw_client(endpoint).get_bucket_location(Bucket=name)["LocationConstraint"] == "eu-central-1"


def test_a_missing_bucket_is_a_store_error_for_writes_and_reads(endpoint):
    store = make_store(endpoint, unique_bucket())
    with pytest.raises(MediaStoreError, match="NoSuchBucket"):
        store.save(REL, PNG)
    with pytest.raises(MediaStoreError, match="NoSuchBucket"):
        store.open(REL)


def test_an_unreachable_server_is_a_store_error():
    store = S3MediaStore("gaze-nowhere", endpoint_url="http://127.0.0.1:9", region=REGION,
                         access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY)
    for call in (lambda: store.save(REL, PNG), lambda: store.stat(REL), lambda: store.open(REL),
                 lambda: store.ensure_bucket()):
        with pytest.raises(MediaStoreError):
            call()


def test_empty_credentials_use_boto3s_own_chain(endpoint, bucket, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    s3_client.cache_clear()
    try:
        store = S3MediaStore(bucket, "chain", endpoint_url=endpoint, region=REGION)
        store.save(REL, PNG)
        assert store.read_bytes(REL) == PNG
        credentials = store.client._request_signer._credentials
        assert credentials.access_key == ACCESS_KEY
    finally:
        s3_client.cache_clear()


def test_stores_with_the_same_settings_share_one_client(endpoint, bucket):
    assert make_store(endpoint, bucket).client is make_store(endpoint, bucket, prefix="other").client


# --------------------------------------------------------------------------------------------------
# The settings that choose the S3 store
# --------------------------------------------------------------------------------------------------

def test_s3_settings_from_the_environment(endpoint, bucket):
    env = s3_env(endpoint, bucket, prefix="/gaze/media/")
    settings = config.load(env)
    assert (settings.media_store, settings.s3_endpoint_url, settings.s3_bucket, settings.s3_prefix,
            settings.s3_region, settings.s3_access_key_id, settings.s3_secret_access_key) == (
        "s3", endpoint, bucket, "gaze/media", REGION, ACCESS_KEY, SECRET_KEY)
    assert SECRET_KEY not in repr(settings)
    # the generator's MediaStore dependency rebuilds Settings from its nameko config
    assert config.from_nameko(settings.nameko_config()) == settings
    store = open_media_store(settings)
    assert isinstance(store, S3MediaStore)
    store.save(REL, PNG)
    assert all_keys(raw_client(endpoint), bucket) == [f"gaze/media/{REL}"]


# --------------------------------------------------------------------------------------------------
# gaze init / gaze up: the bucket is created when missing
# --------------------------------------------------------------------------------------------------

def test_gaze_init_creates_the_bucket_once(endpoint, tmp_path, capsys):
    from operations.cli import ensure_media_store

    name = unique_bucket()
    settings = config.load({"GAZE_MEDIA_ROOT": str(tmp_path / "media"), **s3_env(endpoint, name, "p")})
    ensure_media_store(settings)
    assert f"s3://{name}/p" in capsys.readouterr().out.replace(" (bucket created)", "")
    assert name in [b["Name"] for b in raw_client(endpoint).list_buckets()["Buckets"]]
    ensure_media_store(settings)
    assert "(bucket created)" not in capsys.readouterr().out
    assert not (tmp_path / "media").exists()  # nothing local for the s3 store


def test_gaze_init_waits_only_for_a_store_it_cannot_reach(endpoint, monkeypatch):
    from operations import cli

    sleeps = []
    monkeypatch.setattr("time.sleep", sleeps.append)
    unreachable = config.load(s3_env("http://127.0.0.1:9", unique_bucket()))
    with pytest.raises(MediaStoreError, match="EndpointConnectionError"):
        cli.ensure_media_store(unreachable, wait_seconds=0.5)
    assert sleeps  # it did wait and retry before giving up
    sleeps.clear()
    refused = config.load(s3_env(endpoint, "x"))  # an invalid bucket name: the server answers, no waiting
    with pytest.raises(MediaStoreError, match="InvalidBucketName"):
        cli.ensure_media_store(refused, wait_seconds=30)
    assert sleeps == []
    s3_client.cache_clear()
