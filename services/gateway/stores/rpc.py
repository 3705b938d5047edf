"""A per-process pool of nameko RPC proxies for the gateway's threads.

A standalone ClusterRpcProxy is not thread-safe and costs a connection plus a reply queue to create,
so each gunicorn worker keeps a few and lends one to a request at a time. Pools are built lazily in
the process that uses them, i.e. after gunicorn forks, never shared across a fork.
"""
from __future__ import annotations

import logging
import os
import queue
import threading

from amqp.exceptions import ChannelError as AmqpChannelError
from amqp.exceptions import ConnectionError as AmqpConnectionError
from kombu.exceptions import OperationalError
from nameko.exceptions import RemoteError, RpcTimeout, UnknownService
from nameko.standalone.rpc import ClusterRpcProxy

from shared.errors import EXPECTED

log = logging.getLogger(__name__)


class ServiceUnavailable(Exception):
    """The broker or the service behind it cannot be reached: a 503 (errors.HANDLERS). Its str and `public`
    are the body's fixed sentence (never a host or an exception's text); `detail`, the cause, goes to the log."""

    def __init__(self, public: str, detail: str | None = None):
        super().__init__(public)
        self.public = public
        self.detail = detail if detail is not None else public


# A channel error too: a broker node that went away takes the proxy's reply queue with it, and redeclaring it
# on another node of the cluster is refused (NOT_FOUND: "home node down") until the proxy is made anew.
BROKEN = (OSError, OperationalError, AmqpConnectionError, AmqpChannelError)
# what the service itself answered: the proxy that carried it is sound and goes back to the pool
ANSWERED = (RemoteError, *EXPECTED)
BROKER_UNREACHABLE = "the message broker is not reachable; try again shortly"


def broker_unreachable(exc: BaseException) -> ServiceUnavailable:
    """The 503 for a broker that cannot be reached (whoever answers it logs the detail: errors.HANDLERS)."""
    return ServiceUnavailable(BROKER_UNREACHABLE, f"message broker unreachable: {type(exc).__name__}: {exc}")


class RpcPool:
    def __init__(self, amqp_uri: str, timeout: float, size: int = 8):
        self.config = {"AMQP_URI": amqp_uri, "serializer": "json"}
        self.timeout = timeout
        self.size = size
        self._idle: queue.LifoQueue = queue.LifoQueue()
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def call(self, service: str, method: str, *args, **kwargs):
        proxy = self._acquire()
        try:
            result = getattr(getattr(proxy.proxy, service), method)(*args, **kwargs)
        except RpcTimeout:
            # a late reply would otherwise be read by the next borrower's consumer
            self._discard(proxy)
            raise
        except UnknownService:
            self._release(proxy)
            raise ServiceUnavailable(f"the {service} service is not running; try again shortly",
                                     f"service '{service}' is not running (no consumer on its RPC queue)") from None
        except BROKEN as exc:
            self._discard(proxy)
            raise broker_unreachable(exc) from None
        except ANSWERED:
            self._release(proxy)
            raise
        except BaseException:
            # anything else may have left the proxy half-broken (seen: a reply consumer gone after a
            # broker node stopped, failing every later borrower): never lend it again
            self._discard(proxy)
            raise
        self._release(proxy)
        return result

    def close(self):
        while True:
            try:
                self._discard(self._idle.get_nowait())
            except queue.Empty:
                return

    def _acquire(self):
        self._check_fork()
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        holder = ClusterRpcProxy(self.config, timeout=self.timeout)
        try:
            holder.proxy = holder.start()
        except BROKEN as exc:
            raise broker_unreachable(exc) from None
        return holder

    def _release(self, holder):
        if self._idle.qsize() < self.size:
            self._idle.put(holder)
        else:
            self._discard(holder)

    @staticmethod
    def _discard(holder):
        try:
            holder.stop()
        except Exception:  # the connection is already gone; nothing left to clean
            log.debug("closing a broken RPC proxy failed", exc_info=True)

    def _check_fork(self):
        if os.getpid() != self._pid:
            with self._lock:
                if os.getpid() != self._pid:
                    self._idle = queue.LifoQueue()
                    self._pid = os.getpid()
