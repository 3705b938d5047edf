"""A 503's body is a fixed sentence per dependency ("the message broker is not reachable; try again shortly"):
the broker's host, the exception's text and the database's address stay in the gateway's log. Through the
real app over the real RpcPool and IdempotencyStore, whose broker and database are stand-ins that fail as
kombu, amqp and psycopg do (no connection is made)."""
from __future__ import annotations

import logging

import psycopg
import pytest
from amqp.exceptions import ConnectionError as AmqpConnectionError
from kombu.exceptions import OperationalError

from services.gateway.stores import rpc as gateway_rpc
from services.gateway.stores.idempotency import IdempotencyStore
from services.gateway.stores.rpc import BROKER_UNREACHABLE, RpcPool, ServiceUnavailable
from tests.fakes import AUTH, JOB_ID, JSON
from tests.helpers import app_client, assert_json_error, gateway_settings

HOST = "rabbit-7.secret.lan"
INTERNALS = (HOST, "5672", "10.3.0.9", "Errno", "Connection refused", "OperationalError", "amqp://", "guest")
BROKER_FAILURES = [
    OperationalError(f"[Errno 111] Connection refused (amqp://guest@{HOST}:5672//)"),
    AmqpConnectionError(f"Socket closed by {HOST} (10.3.0.9:5672)"),
    OSError(111, f"Connection refused: {HOST}:5672"),
]


@pytest.fixture
def media_root(tmp_path):
    root = tmp_path / "media"
    root.mkdir()
    return root


def broker_failing(monkeypatch, error, when):
    """RpcPool's ClusterRpcProxy, failing with `error` on connecting ("start") or on the call ("call")."""
    class Failing:
        def __init__(self, config, timeout):
            pass

        def start(self):
            if when == "start":
                raise error
            return self

        def __getattr__(self, service):
            def call(*args, **kwargs):
                raise error
            return type("Service", (), {"__getattr__": lambda _, method: call})()

        def stop(self):
            pass

    monkeypatch.setattr(gateway_rpc, "ClusterRpcProxy", Failing)
    return RpcPool(f"amqp://guest:guest@{HOST}:5672/", timeout=5)


def assert_no_internals(result, caplog):
    body = assert_json_error(result, 503)
    assert int(result.headers["retry-after"]) > 0
    leaked = [internal for internal in INTERNALS if internal in result.text]
    assert not leaked, f"{result.text} carries {leaked}"
    assert HOST in caplog.text      # the operator still reads the cause, in the gateway's log
    return body


@pytest.mark.parametrize("when", ["start", "call"])
@pytest.mark.parametrize("error", BROKER_FAILURES, ids=lambda e: type(e).__name__)
def test_a_broker_failure_is_a_503_with_a_fixed_sentence_and_the_cause_in_the_log(media_root, monkeypatch, caplog,
                                                                                  error, when):
    client = app_client(gateway_settings(media_root), rpc=broker_failing(monkeypatch, error, when))
    with caplog.at_level(logging.WARNING, logger="services.gateway.errors"):
        for request_ in (lambda: client.simulate_get("/api/v1/presets", headers=AUTH),
                         lambda: client.simulate_get(f"/api/v1/job/{JOB_ID}", headers=AUTH),
                         lambda: client.simulate_post("/api/v1/generate/example_01", json={},
                                                      headers={**AUTH, **JSON})):
            assert assert_no_internals(request_(), caplog) == {"error": BROKER_UNREACHABLE}


def test_a_database_down_under_the_idempotency_keys_is_a_503_with_a_fixed_sentence(media_root, caplog):
    class DownPool:
        def connection(self):
            raise psycopg.OperationalError(f'connection to server at "{HOST}" (10.3.0.9), port 5432 failed: '
                                           f"Connection refused")

    client = app_client(gateway_settings(media_root), idempotency=IdempotencyStore(DownPool()))
    with caplog.at_level(logging.WARNING, logger="services.gateway.errors"):
        result = client.simulate_post("/api/v1/generate/example_01", json={},
                                      headers={**AUTH, **JSON, "Idempotency-Key": "k-1"})
    assert assert_no_internals(result, caplog) == {"error": "the database is unavailable; try again shortly"}


def test_a_service_unavailable_keeps_its_detail_beside_its_public_words():
    unavailable = ServiceUnavailable("the jobs service is not running; try again shortly", "no consumer on rpc-jobs")
    assert str(unavailable) == unavailable.public and unavailable.detail == "no consumer on rpc-jobs"
    assert ServiceUnavailable("plain").detail == "plain"
