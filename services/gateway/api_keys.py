"""API keys: minted once, shown once, stored only as SHA-256 hashes in the gateway's own schema.

Keys are 256-bit random tokens, so a plain SHA-256 is enough (no password stretching needed); the row
is found by a non-secret prefix and the hashes are compared in constant time.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets

KEY_PREFIX = "gz_"
LOOKUP_CHARS = len(KEY_PREFIX) + 8
MAX_NAME_CHARS = 64
LOCK = "SELECT pg_advisory_xact_lock(hashtext('gaze.api_keys'))"


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


class ApiKeyStore:
    def __init__(self, pool):
        self.pool = pool

    def verify(self, key: str) -> bool:
        if not key or not key.startswith(KEY_PREFIX) or len(key) > 200:
            return False
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT key_hash FROM gateway.api_keys WHERE prefix = %s AND revoked_at IS NULL",
                (key[:LOOKUP_CHARS],),
            ).fetchall()
        candidate = _hash(key)
        return any(hmac.compare_digest(row["key_hash"], candidate) for row in rows)

    def regenerate(self, name: str = "default") -> str:
        """Mint a new key under `name`; the previous key of that name stops working in the same commit."""
        key = _new_key()
        with self.pool.connection() as conn, conn.transaction():
            conn.execute(LOCK)
            conn.execute("UPDATE gateway.api_keys SET revoked_at = now() WHERE name = %s AND revoked_at IS NULL",
                         (name,))
            _insert(conn, name, key)
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
