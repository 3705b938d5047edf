"""`Idempotency-Key` on POST /api/v1/generate/<slug>: the same key and the same body within 24 hours
answer with the same jobs instead of creating new ones.

One row per (API key hash, idempotency key) in `gateway.idempotency`. The first request *reserves* the
key (an INSERT that only one of any number of racing requests wins), creates the jobs through
`generation.submit` and then fills in their ids. A request that loses the race:
- with another body (another fingerprint): `KeyReused`, a 422 naming Idempotency-Key;
- with the same body: polls the row until the winner's job ids are there (up to WAIT_SECONDS), and
  answers with them; still not there: `StillInProgress`, a 409 with Retry-After;
- when the winner failed (submit raised: a 400, 404, 503, ...), the winner deleted its reservation, so
  the waiting request (or a later retry) takes the key over and tries for itself.
A row older than TTL_SECONDS is ignored and replaced; a reservation without job ids older than
`stale_seconds` (its gateway died mid-request) is replaced too, so a key is never blocked for a day.
Expired rows are purged (at most PURGE_BATCH per new reservation).

Only hashes are stored: the API key's SHA-256 (as in gateway.api_keys) and the request's fingerprint.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid

import psycopg
from psycopg_pool import PoolTimeout

from services.gateway.stores.rpc import ServiceUnavailable

TTL_SECONDS = 24 * 3600
WAIT_SECONDS = 5.0
PURGE_BATCH = 100
log = logging.getLogger(__name__)


class KeyReused(Exception):
    """The Idempotency-Key was used (within 24 h, with this API key) for another request."""


class StillInProgress(Exception):
    """The first request with this Idempotency-Key has not finished creating its jobs yet."""


def api_key_hash(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def request_id(api_key: str, idempotency_key: str, request_fingerprint: str) -> uuid.UUID:
    """The jobs.create request id of a keyed request: the same for every retry of it."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"gaze:{api_key_hash(api_key)}:{idempotency_key}:{request_fingerprint}")


def fingerprint(slug: str, body: dict) -> str:
    """SHA-256 of the slug and the body as canonical JSON (sorted keys, no spaces), so the same
    request written with other spacing or key order is still the same request."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(f"{slug}\n{canonical}".encode()).hexdigest()


# Reserve the key: a new row, or take over an expired row or an abandoned reservation. Under READ
# COMMITTED a racing INSERT waits for the row lock and re-checks the WHERE against the new version
# (created_at = now()), so exactly one of the racers gets a row back.
RESERVE = """
INSERT INTO gateway.idempotency (api_key_hash, idempotency_key, fingerprint, reservation)
VALUES (%(owner)s, %(key)s, %(fingerprint)s, %(reservation)s)
ON CONFLICT (api_key_hash, idempotency_key) DO UPDATE
    SET fingerprint = EXCLUDED.fingerprint, reservation = EXCLUDED.reservation, job_ids = NULL,
        created_at = now()
    WHERE idempotency.created_at < now() - make_interval(secs => %(ttl)s)
       OR (idempotency.job_ids IS NULL AND idempotency.created_at < now() - make_interval(secs => %(stale)s))
RETURNING reservation
"""
READ = """
SELECT fingerprint, job_ids FROM gateway.idempotency
WHERE api_key_hash = %(owner)s AND idempotency_key = %(key)s
  AND created_at >= now() - make_interval(secs => %(ttl)s)
"""
FILL = """
UPDATE gateway.idempotency SET job_ids = %(job_ids)s
WHERE api_key_hash = %(owner)s AND idempotency_key = %(key)s AND reservation = %(reservation)s
"""
RELEASE = """
DELETE FROM gateway.idempotency
WHERE api_key_hash = %(owner)s AND idempotency_key = %(key)s AND reservation = %(reservation)s
  AND job_ids IS NULL
"""
PURGE = """
DELETE FROM gateway.idempotency WHERE (api_key_hash, idempotency_key) IN (
    SELECT api_key_hash, idempotency_key FROM gateway.idempotency
    WHERE created_at < now() - make_interval(secs => %(ttl)s)
    ORDER BY created_at LIMIT %(batch)s FOR UPDATE SKIP LOCKED)
"""


class IdempotencyStore:
    def __init__(self, pool, ttl_seconds: float = TTL_SECONDS, wait_seconds: float = WAIT_SECONDS,
                 stale_seconds: float = 60.0):
        """`stale_seconds`: how old a reservation without job ids must be before another request may take
        the key over; longer than a submission can take (two RPC calls, each with GAZE_RPC_TIMEOUT)."""
        self.pool = pool
        self.ttl_seconds = ttl_seconds
        self.wait_seconds = wait_seconds
        self.stale_seconds = stale_seconds

    @classmethod
    def from_settings(cls, pool, settings) -> IdempotencyStore:
        return cls(pool, stale_seconds=max(60.0, 2 * settings.rpc_timeout + 30))

    def submit(self, api_key: str, idempotency_key: str, request_fingerprint: str, create):
        """`create()` (which queues the jobs and returns their ids) run at most once per key and fingerprint
        within the TTL; returns (job ids, replayed), replayed True when they are an earlier request's."""
        params = {"owner": api_key_hash(api_key), "key": idempotency_key, "fingerprint": request_fingerprint,
                  "ttl": float(self.ttl_seconds), "stale": float(self.stale_seconds)}
        deadline = time.monotonic() + self.wait_seconds
        delay = 0.02
        while True:
            reservation = uuid.uuid4()
            if self._execute(RESERVE, {**params, "reservation": reservation}, fetch=True) is not None:
                return self._create(create, {**params, "reservation": reservation}), False
            row = self._execute(READ, params, fetch=True)
            if row is not None:
                if row["fingerprint"] != request_fingerprint:
                    raise KeyReused("Idempotency-Key: already used with another request (another preset or body)"
                                    " in the last 24 hours; use a new key for a new request")
                if row["job_ids"] is not None:
                    return list(row["job_ids"]), True
            # else: the first request failed and let go of the key (or its row just expired): reserve again
            if time.monotonic() >= deadline:
                raise StillInProgress("Idempotency-Key: a request with this key is still being processed;"
                                      " retry in a moment")
            if row is not None:
                time.sleep(delay)
                delay = min(delay * 2, 0.2)

    def _create(self, create, params):
        try:
            job_ids = create()
        except BaseException:
            try:   # let go of the key so that a retry (e.g. after a 503) can proceed
                self._execute(RELEASE, params)
            except Exception:
                log.exception("idempotency: could not release the reservation of a failed request")
            raise
        try:
            self._execute(FILL, {**params, "job_ids": list(job_ids)})
        except Exception:   # the jobs exist: answer with them rather than fail the request
            log.exception("idempotency: jobs created but their ids not recorded for the key")
            return job_ids
        try:
            self._execute(PURGE, {"ttl": params["ttl"], "batch": PURGE_BATCH})
        except Exception:
            log.warning("idempotency: purging expired keys failed", exc_info=True)
        return job_ids

    def _execute(self, query, params, fetch=False):
        try:
            with self.pool.connection() as conn:
                cursor = conn.execute(query, params)
                return cursor.fetchone() if fetch else None
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise ServiceUnavailable("the database is unavailable; try again shortly",
                                     f"idempotency keys: the database cannot be reached: "
                                     f"{type(exc).__name__}: {exc}") from exc
