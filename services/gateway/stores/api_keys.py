"""API keys: minted once, shown once, stored only as SHA-256 hashes in the gateway's own schema.

Keys are 256-bit random tokens, so a plain SHA-256 is enough (no password stretching needed); the row
is found by a non-secret prefix and the hashes are compared in constant time.

Verification is on every API request, so it must cost less than the request it guards: each gateway
process remembers the hashes it has verified (never a key itself), valid for one *key epoch*, a counter
in Redis that every key change (mint, regenerate, revoke; UI or CLI) bumps after its commit. A request
reads the epoch (one small Redis GET) and trusts its memory only while the epoch is unchanged, so a
request that begins after a regeneration has returned already refuses the old key, in every gateway
process on every host. No Redis, or Redis unreachable: every request asks Postgres, as before. A lost
epoch key (Redis restarted) is re-created with a new random value, which also empties every memory.
Remembered hashes also age out after KEY_CACHE_SECONDS, bounding what a network partition between a
key change and Redis could leave behind.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time

import redis

KEY_PREFIX = "gz_"
LOOKUP_CHARS = len(KEY_PREFIX) + 8
MAX_NAME_CHARS = 64
LOCK = "SELECT pg_advisory_xact_lock(hashtext('gaze.api_keys'))"
KEY_CACHE_SECONDS = 60.0
log = logging.getLogger(__name__)


class InvalidKeyName(ValueError):
    """A key name that is empty, too long, holds control characters or is already in use."""


def clean_name(name) -> str:
    """`name` trimmed, or InvalidKeyName saying what is wrong with it."""
    if not isinstance(name, str):
        raise InvalidKeyName("Give the key a name.")
    name = name.strip()
    if not name:
        raise InvalidKeyName("Give the key a name.")
    if len(name) > MAX_NAME_CHARS:
        raise InvalidKeyName(f"At most {MAX_NAME_CHARS} characters.")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise InvalidKeyName("No control characters (tabs, line breaks).")
    return name


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyEpoch:
    """The key epoch in Redis, and this process's memory of hashes verified under it."""

    def __init__(self, redis_url: str, prefix: str):
        self.client = (redis.Redis.from_url(redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)
                       if redis_url else None)
        self.key = f"{prefix}:api_keys:epoch"
        self._lock = threading.Lock()
        self._epoch = None
        self._verified: dict[str, tuple[float, str]] = {}   # hash -> (when verified (monotonic), key's name)

    def current(self):
        """The epoch now, or None when there is no Redis or it cannot be read (then: ask Postgres)."""
        if self.client is None:
            return None
        try:
            epoch = self.client.get(self.key)
            if epoch is None:
                self.client.set(self.key, secrets.randbits(62), nx=True)
                epoch = self.client.get(self.key)
        except redis.RedisError as exc:
            log.warning("API key epoch unreadable, verifying against the database: %s", exc)
            return None
        return epoch

    def known(self, epoch, digest: str) -> str | None:
        """The key's name when this process verified it recently under this epoch, else None."""
        with self._lock:
            if epoch != self._epoch:
                self._epoch, self._verified = epoch, {}
                return None
            seen = self._verified.get(digest)
            return seen[1] if seen is not None and time.monotonic() - seen[0] < KEY_CACHE_SECONDS else None

    def remember(self, epoch, digest: str, name: str) -> None:
        with self._lock:
            if epoch == self._epoch and len(self._verified) < 10_000:
                self._verified[digest] = (time.monotonic(), name)

    def bump(self) -> None:
        """After a committed key change: every process forgets what it verified."""
        with self._lock:
            self._verified = {}
        if self.client is None:
            return
        try:
            self.client.incr(self.key)
        except redis.RedisError:
            try:   # a non-numeric or unreachable epoch: replacing it has the same effect
                self.client.set(self.key, secrets.randbits(62))
            except redis.RedisError as exc:
                log.error("API key change not announced (Redis unreachable): other gateway processes may accept"
                          " a revoked key for up to %.0f s: %s", KEY_CACHE_SECONDS, exc)


