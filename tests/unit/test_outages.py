"""Dependency outages through the real Falcon app: a database, broker or Redis that is down (in the
gateway itself or in a service behind an RPC) is a 503 JSON error with Retry-After, never a 500 with
details; the same exception types that are not outages stay opaque 500s."""
from __future__ import annotations

import psycopg
import psycopg.errors
import pytest
import redis
from nameko.exceptions import RemoteError
from psycopg_pool import PoolTimeout

from tests.fakes import AUTH, JOB_ID, FakeKeys, FakeRpc
from tests.helpers import FAILING_CALLS, FAILING_IDS, app_client, assert_json_error, gateway_settings, make_client


@pytest.fixture
def media_root(tmp_path):
    root = tmp_path / "media"
    root.mkdir()
    return root


LEAKS = ("Traceback", "127.0.0.1", "port 5432", "secret-host", 'File "')


def assert_503(result):
    body = assert_json_error(result, 503)
    assert int(result.headers["retry-after"]) > 0
    for leak in LEAKS:
        assert leak not in result.text
    return body


class SwitchableKeys(FakeKeys):
    """An API key store whose Postgres can be taken down (`error` set) and brought back (`error` None)."""

    def __init__(self):
        super().__init__()
        self.error = None

    def verify(self, key):
        if self.error is not None:
            raise self.error
        return super().verify(key)


def client_with_keys(media_root, keys, rpc=None):
    rpc = rpc or FakeRpc()
    return app_client(gateway_settings(media_root), rpc=rpc, keys=keys), rpc


LOCAL_OUTAGES = [
    PoolTimeout("couldn't get a connection after 5.00 sec"),
    psycopg.OperationalError('connection failed: connection to server at "secret-host" (127.0.0.1), port 5432'
                             " failed: Connection refused"),
    psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
    redis.exceptions.ConnectionError("Error 111 connecting to secret-host:6379. Connection refused."),
    redis.exceptions.TimeoutError("Timeout reading from secret-host:6379"),
]
API_REQUESTS = [lambda c: c.simulate_get("/api/v1/presets", headers=AUTH),
                lambda c: c.simulate_get(f"/api/v1/job/{JOB_ID}", headers=AUTH),
                lambda c: c.simulate_post("/api/v1/generate/example_01", json={}, headers=AUTH)]


@pytest.mark.parametrize("error", LOCAL_OUTAGES, ids=lambda e: type(e).__name__)
def test_the_gateways_own_database_down_is_503(media_root, error):
    keys = SwitchableKeys()
    keys.error = error   # the API key check runs in the auth middleware, before any RPC
    client, rpc = client_with_keys(media_root, keys)
    for request_ in API_REQUESTS:
        assert_503(request_(client))
    assert rpc.calls == []


@pytest.mark.parametrize("error", LOCAL_OUTAGES[:3], ids=lambda e: type(e).__name__)
def test_a_database_error_raised_in_a_responder_is_503(media_root, error):
    client, _ = make_client(media_root, FakeRpc(raises={("jobs", "get"): error}))
    assert_503(client.simulate_get(f"/api/v1/job/{JOB_ID}", headers=AUTH))


def test_service_resumes_when_the_database_returns(media_root):
    keys = SwitchableKeys()
    client, _ = client_with_keys(media_root, keys)
    assert client.simulate_get("/api/v1/presets", headers=AUTH).status_code == 200
    keys.error = PoolTimeout("couldn't get a connection after 5.00 sec")
    assert_503(client.simulate_get("/api/v1/presets", headers=AUTH))
    keys.error = None
    assert client.simulate_get("/api/v1/presets", headers=AUTH).status_code == 200


REMOTE_OUTAGES = [
    RemoteError("OperationalError", "connection failed: connection to server at \"secret-host\", port 5432 failed"),
    RemoteError("PoolTimeout", "couldn't get a connection after 5.00 sec"),
    RemoteError("AdminShutdown", "terminating connection due to administrator command"),
    RemoteError("OperationalError", "[Errno 111] Connection refused"),   # kombu: the service lost its broker
]


@pytest.mark.parametrize("error", REMOTE_OUTAGES, ids=lambda e: e.exc_type)
@pytest.mark.parametrize("service,method,request_", FAILING_CALLS, ids=FAILING_IDS)
def test_a_services_database_down_is_503(media_root, service, method, request_, error):
    client, _ = make_client(media_root, FakeRpc(raises={(service, method): error}))
    body = assert_503(request_(client))
    assert "database" in body["error"]


@pytest.mark.parametrize("error", [
    RemoteError("ZeroDivisionError", "division by zero at secret-host"),
    RemoteError("UndefinedColumn", 'column "nope" does not exist'),
    psycopg.errors.ProgramLimitExceeded("index row size exceeds maximum at secret-host"),
    psycopg.errors.UndefinedTable('relation "jobs.nope" does not exist'),
], ids=lambda e: getattr(e, "exc_type", None) or type(e).__name__)
def test_bugs_stay_opaque_500s(media_root, error, caplog):
    client, _ = make_client(media_root, FakeRpc(raises={("jobs", "get"): error}))
    result = client.simulate_get(f"/api/v1/job/{JOB_ID}", headers=AUTH)
    assert result.status_code == 500
    assert set(result.json) == {"error"}
    assert "secret-host" not in result.text and "retry-after" not in result.headers
    assert any(record.exc_info and record.exc_info[1] is error for record in caplog.records)
