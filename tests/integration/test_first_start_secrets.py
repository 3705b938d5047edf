"""The first start's secrets (operations/cli.py: show_secrets) never stay in a log: `gaze init` (and `gaze up`,
through the same function; tests/stack.py checks its log on every stack start) prints the new API key and
admin password only to a terminal, and otherwise appends them to an owner-only file (0600) whose path it
prints. Run as a user runs it, in a process of its own, on a fresh database of the test's own."""
from __future__ import annotations

import os
import pty
import re
import subprocess

import pytest
from redis import Redis

from services.gateway.stores.admin import AdminStore
from services.gateway.stores.api_keys import ApiKeyStore
from shared.db import open_pool
from tests.stack import GAZE, SECRETS_FILE_LINE, create_database, drop_database, secrets_from_file

GAZE_KEY = re.compile(r"gz_[A-Za-z0-9_-]{20,}")


@pytest.fixture(scope="module")
def database(test_vhost):
    """(url, pool): a database of this module's own, migrated, so that `gaze init` finds no key of another test."""
    from operations.cli import cmd_migrate
    from shared import config

    name, url = create_database("gaze_cli")
    pool = None
    try:
        cmd_migrate(None, config.load({"GAZE_DATABASE_URL": url}))
        pool = open_pool(url, max_size=1, name="test")
        yield url, pool
    finally:
        if pool is not None:
            pool.close()
        drop_database(name)
        redis = Redis.from_url(config.load().redis_url)   # the key epochs `gaze init` bumped
        for key in redis.scan_iter(f"{name}:*"):
            redis.delete(key)
        redis.close()


@pytest.fixture
def fresh(database, tmp_path, test_vhost):
    """(env, pool): `gaze init`'s environment on a database without an API key or an admin password yet."""
    url, pool = database
    name = url.rsplit("/", 1)[-1]
    with pool.connection() as conn:
        conn.execute("DELETE FROM gateway.api_keys")
        conn.execute("DELETE FROM gateway.admin")
    env = {k: v for k, v in os.environ.items() if k not in ("GAZE_ADMIN_PASSWORD", "GAZE_SECRETS_FILE")}
    env.update(GAZE_DATABASE_URL=url, GAZE_AMQP_URI=test_vhost, GAZE_RUN_DIR=str(tmp_path / "run"),
               GAZE_MEDIA_ROOT=str(tmp_path / "media"), GAZE_REDIS_PREFIX=name)
    return env, pool


def init_into_a_file(env, tmp_path):
    """`gaze init` with stdout and stderr redirected to a file, as `docker compose logs` keeps them."""
    log = tmp_path / "init.log"
    with open(log, "wb") as out:
        subprocess.run([GAZE, "init"], env=env, stdout=out, stderr=subprocess.STDOUT, check=True, timeout=120)
    return log.read_text()


def init_on_a_terminal(env):
    """`gaze init` with a pseudo-terminal as stdout and stderr: everything it wrote there."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([GAZE, "init"], env=env, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:          # EIO: the last writer closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(timeout=120) == 0
    return b"".join(chunks).decode()


def test_redirected_output_names_an_owner_only_file_and_holds_no_secret(fresh, tmp_path):
    env, pool = fresh
    text = init_into_a_file(env, tmp_path)
    assert not GAZE_KEY.search(text), text
    path = tmp_path / "run" / "first-start-secrets.txt"
    assert SECRETS_FILE_LINE.search(text).group(1) == str(path)
    secrets = secrets_from_file(path)             # asserts mode 0600
    key, password = secrets["API key"], secrets["Web UI admin password"]
    assert password not in text
    assert ApiKeyStore(pool).verify(key) and AdminStore(pool).verify_password(password)

    # a second start makes nothing, so it writes nothing and names no file
    again = init_into_a_file(env, tmp_path)
    assert not SECRETS_FILE_LINE.search(again) and not GAZE_KEY.search(again)
    assert secrets_from_file(path) == secrets


def test_a_file_left_readable_is_made_owner_only_and_a_symlink_is_refused(fresh, tmp_path):
    env, pool = fresh
    path = tmp_path / "elsewhere" / "secrets.txt"
    path.parent.mkdir()
    path.write_text("# an earlier start's secrets\nAPI key: gz_earlier\n")
    path.chmod(0o644)
    init_into_a_file({**env, "GAZE_SECRETS_FILE": str(path)}, tmp_path)
    secrets = secrets_from_file(path)             # 0600 again
    assert path.read_text().startswith("# an earlier start's secrets\n"), "appended, the earlier lines kept"
    assert ApiKeyStore(pool).verify(secrets["API key"])

    target, link = tmp_path / "target.txt", tmp_path / "link.txt"
    target.write_text("")
    link.symlink_to(target)
    with pool.connection() as conn:               # so that there is something new to write
        conn.execute("DELETE FROM gateway.admin")
    failed = subprocess.run([GAZE, "init"], env={**env, "GAZE_SECRETS_FILE": str(link)}, capture_output=True,
                            text=True, timeout=120)
    assert failed.returncode != 0 and "GAZE_SECRETS_FILE" in failed.stderr
    assert target.read_text() == "", "nothing written through the link"
    assert not GAZE_KEY.search(failed.stdout + failed.stderr)


def test_a_terminal_sees_them_printed_and_no_file_is_written(fresh, tmp_path):
    env, pool = fresh
    shown = init_on_a_terminal(env)
    key = GAZE_KEY.search(shown).group(0)
    password = re.search(r"Your Web UI admin password \(shown once[^\n]*\n\s+(\S+)", shown).group(1)
    assert ApiKeyStore(pool).verify(key) and AdminStore(pool).verify_password(password)
    assert not SECRETS_FILE_LINE.search(shown.replace("\r\n", "\n"))
    assert not (tmp_path / "run" / "first-start-secrets.txt").exists()