class ApiKeyStore:
    def __init__(self, pool, redis_url: str = "", redis_prefix: str = "gaze"):
        self.pool = pool
        self.epoch = KeyEpoch(redis_url, redis_prefix)

    def verify(self, key: str) -> str | None:
        """The name of the active key `key` (its jobs are listed under that name), or None when it is not one."""
        if not key or not key.startswith(KEY_PREFIX) or len(key) > 200:
            return None
        digest = _hash(key)
        epoch = self.epoch.current()
        if epoch is not None:
            name = self.epoch.known(epoch, digest)
            if name is not None:
                return name
        name = self._verify_in_database(key, digest)
        if name is not None and epoch is not None:
            self.epoch.remember(epoch, digest, name)
        return name

    def _verify_in_database(self, key: str, candidate: str) -> str | None:
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT key_hash, name FROM gateway.api_keys WHERE prefix = %s AND revoked_at IS NULL",
                (key[:LOOKUP_CHARS],),
            ).fetchall()
        return next((row["name"] for row in rows if hmac.compare_digest(row["key_hash"], candidate)), None)

    def regenerate(self, name: str = "default") -> str:
        """Mint a new key under `name`; the previous key of that name stops working in the same commit."""
        key = _new_key()
        with self.pool.connection() as conn, conn.transaction():
            conn.execute(LOCK)
            conn.execute("UPDATE gateway.api_keys SET revoked_at = now() WHERE name = %s AND revoked_at IS NULL",
                         (name,))
            _insert(conn, name, key)
        self.epoch.bump()
        return key

    def create(self, name: str) -> str:
        """Mint an extra key under a new name (trimmed, 1-64 characters); returns the key, to show once.
        A name that already has an active key is refused: regenerate or revoke that one instead."""
        name = clean_name(name)
        key = _new_key()
        with self.pool.connection() as conn, conn.transaction():
            conn.execute(LOCK)
            if conn.execute("SELECT 1 FROM gateway.api_keys WHERE name = %s AND revoked_at IS NULL",
                            (name,)).fetchone():
                raise InvalidKeyName(f"An active key is already named \u201c{name}\u201d: revoke it first, or pick"
                                     " another name.")
            _insert(conn, name, key)
        self.epoch.bump()
        return key

    def list(self, limit: int = 200) -> list[dict]:
        """The keys without their secrets: id, name, prefix, created_at, revoked_at; active keys first
        (newest first), then the most recently revoked, `limit` rows in all."""
        with self.pool.connection() as conn:
            return conn.execute(
                "SELECT id, name, prefix, created_at, revoked_at FROM gateway.api_keys"
                " ORDER BY revoked_at IS NOT NULL, coalesce(revoked_at, created_at) DESC, id DESC LIMIT %s",
                (limit,),
            ).fetchall()

    def revoke(self, key_id: int) -> str | None:
        """Revoke one key at once (verify refuses it from this commit on); returns its name, or None when
        there is no such key. Revoking a revoked key again keeps its first revocation time."""
        if not isinstance(key_id, int) or not 0 < key_id < 2**63:
            return None
        with self.pool.connection() as conn, conn.transaction():
            conn.execute(LOCK)
            row = conn.execute("UPDATE gateway.api_keys SET revoked_at = coalesce(revoked_at, now())"
                               " WHERE id = %s RETURNING name", (key_id,)).fetchone()
        self.epoch.bump()
        return None if row is None else row["name"]

    def ensure(self) -> str | None:
        """Mint the first key when none is active; returns it (to print once) or None."""
        with self.pool.connection() as conn, conn.transaction():
            conn.execute(LOCK)
            if conn.execute("SELECT 1 FROM gateway.api_keys WHERE revoked_at IS NULL LIMIT 1").fetchone():
                return None
        return self.regenerate()


def _new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def _insert(conn, name: str, key: str) -> None:
    conn.execute("INSERT INTO gateway.api_keys (name, prefix, key_hash) VALUES (%s, %s, %s)",
                 (name, key[:LOOKUP_CHARS], _hash(key)))
