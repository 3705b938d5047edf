"""Shared fixtures. Every test session gets its own PostgreSQL database, its own RabbitMQ vhost and its
own media directory, so the suite can run while a dev stack is up on the same machine."""
# nameko services run under eventlet; so do their tests. patch() also makes psycopg pick its
# cooperative wait function, which must happen before anything imports psycopg (see shared/green.py).
import os

from shared.green import patch

# The browser tests run in a pytest process of their own without eventlet: Playwright's sync API
# drives its own greenlets and hangs on shutdown under eventlet's hub (see the Makefile).
if not os.environ.get("GAZE_TESTS_WITHOUT_EVENTLET"):
    patch()


import subprocess  # noqa: E402
import uuid  # noqa: E402
from urllib.parse import quote  # noqa: E402

import psycopg  # noqa: E402
import pytest  # noqa: E402

from shared import config  # noqa: E402

ADMIN_DB = os.environ.get("GAZE_TEST_ADMIN_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BROKER = os.environ.get("GAZE_TEST_AMQP_BASE", "amqp://guest:guest@127.0.0.1:5672")


def create_database(prefix="gaze_test"):
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_DB, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, ADMIN_DB.rsplit("/", 1)[0] + "/" + name


def drop_database(name):
    with psycopg.connect(ADMIN_DB, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def rabbitmqctl(*args):
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def create_vhost(prefix="gaze_test"):
    vhost = f"{prefix}_{uuid.uuid4().hex[:10]}"
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    return vhost, f"{BROKER}/{quote(vhost, safe='')}"


def delete_vhost(vhost):
    rabbitmqctl("delete_vhost", vhost)


def migrate(settings):
    from operations.cli import cmd_migrate

    cmd_migrate(None, settings)


@pytest.fixture(scope="session")
def test_database():
    name, url = create_database()
    yield url
    drop_database(name)


@pytest.fixture(scope="session")
def test_vhost():
    vhost, uri = create_vhost()
    yield uri
    delete_vhost(vhost)


@pytest.fixture(scope="session")
def media_root(tmp_path_factory):
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def settings(test_database, test_vhost, media_root):
    """Settings for in-process tests: the session's database (migrated) and vhost."""
    env = {"GAZE_DATABASE_URL": test_database, "GAZE_AMQP_URI": test_vhost, "GAZE_MEDIA_ROOT": str(media_root),
           "GAZE_DISPATCH_SWEEP_SECONDS": "1", "GAZE_REDIS_PREFIX": test_database.rsplit("/", 1)[-1]}
    loaded = config.load(env)
    migrate(loaded)
    return loaded


@pytest.fixture
def db(settings):
    """A plain autocommit connection for assertions and set-up (dict rows)."""
    from psycopg.rows import dict_row

    with psycopg.connect(settings.database_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


@pytest.fixture
def clean_jobs(db):
    db.execute("TRUNCATE jobs.jobs")
    yield db
