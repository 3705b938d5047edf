"""PostgreSQL access: a psycopg 3 connection pool, and the nameko DependencyProvider that owns it."""
from __future__ import annotations

from nameko.extensions import DependencyProvider
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from shared.config import from_nameko


def open_pool(database_url: str, max_size: int = 10, min_size: int = 1, name: str = "gaze",
              timeout: float = 30.0) -> ConnectionPool:
    """`timeout`: how long `pool.connection()` waits for a connection (e.g. while the database is down:
    the pool keeps reconnecting in the background) before it raises PoolTimeout."""
    pool = ConnectionPool(
        database_url,
        min_size=min_size,
        max_size=max_size,
        kwargs={"autocommit": True, "row_factory": dict_row},
        open=False,
        name=name,
        timeout=timeout,
    )
    pool.open(wait=True, timeout=30)
    return pool


class Database(DependencyProvider):
    """Hands each worker the service's pool; workers use `with self.db.connection() as conn`."""

    def setup(self):
        from shared.green import assert_cooperative_psycopg

        assert_cooperative_psycopg()
        settings = from_nameko(self.container.config)
        self.pool = open_pool(settings.database_url, max_size=settings.db_pool_size,
                              name=self.container.service_name, timeout=settings.db_timeout)

    def stop(self):
        self.pool.close()

    def kill(self):
        self.pool.close(timeout=0)

    def get_dependency(self, worker_ctx):
        return self.pool
