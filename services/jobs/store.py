"""SQL for the jobs schema. Every transition is one conditional UPDATE, so states only move forward
(pending → processing → done | failed) however events are duplicated or reordered."""
from __future__ import annotations

import uuid

from psycopg.types.json import Jsonb

from shared.db import Database
from shared.errors import NotFound

VIEW = """id::text AS id, preset_slug, label, spec, seed, status, error, result, attempts, replica,
          progress_value, progress_max,
          extract(epoch FROM created_at) AS created_at, extract(epoch FROM started_at) AS started_at,
          extract(epoch FROM finished_at) AS finished_at"""


def parse_job_id(job_id) -> str:
    try:
        return str(uuid.UUID(str(job_id)))
    except ValueError:
        raise NotFound("job", job_id) from None


class JobRepository:
    def __init__(self, pool):
        self.pool = pool

    def create(self, jobs: list[dict]) -> list[dict]:
        """Insert all jobs of one request in a single transaction; returns id and created_at of each."""
        with self.pool.connection() as conn, conn.transaction():
            rows = []
            for job in jobs:
                rows.append(conn.execute(
                    "INSERT INTO jobs.jobs (id, preset_slug, label, spec, seed) VALUES (%s, %s, %s, %s, %s)"
                    " RETURNING id::text AS id, extract(epoch FROM created_at)::float8 AS created_at",
                    (job["id"], job["preset_slug"], job["label"], Jsonb(job["spec"]), job["seed"]),
                ).fetchone())
            return rows

    def mark_dispatched(self, job_ids: list[str]) -> None:
        with self.pool.connection() as conn:
            conn.execute("UPDATE jobs.jobs SET dispatched_at = now() WHERE id = ANY(%s::uuid[])", (job_ids,))

    def undispatched(self, older_than_seconds: float, limit: int = 500) -> list[dict]:
        with self.pool.connection() as conn:
            return conn.execute(
                "SELECT id::text AS id, spec, extract(epoch FROM created_at)::float8 AS created_at FROM jobs.jobs"
                " WHERE dispatched_at IS NULL AND status = 'pending'"
                " AND created_at < now() - make_interval(secs => %s) ORDER BY created_at LIMIT %s",
                (older_than_seconds, limit),
            ).fetchall()

    def get(self, job_id) -> dict:
        with self.pool.connection() as conn:
            row = conn.execute(f"SELECT {VIEW} FROM jobs.jobs WHERE id = %s", (parse_job_id(job_id),)).fetchone()
        if row is None:
            raise NotFound("job", job_id)
        return row

    def recent(self, limit: int) -> list[dict]:
        with self.pool.connection() as conn:
            return conn.execute(f"SELECT {VIEW} FROM jobs.jobs ORDER BY created_at DESC LIMIT %s", (limit,)).fetchall()

    def get_many(self, job_ids) -> list[dict]:
        ids = [parse_job_id(job_id) for job_id in job_ids]
        with self.pool.connection() as conn:
            return conn.execute(f"SELECT {VIEW} FROM jobs.jobs WHERE id = ANY(%s::uuid[])", (ids,)).fetchall()

    def images(self, preset_slug: str, limit: int, offset: int) -> list[dict]:
        """Finished images of one preset, newest first, with the parameters that made each."""
        with self.pool.connection() as conn:
            return conn.execute(
                "SELECT id::text AS job_id, result->>'relative_path' AS relative_path, seed,"
                " (result->>'width')::int AS width, (result->>'height')::int AS height,"
                " spec->>'prompt' AS prompt, spec->>'negative' AS negative, spec->>'checkpoint' AS checkpoint,"
                " extract(epoch FROM finished_at)::float8 AS finished_at"
                " FROM jobs.jobs WHERE preset_slug = %s AND status = 'done'"
                " ORDER BY finished_at DESC LIMIT %s OFFSET %s",
                (preset_slug, limit, offset),
            ).fetchall()

    def random_image_per_preset(self, preset_slugs: list[str]) -> dict:
        """{slug: relative_path} with one randomly chosen finished image for each slug that has any:
        one query for a whole library page. Random per slug via a random sort inside each group."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT DISTINCT ON (preset_slug) preset_slug, result->>'relative_path' AS relative_path"
                " FROM jobs.jobs WHERE status = 'done' AND preset_slug = ANY(%s)"
                " ORDER BY preset_slug, random()",
                (list(preset_slugs),),
            ).fetchall()
        return {row["preset_slug"]: row["relative_path"] for row in rows}

    def claim(self, job_id: str, replica: str, redelivered: bool, max_attempts: int):
        """Take the job for `replica`. A pending job is claimed; a processing one only when the broker says
        the message is a redelivery (its first runner died). Returns (run, attempt, reason)."""
        with self.pool.connection() as conn, conn.transaction():
            row = conn.execute(
                "SELECT status, attempts FROM jobs.jobs WHERE id = %s FOR UPDATE", (parse_job_id(job_id),)
            ).fetchone()
            if row is None:
                return False, 0, "unknown job"
            if row["status"] in ("done", "failed"):
                return False, row["attempts"], f"already {row['status']}"
            if row["status"] == "processing" and not redelivered:
                return False, row["attempts"], "already running on another replica"
            if row["attempts"] >= max_attempts:
                conn.execute(
                    "UPDATE jobs.jobs SET status = 'failed', finished_at = now(), error = %s WHERE id = %s",
                    (f"gave up after {row['attempts']} attempts: the generator running this job stopped "
                     f"each time before finishing", job_id),
                )
                return False, row["attempts"], "too many attempts"
            attempt = conn.execute(
                "UPDATE jobs.jobs SET status = 'processing', attempts = attempts + 1, replica = %s,"
                " started_at = now(), progress_value = NULL, progress_max = NULL WHERE id = %s RETURNING attempts",
                (replica, job_id),
            ).fetchone()["attempts"]
            return True, attempt, None

    def started(self, job_id, replica) -> None:
        with self.pool.connection() as conn:
            conn.execute(
                "UPDATE jobs.jobs SET status = 'processing', replica = %s, started_at = coalesce(started_at, now())"
                " WHERE id = %s AND status IN ('pending', 'processing')",
                (replica, parse_job_id(job_id)),
            )

    def progress(self, job_id, value, maximum) -> None:
        with self.pool.connection() as conn:
            conn.execute(
                "UPDATE jobs.jobs SET progress_value = %s, progress_max = %s"
                " WHERE id = %s AND status = 'processing' AND coalesce(progress_value, -1) <= %s",
                (value, maximum, parse_job_id(job_id), value),
            )

    def completed(self, job_id, replica, result: dict) -> bool:
        with self.pool.connection() as conn:
            return conn.execute(
                "UPDATE jobs.jobs SET status = 'done', result = %s, error = NULL, replica = %s, finished_at = now(),"
                " progress_value = progress_max WHERE id = %s AND status IN ('pending', 'processing')",
                (Jsonb(result), replica, parse_job_id(job_id)),
            ).rowcount == 1

    def failed(self, job_id, replica, error: str) -> bool:
        with self.pool.connection() as conn:
            return conn.execute(
                "UPDATE jobs.jobs SET status = 'failed', error = %s, replica = %s, finished_at = now()"
                " WHERE id = %s AND status IN ('pending', 'processing')",
                (error, replica, parse_job_id(job_id)),
            ).rowcount == 1


    def record_replica(self, status) -> None:
        with self.pool.connection() as conn:
            conn.execute(
                "INSERT INTO jobs.replicas (replica, backend, healthy, detail, seen_at)"
                " VALUES (%s, %s, %s, %s, to_timestamp(%s))"
                " ON CONFLICT (replica) DO UPDATE SET backend = excluded.backend, healthy = excluded.healthy,"
                " detail = excluded.detail, seen_at = excluded.seen_at WHERE jobs.replicas.seen_at <= excluded.seen_at",
                (status.replica, status.backend, status.healthy, status.detail, status.at),
            )

    def replicas(self) -> list[dict]:
        with self.pool.connection() as conn:
            return conn.execute(
                "SELECT replica, backend, healthy, detail, extract(epoch FROM now() - seen_at)::float8 AS age_seconds"
                " FROM jobs.replicas ORDER BY replica"
            ).fetchall()


class JobStore(Database):
    def get_dependency(self, worker_ctx):
        return JobRepository(self.pool)
