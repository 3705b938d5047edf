"""What a test run stands on: a PostgreSQL database and a RabbitMQ vhost of its own on the machine's
shared servers (so the suite can run while a dev stack is up on the same machine), and the whole stack as
a user runs it: `gaze up` (supervisord → gunicorn gateway, presets, jobs and two generator replicas) on
its own port, database, vhost and media directory. Used by the fixtures of tests/conftest.py and
tests/integration/conftest.py, and by the e2e, fault and browser tests."""
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
import requests

from shared.job_states import TERMINAL

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


# --- the whole stack --------------------------------------------------------------------------------

GAZE = str(Path(sys.executable).parent / "gaze")
STARTUP_SECONDS = 90
ADMIN_PASSWORD = "e2e-admin-password"
NO_RATE_LIMITS = {"GAZE_RATE_LIMIT_SUBMIT": "", "GAZE_RATE_LIMIT_READ": "", "GAZE_RATE_LIMIT_AUTH_FAILURES": "",
                  "GAZE_RATE_LIMIT_LOGIN": ""}


@dataclass
class Stack:
    url: str
    key: str
    env: dict
    media_root: Path
    log: Path

    def headers(self, key=None):
        return {"X-API-Key": key or self.key, "Content-Type": "application/json"}

    def get(self, path, **kwargs):
        kwargs.setdefault("headers", self.headers())
        return requests.get(self.url + path, timeout=30, **kwargs)

    def post(self, path, **kwargs):
        kwargs.setdefault("headers", self.headers())
        return requests.post(self.url + path, timeout=30, **kwargs)

    def wait_job(self, job_id, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.get(f"/api/v1/job/{job_id}").json()
            if job["status"] in TERMINAL:
                return job
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} not finished after {timeout}s: {job}")


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


SECRETS_FILE_LINE = re.compile(r"written to a file only you can read:\n\s+(\S[^\n]*)\n")


def secrets_from_file(path: Path) -> dict:
    """{label: value} of the owner-only file `gaze init` / `gaze up` write their new secrets to when standard
    output is not a terminal (operations/cli.py: show_secrets); the latest of each label. Fails unless the
    file is readable by its owner alone."""
    mode = path.stat().st_mode & 0o777
    assert mode == 0o600, f"{path} has mode {oct(mode)}, not 0o600"
    return dict(re.findall(r"^(API key|Web UI admin password): (\S+)$", path.read_text(), re.MULTILINE))


def _read_key(log: Path, proc, deadline):
    """The API key `gaze up` made: its stdout is a file here, so the log names the secrets file instead of
    printing the key."""
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        match = SECRETS_FILE_LINE.search(text)
        if match:
            key = secrets_from_file(Path(match.group(1)))["API key"]
            assert key not in text, "the API key is in the stack's log"
            return key
        if proc.poll() is not None:
            raise AssertionError(f"gaze up exited early:\n{text}")
        time.sleep(0.2)
    raise AssertionError(f"no secrets file named in the log:\n{log.read_text()}")


@contextlib.contextmanager
def running_stack(workdir: Path, generators: int = 2, amqp_uri: str | None = None, **extra_env):
    """`gaze up` with its own database, vhost, port and media directory; stopped (SIGTERM) on exit. With
    `amqp_uri`, on that broker instead (a vhost the caller made and removes: tests/faults/cluster.py)."""
    db_name, db_url = create_database("gaze_e2e")
    vhost = None
    if amqp_uri is None:
        vhost, amqp_uri = create_vhost("gaze_e2e")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ,
               GAZE_DATABASE_URL=db_url, GAZE_AMQP_URI=amqp_uri, GAZE_BIND=f"127.0.0.1:{port}",
               GAZE_PUBLIC_URL=url, GAZE_ADMIN_PASSWORD=ADMIN_PASSWORD, GAZE_MEDIA_ROOT=str(workdir / "media"),
               GAZE_RUN_DIR=str(workdir / "run"), GAZE_REDIS_PREFIX=db_name,
               # rate limits off unless a test sets them (tests/e2e/test_rate_limit.py): one key drives
               # every test of a session's stack, far past the default budgets (the fuzzer most of all)
               **{**NO_RATE_LIMITS, **extra_env})
    log = workdir / "stack.log"
    # append mode: supervisord writes its own lines through this descriptor and its children's through
    # /dev/stdout opened again; without O_APPEND its writes land at a stale offset, over the children's
    with open(log, "ab") as out:
        proc = subprocess.Popen([GAZE, "up", "--generators", str(generators)], stdout=out,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        key = _read_key(log, proc, deadline)
        running = Stack(url, key, env, workdir / "media", log)
        while True:
            try:
                # every service answers: presets lists, jobs says "no such job" (404, not 503)
                if (running.get("/api/v1/presets").status_code == 200
                        and running.get(f"/api/v1/job/{uuid.uuid4()}").status_code == 404):
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise AssertionError(f"stack did not come up:\n{log.read_text()}")
            time.sleep(0.3)
        yield running
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        # the log is the first thing to read when an e2e test fails
        sys.stderr.write(f"\n--- stack log: {log}\n")
        drop_database(db_name)
        if vhost is not None:
            delete_vhost(vhost)


def generator_pids(supervisor_pid):
    """{replica name: pid} of the generator replicas supervisord runs."""
    children = subprocess.run(["pgrep", "-P", str(supervisor_pid)], capture_output=True, text=True).stdout.split()
    pids = {}
    for pid in children:
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                env = dict(item.split(b"=", 1) for item in handle.read().split(b"\0") if b"=" in item)
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
        except OSError:
            continue
        if b"generator" in cmdline and b"GAZE_REPLICA_NAME" in env:
            pids[env[b"GAZE_REPLICA_NAME"].decode()] = int(pid)
    return pids


def scripted_stack(workdir: Path, generators: int = 1):
    """A stack whose backend obeys the prompt (tests/backends.py: "slow:<s>", "hang", ...)."""
    return running_stack(workdir, generators=generators, GAZE_BACKEND="tests.backends:ScriptedBackend")


@contextlib.contextmanager
def another_api_key(stack: Stack):
    """A second API key (a name of its own) on `stack`, made straight in its database."""
    from services.gateway.stores.api_keys import ApiKeyStore
    from shared.db import open_pool

    pool = open_pool(stack.env["GAZE_DATABASE_URL"], max_size=1, name="test")
    try:
        yield ApiKeyStore(pool).create(f"other-{uuid.uuid4().hex[:6]}")
    finally:
        pool.close()
