"""Fixtures shared by the unit tests of the S3 media store and of the gateway serving from it."""
import pytest

from tests.s3_server import moto_s3_server, raw_client, unique_bucket


@pytest.fixture(scope="session")
def endpoint():
    """One moto S3 server for the whole run (each test uses buckets of its own)."""
    with moto_s3_server() as url:
        yield url


@pytest.fixture
def bucket(endpoint):
    name = unique_bucket()
    raw_client(endpoint).create_bucket(Bucket=name)
    return name
