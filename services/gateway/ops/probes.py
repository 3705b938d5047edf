"""The gateway's bounded-time views of what it depends on, for /readyz and /metrics.

`Probes` is built once per gunicorn worker in wsgi.py and handed to `create_app`; tests hand it a fake
with the same three methods. Every operation here has its own time limit (PROBE_TIMEOUT), and
`run_bounded` puts an outer limit on top, so a health check or a scrape never hangs on a dead
dependency, whatever the dependency does.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from kombu import Connection

from services.gateway.stores.rpc import RpcPool

PROBE_TIMEOUT = 2.0  # seconds: RPC reply, database connection, broker connect/read


class Probes:
    def __init__(self, rpc, db_pool, amqp_uri: str, timeout: float = PROBE_TIMEOUT):
        """`rpc` should be a pool of its own with a short timeout (see `from_settings`), so that a probe
        never waits behind, or as long as, the requests' RPCs."""
        self.rpc = rpc
        self.db_pool = db_pool
        self.amqp_uri = amqp_uri
        self.timeout = timeout

    @classmethod
    def from_settings(cls, settings, db_pool, timeout: float = PROBE_TIMEOUT) -> "Probes":
        timeout = min(timeout, settings.rpc_timeout)
        return cls(RpcPool(settings.amqp_uri, timeout, size=2), db_pool, settings.amqp_uri, timeout)

    def call(self, service: str, method: str, *args):
        """An RPC with the probe timeout (RpcTimeout / ServiceUnavailable as from RpcPool)."""
        return self.rpc.call(service, method, *args)

    def ping_database(self) -> None:
        """SELECT 1 through the gateway's own pool: waits at most `timeout` for a connection."""
        with self.db_pool.connection(timeout=self.timeout) as conn:
            conn.execute("SELECT 1").fetchone()

    def queue_depth(self, queue_name: str) -> dict:
        """Messages ready in a queue and its consumers, by a passive declare (never creates the queue)
        on a short-lived connection: one connect, one round trip, every step time-limited."""
        with Connection(self.amqp_uri, connect_timeout=self.timeout,
                        transport_options={"read_timeout": self.timeout, "write_timeout": self.timeout}) as conn:
            conn.connect()  # one try, no kombu retry loop
            channel = conn.channel()
            try:
                _, messages, consumers = channel.queue_declare(queue=queue_name, passive=True)
            finally:
                channel.close()
        return {"messages": messages, "consumers": consumers}


class ProbeTimeout(Exception):
    pass


@dataclass
class Outcome:
    value: Any = None
    error: BaseException | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


def run_bounded(calls: dict[str, Callable[[], Any]], timeout: float) -> dict[str, Outcome]:
    """Run every call at once, each on a daemon thread, and wait at most `timeout` seconds in all.
    A call still running then is reported as a ProbeTimeout and left to finish on its own (its own
    time limit ends it soon after); a daemon thread never holds up a worker's exit."""
    outcomes = {name: Outcome() for name in calls}
    done = {name: threading.Event() for name in calls}

    def run(name, fn):
        started = time.perf_counter()
        try:
            outcomes[name].value = fn()
        except BaseException as exc:  # reported, never raised: a probe must not take the endpoint down
            outcomes[name].error = exc
        outcomes[name].seconds = time.perf_counter() - started
        done[name].set()

    for name, fn in calls.items():
        threading.Thread(target=run, args=(name, fn), name=f"gaze-probe-{name}", daemon=True).start()
    deadline = time.monotonic() + timeout
    result = {}
    for name in calls:
        if done[name].wait(max(0.0, deadline - time.monotonic())):
            result[name] = outcomes[name]
        else:
            result[name] = Outcome(error=ProbeTimeout(f"no answer within {timeout:g} s"), seconds=timeout)
    return result


class Reused:
    """`compute()`'s answer, at most `seconds` old. Callers arriving while it computes wait for that answer
    instead of computing their own: however often an operations endpoint is called, its sources are asked
    at most once per interval per process."""

    def __init__(self, compute: Callable[[], Any], seconds: float):
        self.compute = compute
        self.seconds = seconds
        self._lock = threading.Lock()
        self._value, self._computed_at = None, float("-inf")

    def get(self):
        with self._lock:
            if time.monotonic() - self._computed_at >= self.seconds:
                self._value = self.compute()
                self._computed_at = time.monotonic()
            return self._value
