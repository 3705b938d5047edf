"""Schema migrations with yoyo: each service applies its own SQL files inside its own Postgres schema,
and yoyo keeps that service's migration log in the same schema."""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from yoyo import get_backend, read_migrations


def _yoyo_url(database_url: str, schema: str) -> str:
    parts = urlsplit(database_url)
    scheme = "postgresql+psycopg"
    query = f"schema={schema}" + (f"&{parts.query}" if parts.query else "")
    return urlunsplit((scheme, parts.netloc, parts.path, query, parts.fragment))


def ensure_database(database_url: str) -> None:
    """Create the database itself when missing, so a fresh machine needs no manual createdb."""
    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    admin_url = urlunsplit((parts.scheme, parts.netloc, "/postgres", parts.query, parts.fragment))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def apply(database_url: str, schema: str, migrations_dir: Path) -> list[str]:
    """Apply pending migrations of one service; returns the ids applied (empty when up to date)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    backend = get_backend(_yoyo_url(database_url, schema))
    migrations = read_migrations(str(migrations_dir))
    with backend.lock():
        pending = backend.to_apply(migrations)
        backend.apply_migrations(pending)
    return [m.id for m in pending]
