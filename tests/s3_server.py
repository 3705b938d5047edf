"""A real S3-protocol server for tests: moto's server mode (`moto[server]`) on a free port in a thread of
the test process. boto3 talks HTTP to it exactly as it would to MinIO or AWS; nothing is patched
in-process. moto keeps its state per process, so every test uses buckets of its own (`unique_bucket`)."""
from __future__ import annotations

import contextlib
import logging
import uuid

ACCESS_KEY = "gaze-test-key"
SECRET_KEY = "gaze-test-secret"
REGION = "us-east-1"


@contextlib.contextmanager
def moto_s3_server():
    """Yields the endpoint URL (http://127.0.0.1:<port>) of a running moto server; stopped on exit."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access-log line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def unique_bucket(prefix="gaze-test") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def s3_env(endpoint_url: str, bucket: str, prefix: str = "") -> dict:
    """The GAZE_* variables that point a process at `bucket` on the test server."""
    return {"GAZE_MEDIA_STORE": "s3", "GAZE_S3_ENDPOINT_URL": endpoint_url, "GAZE_S3_BUCKET": bucket,
            "GAZE_S3_PREFIX": prefix, "GAZE_S3_REGION": REGION, "GAZE_S3_ACCESS_KEY_ID": ACCESS_KEY,
            "GAZE_S3_SECRET_ACCESS_KEY": SECRET_KEY}


def raw_client(endpoint_url: str):
    """A plain boto3 client, to look into the bucket behind the store's back."""
    import boto3

    return boto3.client("s3", endpoint_url=endpoint_url, region_name=REGION, aws_access_key_id=ACCESS_KEY,
                        aws_secret_access_key=SECRET_KEY)


def all_keys(client, bucket: str) -> list:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))
