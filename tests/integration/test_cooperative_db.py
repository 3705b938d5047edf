"""Database calls must be cooperative under eventlet: a slow query in one worker may not freeze the others.

psycopg 3 picks a blocking C wait function unless told otherwise (shared/green.py); with it, two
one-second queries in one nameko container would take two seconds instead of one."""
import os
import subprocess
import sys
import time
from pathlib import Path

from nameko.rpc import rpc
from nameko.standalone.rpc import ClusterRpcProxy

from shared.db import Database

ROOT = Path(__file__).resolve().parents[2]
QUERY_SECONDS = 1.0


class SleepyService:
    name = "sleepy_db"

    db = Database()

    @rpc
    def sleep(self):
        with self.db.connection() as conn:
            conn.execute("SELECT pg_sleep(%s)", (QUERY_SECONDS,))
        return True


def test_two_slow_queries_overlap(container_factory, settings):
    container = container_factory(SleepyService, settings.nameko_config(max_workers=4))
    container.start()

    with ClusterRpcProxy({"AMQP_URI": settings.amqp_uri, "serializer": "json"}, timeout=10) as cluster:
        cluster.sleepy_db.sleep()  # warm up (reply queue, first pool connection) outside the timing
        started = time.monotonic()
        first = cluster.sleepy_db.sleep.call_async()
        second = cluster.sleepy_db.sleep.call_async()
        assert first.result() is True and second.result() is True
        elapsed = time.monotonic() - started

    assert elapsed >= QUERY_SECONDS
    assert elapsed < 1.7 * QUERY_SECONDS, f"two {QUERY_SECONDS}s queries took {elapsed:.2f}s: they did not overlap"


def _run(code, patch_first):
    env = {k: v for k, v in os.environ.items() if k != "PSYCOPG_WAIT_FUNC"}  # this process set it
    prelude = "from shared.green import patch; patch()\n" if patch_first else ""
    return subprocess.run([sys.executable, "-W", "ignore", "-c", prelude + code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


CHECK = """
import eventlet
eventlet.monkey_patch()
import psycopg
import psycopg.waiting
print(psycopg.waiting.wait.__name__)
from shared.green import assert_cooperative_psycopg
assert_cooperative_psycopg()
print("cooperative")
"""


def test_start_up_check_refuses_psycopg_imported_without_patch():
    result = _run(CHECK, patch_first=False)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "RuntimeError" in result.stderr
    assert "shared.green.patch()" in result.stderr
    assert "cooperative" not in result.stdout


def test_start_up_check_accepts_psycopg_imported_after_patch():
    result = _run(CHECK, patch_first=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["wait_select", "cooperative"]
