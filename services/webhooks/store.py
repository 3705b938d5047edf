"""SQL for the webhooks schema: signing secrets per API key name, deliveries and their attempts."""
from __future__ import annotations

from shared.db import Database
from services.webhooks import signing

ROTATION_GRACE = "24 hours"   # how long a rotated-out secret keeps signing beside the new one
SECRET_VIEW = """key_name, secret, extract(epoch FROM created_at)::float8 AS created_at"""
DELIVERY_VIEW = """id, job_id::text AS job_id, event, key_name, url, status, attempts,
    extract(epoch FROM created_at)::float8 AS created_at, extract(epoch FROM finished_at)::float8 AS finished_at,
    extract(epoch FROM next_attempt_at)::float8 AS next_attempt_at"""


class WebhookRepository:
    def __init__(self, pool):
        self.pool = pool

    # --- secrets ----------------------------------------------------------------------------------
    def secret(self, key_name: str) -> dict:
        """The key name's current secret (made now if it has none), and until when the one it replaced
        also signs (None: no such secret)."""
        with self.pool.connection() as conn:
            conn.execute("INSERT INTO webhooks.secrets (key_name, secret) VALUES (%s, %s)"
                         " ON CONFLICT (key_name) WHERE retired_at IS NULL DO NOTHING",
                         (key_name, signing.new_secret()))
            return self._describe(conn, key_name)

    def rotate(self, key_name: str) -> dict:
        """Retire the current secret (it keeps signing for ROTATION_GRACE) and make a new one."""
        with self.pool.connection() as conn, conn.transaction():
            conn.execute("UPDATE webhooks.secrets SET retired_at = now() WHERE key_name = %s AND retired_at IS NULL",
                         (key_name,))
            conn.execute("INSERT INTO webhooks.secrets (key_name, secret) VALUES (%s, %s)",
                         (key_name, signing.new_secret()))
            return self._describe(conn, key_name)

    def _describe(self, conn, key_name):
        current = conn.execute(f"SELECT {SECRET_VIEW} FROM webhooks.secrets"
                               " WHERE key_name = %s AND retired_at IS NULL", (key_name,)).fetchone()
        until = conn.execute(
            f"SELECT extract(epoch FROM max(retired_at) + interval '{ROTATION_GRACE}')::float8 AS until"
            f" FROM webhooks.secrets WHERE key_name = %s AND retired_at > now() - interval '{ROTATION_GRACE}'",
            (key_name,)).fetchone()
        return {**current, "previous_valid_until": until["until"]}

    def signing_secrets(self, key_name: str) -> list[str]:
        """The secrets that sign the key name's deliveries now: the current one first, then any retired in
        the last ROTATION_GRACE."""
        current = self.secret(key_name)["secret"]
        with self.pool.connection() as conn:
            retired = conn.execute(
                "SELECT secret FROM webhooks.secrets WHERE key_name = %s AND retired_at IS NOT NULL"
                f" AND retired_at > now() - interval '{ROTATION_GRACE}' ORDER BY retired_at DESC",
                (key_name,)).fetchall()
        return [current, *(row["secret"] for row in retired)]

    # --- deliveries -------------------------------------------------------------------------------
    def record(self, job_id: str, event: str, key_name: str, url: str, body: str) -> bool:
        """A delivery of the job's event, due now; False when there is one already (an announcement heard
        twice)."""
        with self.pool.connection() as conn:
            return conn.execute(
                "INSERT INTO webhooks.deliveries (id, job_id, event, key_name, url, body) VALUES (%s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (job_id, event) DO NOTHING RETURNING id",
                (signing.new_message_id(), job_id, event, key_name, url, body)).fetchone() is not None

    def lease_due(self, limit: int, lease_seconds: float) -> list[dict]:
        """Up to `limit` deliveries that are due, oldest first, leased for `lease_seconds`: moved that far
        ahead, so no other sender (another instance, the next tick) takes them meanwhile; a sender that
        dies holding one leaves it due again when the lease ends. SKIP LOCKED: instances never wait on
        each other."""
        with self.pool.connection() as conn:
            return conn.execute(
                "WITH due AS (SELECT id FROM webhooks.deliveries WHERE status = 'pending' AND next_attempt_at <= now()"
                "   ORDER BY next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED)"
                " UPDATE webhooks.deliveries d SET next_attempt_at = now() + make_interval(secs => %s)"
                " FROM due WHERE d.id = due.id RETURNING d.id, d.key_name, d.url, d.body, d.attempts",
                (limit, lease_seconds)).fetchall()

    def record_attempt(self, delivery_id: str, number: int, status_code, error, duration_ms: int,
                       outcome: str, retry_in: float | None = None) -> None:
        """One attempt and what follows it: `delivered`, `failed` (no retry left) or `pending` again,
        due in `retry_in` seconds."""
        with self.pool.connection() as conn, conn.transaction():
            conn.execute("INSERT INTO webhooks.attempts (delivery_id, number, status_code, error, duration_ms)"
                         " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                         (delivery_id, number, status_code, error, duration_ms))
            conn.execute(
                "UPDATE webhooks.deliveries SET attempts = %(number)s, status = %(outcome)s,"
                " next_attempt_at = now() + make_interval(secs => %(retry_in)s),"
                " finished_at = CASE WHEN %(outcome)s = 'pending' THEN NULL ELSE now() END"
                " WHERE id = %(id)s AND status = 'pending'",
                {"number": number, "outcome": outcome, "retry_in": retry_in or 0, "id": delivery_id})

    def recent(self, key_name: str | None, limit: int) -> list[dict]:
        """The latest deliveries (of one key name, or all), newest first, each with its attempts."""
        where, params = ("WHERE key_name = %(key)s", {"key": key_name}) if key_name is not None else ("", {})
        with self.pool.connection() as conn:
            rows = conn.execute(
                f"SELECT {DELIVERY_VIEW} FROM webhooks.deliveries {where}"
                " ORDER BY created_at DESC, id LIMIT %(limit)s", {**params, "limit": limit}).fetchall()
            attempts = conn.execute(
                "SELECT delivery_id, number, extract(epoch FROM at)::float8 AS at, status_code, error, duration_ms"
                " FROM webhooks.attempts WHERE delivery_id = ANY(%s) ORDER BY delivery_id, number",
                ([row["id"] for row in rows],)).fetchall()
        by_delivery = {}
        for attempt in attempts:
            by_delivery.setdefault(attempt.pop("delivery_id"), []).append(attempt)
        return [{**row, "attempt_list": by_delivery.get(row["id"], [])} for row in rows]


class WebhookStore(Database):
    def get_dependency(self, worker_ctx):
        return WebhookRepository(self.pool)
