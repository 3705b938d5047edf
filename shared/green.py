"""Eventlet set-up for nameko processes.

psycopg 3's C wait function blocks the whole process under eventlet (it only detects gevent), so one
slow query would freeze every green thread. Selecting the pure-Python `wait_select`, which eventlet
monkey-patches, makes database waits cooperative. It must happen before psycopg is imported.
"""
import os

COOPERATIVE_WAIT = "wait_select"


def patch():
    os.environ.setdefault("PSYCOPG_WAIT_FUNC", COOPERATIVE_WAIT)
    import eventlet

    eventlet.monkey_patch()


def assert_cooperative_psycopg():
    """Fail loudly at start-up rather than freeze under load."""
    import eventlet.patcher
    import psycopg.waiting

    if eventlet.patcher.is_monkey_patched("select") and psycopg.waiting.wait.__name__ != COOPERATIVE_WAIT:
        raise RuntimeError(
            "psycopg was imported with its blocking C wait function inside an eventlet process; "
            "call shared.green.patch() (or set PSYCOPG_WAIT_FUNC=wait_select) before importing psycopg"
        )
