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
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        with self.pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('gaze.api_keys'))")
            conn.execute("UPDATE gateway.api_keys SET revoked_at = now() WHERE name = %s AND revoked_at IS NULL",
                         (name,))
            conn.execute("INSERT INTO gateway.api_keys (name, prefix, key_hash) VALUES (%s, %s, %s)",
                         (name, key[:LOOKUP_CHARS], _hash(key)))
        return key

    def ensure(self) -> str | None:
        """Mint the first key when none is active; returns it (to print once) or None."""
        with self.pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('gaze.api_keys'))")
            if conn.execute("SELECT 1 FROM gateway.api_keys WHERE revoked_at IS NULL LIMIT 1").fetchone():
                return None
        return self.regenerate()
