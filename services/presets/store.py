"""SQL for the presets schema; nothing outside this module knows the table layout."""
from __future__ import annotations

from psycopg.errors import UniqueViolation
from psycopg.types.json import Jsonb

from shared.db import Database
from shared.errors import Conflict, NotFound

COLUMNS = "slug, name, prompt, negative, checkpoint, width, height, steps, cfg, sampler, cover_path"
EDITABLE = ("name", "prompt", "negative", "checkpoint", "width", "height", "steps", "cfg", "sampler")


class PresetRepository:
    def __init__(self, pool):
        self.pool = pool

    def list(self) -> list[dict]:
        with self.pool.connection() as conn:
            return conn.execute(f"SELECT {COLUMNS} FROM presets.presets ORDER BY created_at, slug").fetchall()

    def snapshot(self) -> tuple[dict, list[dict]]:
        """({"revision", "epoch"}, every preset as `list` returns them), read in ONE statement so the rows
        are exactly the ones that revision counts (the read model's snapshot)."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT r.revision AS _revision, r.epoch::text AS _epoch, "
                + ", ".join(f"p.{name}" for name in COLUMNS.split(", "))
                + " FROM presets.presets_revision r LEFT JOIN presets.presets p ON true"
                " ORDER BY p.created_at, p.slug"
            ).fetchall()
        version = {"revision": rows[0]["_revision"], "epoch": rows[0]["_epoch"]}
        presets = [{k: v for k, v in row.items() if not k.startswith("_")} for row in rows if row["slug"] is not None]
        return version, presets

    def revision(self) -> dict:
        """{"revision", "epoch"}: what the read model must carry to be current."""
        with self.pool.connection() as conn:
            return conn.execute("SELECT revision, epoch::text AS epoch FROM presets.presets_revision").fetchone()

    def get(self, slug: str) -> dict:
        with self.pool.connection() as conn:
            row = conn.execute(f"SELECT {COLUMNS} FROM presets.presets WHERE slug = %s", (slug,)).fetchone()
        if row is None:
            raise NotFound("preset", slug)
        return row

    def create(self, fields: dict) -> dict:
        names = ", ".join(fields)
        marks = ", ".join(["%s"] * len(fields))
        try:
            with self.pool.connection() as conn:
                return conn.execute(
                    f"INSERT INTO presets.presets ({names}) VALUES ({marks}) RETURNING {COLUMNS}",
                    tuple(fields.values()),
                ).fetchone()
        except UniqueViolation:
            raise Conflict("slug", f"a preset with slug '{fields['slug']}' already exists") from None

    def update(self, slug: str, fields: dict) -> dict:
        changes = {k: v for k, v in fields.items() if k in EDITABLE}
        assignments = ", ".join(f"{name} = %s" for name in changes)
        with self.pool.connection() as conn:
            row = conn.execute(
                f"UPDATE presets.presets SET {assignments}, updated_at = now() WHERE slug = %s RETURNING {COLUMNS}",
                (*changes.values(), slug),
            ).fetchone()
        if row is None:
            raise NotFound("preset", slug)
        return row

    def delete(self, slug: str) -> None:
        with self.pool.connection() as conn:
            if conn.execute("DELETE FROM presets.presets WHERE slug = %s", (slug,)).rowcount == 0:
                raise NotFound("preset", slug)

    def set_cover(self, slug: str, relative_path) -> dict:
        with self.pool.connection() as conn:
            row = conn.execute(
                f"UPDATE presets.presets SET cover_path = %s, updated_at = now() WHERE slug = %s RETURNING {COLUMNS}",
                (relative_path, slug),
            ).fetchone()
        if row is None:
            raise NotFound("preset", slug)
        return row


    def record_node_checkpoints(self, replica: str, checkpoints: list[str], seen_at: float) -> None:
        with self.pool.connection() as conn:
            conn.execute(
                "INSERT INTO presets.node_checkpoints (replica, checkpoints, seen_at) VALUES (%s, %s, to_timestamp(%s))"
                " ON CONFLICT (replica) DO UPDATE SET checkpoints = excluded.checkpoints, seen_at = excluded.seen_at"
                " WHERE presets.node_checkpoints.seen_at <= excluded.seen_at",
                (replica, Jsonb(checkpoints), seen_at),
            )

    def node_checkpoints(self, fresher_than_seconds: float):
        """Sorted union of the checkpoints of replicas heard from recently, or None if none reported."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT checkpoints FROM presets.node_checkpoints"
                " WHERE seen_at > now() - make_interval(secs => %s)",
                (fresher_than_seconds,),
            ).fetchall()
        if not rows:
            return None
        return sorted({name for row in rows for name in row["checkpoints"]})


class PresetStore(Database):
    def get_dependency(self, worker_ctx):
        return PresetRepository(self.pool)
