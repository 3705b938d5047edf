"""The real gateway app with a real API key store whose PostgreSQL cannot be reached (a pool pointed at
a closed port: nothing shared is stopped): API callers get a 503 JSON error with Retry-After, and the
request is bounded by the pool's timeout instead of hanging."""
import time

from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from services.gateway.stores.api_keys import ApiKeyStore
from tests.fakes import FakeRpc
from tests.helpers import app_client, gateway_settings

CLOSED_PORT_URL = "postgresql://postgres@127.0.0.1:1/x?connect_timeout=1"


def test_an_unreachable_database_is_a_503_with_retry_after(tmp_path):
    pool = ConnectionPool(CLOSED_PORT_URL, min_size=1, max_size=2, open=False, timeout=1.0,
                          kwargs={"autocommit": True, "row_factory": dict_row}, name="test-closed-port")
    pool.open(wait=False)
    try:
        rpc = FakeRpc()
        client = app_client(gateway_settings(tmp_path), rpc=rpc, keys=ApiKeyStore(pool))
        for _ in range(2):   # every request, not just the first
            started = time.monotonic()
            result = client.simulate_get("/api/v1/presets", headers={"X-API-Key": "gz_" + "k" * 40})
            assert time.monotonic() - started < 5
            assert result.status_code == 503, result.text
            assert result.headers["content-type"].startswith("application/json")
            assert set(result.json) == {"error"} and "database" in result.json["error"]
            assert int(result.headers["retry-after"]) > 0
            assert "127.0.0.1" not in result.text and "Traceback" not in result.text
        assert rpc.calls == []
    finally:
        pool.close(timeout=0)
