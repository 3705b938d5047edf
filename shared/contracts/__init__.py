"""Each service's RPC contract as a typed client: the one place where a service's method names and
argument order are written down on the caller's side (in the spirit of OpenStack's `rpcapi.py`).

A client wraps a *transport*, anything with `call(service, method, *args)` (the gateway's RpcPool, the
CLI's proxy, a test's fake) and, for fire-now-answer-later calls, `call_async(service, method, *args)`
(a nameko RpcProxy in a service, through `NamekoTransport`). tests/unit/test_contracts.py checks every
client method against the service's own `@rpc` method (same name, same parameters), and that no code
outside this package makes a string RPC call.
"""
from __future__ import annotations


class ServiceClient:
    """What every client shares: the transport, and calls to the service named `service`."""

    service: str

    def __init__(self, transport):
        self._transport = transport

    def _call(self, method, *args):
        return self._transport.call(self.service, method, *args)

    def _call_async(self, method, *args):
        return self._transport.call_async(self.service, method, *args)


class NamekoTransport:
    """A nameko RpcProxy dependency (one service) as a transport."""

    def __init__(self, proxy):
        self._proxy = proxy

    def call(self, service, method, *args):
        return getattr(self._proxy, method)(*args)

    def call_async(self, service, method, *args):
        return getattr(self._proxy, method).call_async(*args)


class ClusterTransport:
    """A standalone ClusterRpcProxy's proxy (the CLI) as a transport."""

    def __init__(self, cluster_proxy):
        self._proxy = cluster_proxy

    def call(self, service, method, *args):
        return getattr(getattr(self._proxy, service), method)(*args)
