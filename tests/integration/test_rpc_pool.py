"""services.gateway.stores.rpc.RpcPool against the real broker: how the gateway's RPC calls fail, and that its
proxies are reused."""
import time

import eventlet
import pytest
from nameko.exceptions import RpcTimeout
from nameko.rpc import rpc

from services.gateway.stores import rpc as gateway_rpc
from services.gateway.stores.rpc import RpcPool, ServiceUnavailable
from shared.errors import NotFound

POOL_TIMEOUT = 1.0


class EchoService:
    name = "echo_for_pool"

    @rpc
    def echo(self, value):
        return value

    @rpc
    def slow(self, seconds, value):
        eventlet.sleep(seconds)
        return value

    @rpc(expected_exceptions=NotFound)
    def missing(self, key):
        raise NotFound("thing", key)


@pytest.fixture
def echo_service(container_factory, settings):
    container = container_factory(EchoService, settings.nameko_config())
    container.start()
    return container


@pytest.fixture
def counted_proxies(monkeypatch):
    """Counts the ClusterRpcProxy objects the pool builds (each is a connection plus a reply queue)."""
    built = []

    class CountingProxy(gateway_rpc.ClusterRpcProxy):
        def __init__(self, *args, **kwargs):
            built.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(gateway_rpc, "ClusterRpcProxy", CountingProxy)
    return built


@pytest.fixture
def rpc_pool(settings):
    rpc_pool = RpcPool(settings.amqp_uri, timeout=POOL_TIMEOUT, size=4)
    yield rpc_pool
    rpc_pool.close()


def timed(fn, *args):
    started = time.monotonic()
    try:
        return fn(*args), time.monotonic() - started
    except BaseException as exc:
        exc.elapsed = time.monotonic() - started
        raise


def test_a_service_that_is_not_running_is_unavailable_promptly(rpc_pool, echo_service):
    with pytest.raises(ServiceUnavailable, match="no_such_service") as err:
        timed(rpc_pool.call, "no_such_service", "anything", 1)
    assert err.value.elapsed < POOL_TIMEOUT, "answered by the broker (unroutable), not by the timeout"
    assert rpc_pool.call("echo_for_pool", "echo", "still fine") == "still fine"


def test_a_slow_method_times_out_and_the_pool_keeps_working(rpc_pool, echo_service, counted_proxies):
    assert rpc_pool.call("echo_for_pool", "echo", "warm") == "warm"

    with pytest.raises(RpcTimeout) as err:
        timed(rpc_pool.call, "echo_for_pool", "slow", POOL_TIMEOUT * 2, "late")
    assert POOL_TIMEOUT <= err.value.elapsed < POOL_TIMEOUT * 2

    # The late reply ("late") must not reach the next caller: the timed-out proxy was discarded.
    for i in range(3):
        assert rpc_pool.call("echo_for_pool", "echo", i) == i
    eventlet.sleep(POOL_TIMEOUT * 1.5)  # the slow call has answered by now, to a reply queue nobody reads
    assert rpc_pool.call("echo_for_pool", "echo", "after") == "after"
    assert len(counted_proxies) == 2


def test_an_unreachable_broker_is_unavailable_not_a_hang():
    pool = RpcPool("amqp://guest:guest@127.0.0.1:1/", timeout=POOL_TIMEOUT)
    with eventlet.Timeout(30, AssertionError("RpcPool.call hung on an unreachable broker")):
        with pytest.raises(ServiceUnavailable, match="broker") as err:
            timed(pool.call, "jobs", "get", "x")
    assert err.value.elapsed < 10
    pool.close()


def test_not_found_arrives_as_the_shared_error(rpc_pool, echo_service):
    with pytest.raises(NotFound) as err:
        rpc_pool.call("echo_for_pool", "missing", "the-key")
    assert (err.value.kind, err.value.key) == ("thing", "the-key")
    assert rpc_pool.call("echo_for_pool", "echo", 1) == 1  # and the proxy goes back to the pool


def test_proxies_are_reused(rpc_pool, echo_service, counted_proxies):
    for i in range(20):
        assert rpc_pool.call("echo_for_pool", "echo", i) == i
    assert len(counted_proxies) == 1
