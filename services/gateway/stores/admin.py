"""The web UI's admin account and login sessions, in the gateway's own schema.

The password is hashed with argon2 (argon2-cffi). Sessions are server-side: the cookie carries a
random 256-bit token, the table keeps only its SHA-256, so logging out or resetting the password ends
a session for good, and a stolen database cannot be replayed as cookies.
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
    def __init__(self, pool):
        self.pool = pool

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
            conn.execute("DELETE FROM gateway.sessions WHERE expires_at < now()")
            conn.execute(
                "INSERT INTO gateway.sessions (token_hash, csrf_token, expires_at)"
                " VALUES (%s, %s, now() + make_interval(days => %s))",
                (_token_hash(token), secrets.token_urlsafe(32), SESSION_DAYS),
            )
        return token

    def session(self, token: str) -> dict | None:
        """{'csrf_token': ...} for a live session, else None."""
        if not token or len(token) > 200:
            return None
        with self.pool.connection() as conn:
            return conn.execute(
                "SELECT csrf_token FROM gateway.sessions WHERE token_hash = %s AND expires_at > now()",
                (_token_hash(token),),
            ).fetchone()

    def close_session(self, token: str) -> None:
        with self.pool.connection() as conn:
            conn.execute("DELETE FROM gateway.sessions WHERE token_hash = %s", (_token_hash(token or ""),))
