"""The whole stack with GAZE_MEDIA_STORE=s3 against a real S3-protocol server (moto, over HTTP): `gaze up`
creates the bucket, a generator process writes the PNG there, the gateway serves the guide's image URL
and a thumbnail from it, and nothing lands in the local media directory."""
import io

import pytest
from PIL import Image

from tests.stack import running_stack
from tests.s3_server import all_keys, moto_s3_server, raw_client, s3_env, unique_bucket

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PREFIX = "gaze-e2e/media"


@pytest.fixture(scope="module")
def s3_stack(tmp_path_factory):
    with moto_s3_server() as endpoint:
        bucket = unique_bucket("gaze-e2e")
        with running_stack(tmp_path_factory.mktemp("stack_s3"), generators=1,
                           **s3_env(endpoint, bucket, prefix=PREFIX)) as running:
            yield running, endpoint, bucket


def test_an_image_goes_through_the_bucket(s3_stack):
    stack, endpoint, bucket = s3_stack
    assert "(bucket created)" in stack.log.read_text()  # by `gaze up` (gaze init), before any service ran

    response = stack.post("/api/v1/generate/example_01", json={"count": 2, "width": 256, "height": 384})
    assert response.status_code == 202, response.text
    jobs = [stack.wait_job(j["job_id"], timeout=90) for j in response.json()["jobs"]]
    assert [j["status"] for j in jobs] == ["done", "done"], jobs

    client = raw_client(endpoint)
    keys = all_keys(client, bucket)
    for job in jobs:
        result = job["result"]
        assert result["image_url"] == f"/static/uploads/{result['relative_path']}"
        # the guide's URL, no key needed, served from the bucket
        image = stack.get(result["image_url"], headers={})
        assert image.status_code == 200, image.text[:300]
        assert image.headers["content-type"] == "image/png"
        assert int(image.headers["content-length"]) == len(image.content)
        assert image.content.startswith(b"\x89PNG\r\n\x1a\n")
        with Image.open(io.BytesIO(image.content)) as png:
            png.load()
            assert png.format == "PNG" and png.size == (256, 384)
        # the object is in the bucket, under the prefix, byte for byte what was served
        key = f"{PREFIX}/{result['relative_path']}"
        assert key in keys
        stored = client.get_object(Bucket=bucket, Key=key)
        assert stored["Body"].read() == image.content
        assert stored["ContentType"] == "image/png"
        # a cache revalidation is a 304
        again = stack.get(result["image_url"], headers={"If-None-Match": image.headers["etag"]})
        assert again.status_code == 304
        # a thumbnail, made from the object by the gateway
        thumb = stack.get(f"/thumbs/256/{result['relative_path']}", headers={})
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/webp"
        with Image.open(io.BytesIO(thumb.content)) as webp:
            assert webp.size == (171, 256)
    assert len(keys) == 2, keys

    # and NOT in the local media directory: at most the gateway's thumbnail cache is there
    local = [p for p in stack.media_root.rglob("*") if p.is_file()]
    assert not [p for p in local if p.suffix == ".png"], local
    assert all(".thumbs" in p.relative_to(stack.media_root).parts for p in local), local

    # a missing image and an escape attempt are 404s, not 500s
    assert stack.get("/static/uploads/presets/example_01/missing.png", headers={}).status_code == 404
    assert stack.get("/static/uploads/presets/%2e%2e/%2e%2e/x.png", headers={}).status_code == 404
