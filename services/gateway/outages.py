"""Which failures mean "a dependency is down, try again shortly" (503 with Retry-After), not a bug (500).

Postgres: psycopg's OperationalError and its subclasses (connection refused or lost, server shutting
down, too many connections, psycopg_pool's PoolTimeout when no connection could be had in time) — raised
in the gateway itself (API key check, admin store, sessions) or in a nameko service behind an RPC. nameko
carries a remote exception that is not one of our registered types (shared/errors.py) across as a
RemoteError that keeps only the class name (`exc_type`), so remote outages are recognised by name (OUTAGE_NAMES).
Redis: its connection and timeout errors (the read models swallow these already; this catches any
other use). The pools reconnect by themselves, so service resumes when the dependency returns.
"""
from __future__ import annotations

import logging

import psycopg
import redis
from nameko.exceptions import RemoteError

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = "5"


# psycopg (and psycopg_pool) exception classes, by name, that mean "the database cannot be reached or
# cannot take us right now": connection refused, lost or timed out, the server shutting down or starting,
# no connection free in the pool, out of connections or resources. Deliberately not every OperationalError
# subclass: psycopg files bugs like ProgramLimitExceeded or StatementTooComplex there too, and those stay 500s.
# "OperationalError" itself is what psycopg raises for a refused or broken connection (and kombu's
# OperationalError, a service that lost the broker, has the same name: also an outage).
OUTAGE_NAMES = frozenset({
    "OperationalError", "PoolTimeout", "PoolClosed", "TooManyRequests",
    "ConnectionTimeout", "ConnectionException", "ConnectionFailure", "ConnectionDoesNotExist",
    "SqlclientUnableToEstablishSqlconnection", "SqlserverRejectedEstablishmentOfSqlconnection",
    "AdminShutdown", "CrashShutdown", "CannotConnectNow", "DatabaseDropped", "IdleSessionTimeout",
    "TooManyConnections", "InsufficientResources", "DiskFull", "OutOfMemory",
})
REMOTE_OUTAGES = OUTAGE_NAMES   # exc_type names of a RemoteError that mean the remote service lost a dependency
LOCAL_OUTAGES = (psycopg.OperationalError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def outage_message(exc: BaseException):
    """The client-facing text for an outage, or None when `exc` is not one. Details (hosts, ports) go to
    the log, not to the client."""
    if isinstance(exc, RemoteError):
        if exc.exc_type not in REMOTE_OUTAGES:
            return None
        log.warning("a backend service reports a dependency outage: %s: %s", exc.exc_type, exc.value)
        return "a backend service cannot reach its database; try again shortly"
    if isinstance(exc, psycopg.OperationalError) and type(exc).__name__ in OUTAGE_NAMES:
        log.warning("database unavailable: %s: %s", type(exc).__name__, exc)
        return "the database is unavailable; try again shortly"
    if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
        log.warning("Redis unavailable: %s: %s", type(exc).__name__, exc)
        return "a data store is unavailable; try again shortly"
    return None
