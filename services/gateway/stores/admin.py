"""The web UI's admin account and login sessions, in the gateway's own schema.

The password is hashed with argon2 (argon2-cffi). Sessions are server-side: the cookie carries a
random 256-bit token, the table keeps only its SHA-256, so logging out or resetting the password ends
a session for good, and a stolen database cannot be replayed as cookies. A session ends after
SESSION_DAYS at most, and after `idle_seconds` (GAZE_ADMIN_IDLE_SECONDS, 2 h) without a request; each
request that uses it moves its `last_seen_at` forward, written at most once per `touch_seconds` (a minute,
less for short idle limits) so that browsing costs no write per request.
"""
from __future__ import annotations

import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

SESSION_DAYS = 14
_hasher = PasswordHasher()


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class AdminStore:
    def __init__(self, pool, idle_seconds: float = 7200.0):
        self.pool = pool
        self.idle_seconds = float(idle_seconds)
        # how stale last_seen_at may get before a request writes it: a session may thus end up to this much
        # before idle_seconds of true idleness, never after
        self.touch_seconds = min(60.0, self.idle_seconds / 10)

    # --- password -------------------------------------------------------------------------------
    def set_password(self, password: str) -> None:
        """Set (or replace) the admin password; every open session ends."""
        with self.pool.connection() as conn, conn.transaction():
            conn.execute(
                "INSERT INTO gateway.admin (id, password_hash) VALUES (1, %s)"
                " ON CONFLICT (id) DO UPDATE SET password_hash = excluded.password_hash, updated_at = now()",
                (_hasher.hash(password),),
            )
            conn.execute("DELETE FROM gateway.sessions")

    def ensure_password(self, from_env: str | None) -> str | None:
        """At start-up: adopt the password from the environment when one is given, otherwise mint one
        the first time. Returns a newly generated password (to print once) or None."""
        if from_env:
            if not self.verify_password(from_env):
                self.set_password(from_env)
            return None
        with self.pool.connection() as conn:
            if conn.execute("SELECT 1 FROM gateway.admin").fetchone():
                return None
        generated = secrets.token_urlsafe(12)
        self.set_password(generated)
        return generated

    def verify_password(self, password: str) -> bool:
        if not password or len(password) > 1024:
            return False
        with self.pool.connection() as conn:
            row = conn.execute("SELECT password_hash FROM gateway.admin WHERE id = 1").fetchone()
        if row is None:
            return False
        try:
            _hasher.verify(row["password_hash"], password)
        except (VerificationError, InvalidHashError):
            return False
        return True

    # --- sessions -------------------------------------------------------------------------------
    def open_session(self) -> str:
        token = secrets.token_urlsafe(32)
        with self.pool.connection() as conn:
            conn.execute("DELETE FROM gateway.sessions WHERE expires_at < now()"
                         " OR last_seen_at < now() - make_interval(secs => %s)", (self.idle_seconds,))
            conn.execute(
                "INSERT INTO gateway.sessions (token_hash, csrf_token, expires_at)"
                " VALUES (%s, %s, now() + make_interval(days => %s))",
                (_token_hash(token), secrets.token_urlsafe(32), SESSION_DAYS),
            )
        return token

    def session(self, token: str) -> dict | None:
        """{'csrf_token': ...} for a live session (not expired, used within idle_seconds), else None. Using
        it keeps it alive: last_seen_at moves to now when it is older than touch_seconds."""
        if not token or len(token) > 200:
            return None
        token_hash = _token_hash(token)
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT csrf_token, last_seen_at < now() - make_interval(secs => %s) AS stale"
                " FROM gateway.sessions WHERE token_hash = %s AND expires_at > now()"
                " AND last_seen_at > now() - make_interval(secs => %s)",
                (self.touch_seconds, token_hash, self.idle_seconds),
            ).fetchone()
            if row is None:
                return None
            if row["stale"]:
                conn.execute("UPDATE gateway.sessions SET last_seen_at = now() WHERE token_hash = %s", (token_hash,))
        return {"csrf_token": row["csrf_token"]}

    def close_session(self, token: str) -> None:
        with self.pool.connection() as conn:
            conn.execute("DELETE FROM gateway.sessions WHERE token_hash = %s", (_token_hash(token or ""),))
