"""The `gaze` command line: migrations, API keys, running services and the whole stack.

Imports stay inside the commands: `gaze service` must patch eventlet before psycopg is imported.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from operations.registry import MIGRATING_SERVICES, NAMEKO_SERVICES, ROOT, SERVICES

SUPERVISOR_CONF = ROOT / "deploy" / "supervisord.conf"


def cmd_migrate(args, settings=None):
    from shared import config
    from operations import migrate

    settings = settings or config.load()
    migrate.ensure_database(settings.database_url)
    for service in MIGRATING_SERVICES:
        applied = migrate.apply(settings.database_url, service, SERVICES[service].migrations_dir)
        print(f"migrations: {service}: {'applied ' + ', '.join(applied) if applied else 'up to date'}")


def cmd_migrate_queues(args, settings=None):
    """The queues of an install from before quorum queues, as GAZE declares them now (operations/queues.py)."""
    from kombu import Connection

    from shared import config
    from operations import queues

    settings = settings or config.load()
    checkpoints = {*settings.checkpoints, *_unfinished_checkpoints(settings), *(getattr(args, "checkpoint", None) or ())}
    with Connection(settings.amqp_uri, connect_timeout=10) as connection:
        connection.ensure_connection(max_retries=10, interval_start=1, interval_step=1, interval_max=5)
        outcomes = queues.migrate(connection, queues.declared_queues(settings, sorted(checkpoints)))
    for outcome in outcomes:
        if outcome.action != "absent":
            print(f"queues: {outcome}")
    if any(outcome.action == "busy" for outcome in outcomes):
        sys.exit(1)


def _unfinished_checkpoints(settings) -> set:
    """The checkpoints of jobs not ended yet: their lines may hold their work orders."""
    import psycopg

    from shared.job_states import ACTIVE, sql_list

    try:
        with psycopg.connect(settings.database_url, connect_timeout=10) as conn:
            rows = conn.execute("SELECT DISTINCT spec->>'checkpoint' FROM jobs.jobs"
                                f" WHERE status IN ({sql_list(ACTIVE)})").fetchall()
    except psycopg.errors.UndefinedTable:     # no jobs schema yet: a new install
        return set()
    return {checkpoint for (checkpoint,) in rows if checkpoint}


def _key_store(settings):
    from shared.db import open_pool
    from services.gateway.stores.api_keys import ApiKeyStore

    return ApiKeyStore(open_pool(settings.database_url, max_size=1, name="cli"), settings.redis_url,
                       settings.redis_prefix)


def cmd_api_key(args):
    from shared import config

    store = _key_store(config.load())
    if args.action == "regenerate":
        print("New API key (shown once; the previous key no longer works):", file=sys.stderr)
        print(store.regenerate())
    else:
        key = store.ensure()
        print(key if key else "An API key already exists (gaze api-key regenerate makes a new one).")


def _admin_store(settings):
    from shared.db import open_pool
    from services.gateway.stores.admin import AdminStore

    return AdminStore(open_pool(settings.database_url, max_size=1, name="cli"))


def cmd_admin_password(args):
    """Reset the web UI's admin password, every session ends. Without --stdin a random one is made and
    printed (last line); with it, the password is the first line of standard input (never an argument:
    arguments are visible to every user of the machine in the process list, and kept in shell history)."""
    import secrets

    from shared import config

    if args.stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise SystemExit("gaze admin-password --stdin: no password on the first line of standard input")
    else:
        password = secrets.token_urlsafe(12)
    _admin_store(config.load()).set_password(password)
    print("Admin password set; every web session was logged out.", file=sys.stderr)
    if not args.stdin:
        print(password)


def cmd_generator_health(args):
    """Exit 0 when at least one generator replica reported recently that it serves (its worker process idle
    or busy, its backend healthy), else 1. Prints every replica the jobs service has heard from, with its
    worker's state (idle, busy, stuck, restarting ...), for an operator or a container health check."""
    from nameko.standalone.rpc import ClusterRpcProxy

    from shared.contracts import ClusterTransport
    from shared.contracts.jobs import JobsClient

    from shared import config

    settings = config.load()
    stale_after = 3 * settings.status_interval_seconds
    with ClusterRpcProxy({"AMQP_URI": settings.amqp_uri, "serializer": "json"}, timeout=10) as proxy:
        replicas = JobsClient(ClusterTransport(proxy)).replicas()
    if args.replica:
        replicas = [r for r in replicas if r["replica"] == args.replica]
    good = 0
    for r in replicas:
        fresh = r["age_seconds"] <= stale_after
        state = "ok" if r["healthy"] and fresh else ("STALE" if r["healthy"] else "UNHEALTHY")
        good += state == "ok"
        print(f"{state:9s} {r['replica']}  backend={r['backend']}  worker={r['state']}  "
              f"restarts={r['restarts']}  {r['detail']}  (reported {r['age_seconds']:.0f}s ago)")
    if not replicas:
        print("no generator replica has reported yet")
    raise SystemExit(0 if good else 1)


def cmd_webhook_secret(args):
    """Print an API key name's webhook signing secret (made on first need) as the last line; --rotate makes
    a new one first (the old one keeps signing beside it for 24 h)."""
    from nameko.standalone.rpc import ClusterRpcProxy

    from shared import config
    from shared.contracts import ClusterTransport
    from shared.contracts.webhooks import WebhooksClient

    settings = config.load()
    with ClusterRpcProxy({"AMQP_URI": settings.amqp_uri, "serializer": "json"}, timeout=settings.rpc_timeout) as proxy:
        webhooks = WebhooksClient(ClusterTransport(proxy))
        answer = webhooks.rotate_secret(args.key) if args.rotate else webhooks.secret(args.key)
    if args.rotate:
        print(f"New webhook secret for API key {args.key!r}; the previous one also signs for 24 h.", file=sys.stderr)
    else:
        print(f"Webhook secret for API key {args.key!r} (deliveries of its jobs are signed with it):", file=sys.stderr)
    print(answer["secret"])


def cmd_service(args):
    from operations.runner import run

    run(args.name)


def ensure_media_store(settings, wait_seconds=60.0):
    """With GAZE_MEDIA_STORE=s3, create the bucket when it does not exist yet (the one place that does:
    services and GPU nodes expect it to exist), waiting up to `wait_seconds` for a store that is not
    accepting connections yet (a MinIO container starting beside us); the local store is a directory."""
    import time

    from botocore.exceptions import ConnectionError as BotoConnectionError

    from shared.media import MediaStoreError, open_media_store

    store = open_media_store(settings)
    if store.kind != "s3":
        Path(settings.media_root).mkdir(parents=True, exist_ok=True)
        return
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            created = store.ensure_bucket()
            break
        except MediaStoreError as exc:
            if not isinstance(exc.__cause__, BotoConnectionError) or time.monotonic() > deadline:
                raise
            print(f"media store: waiting for {store.endpoint_url or 'S3'} ({exc.__cause__})", flush=True)
            time.sleep(2)
    print(f"media store: s3://{store.bucket}/{store.prefix} at {store.endpoint_url or 'AWS'}"
          f"{' (bucket created)' if created else ''}")


def initialise(settings):
    """Migrate, make sure the media store's bucket exists (s3), then make sure an API key and the admin
    password exist. Returns what was newly made (key, password), each None when it existed already:
    shown once, never stored in plain text."""
    cmd_migrate(None, settings)
    cmd_migrate_queues(None, settings)
    ensure_media_store(settings)
    key = _key_store(settings).ensure()
    password = _admin_store(settings).ensure_password(settings.admin_password)
    return key, password


SECRETS_FILE_NAME = "first-start-secrets.txt"


def secrets_path(settings) -> Path:
    """Where secrets made by `gaze init` / `gaze up` go when standard output is not a terminal."""
    if settings.secrets_file:
        return Path(settings.secrets_file).absolute()   # not resolved: a symlink there is refused, not followed
    return Path(settings.run_dir) / SECRETS_FILE_NAME


def write_secrets_file(path: Path, lines, made_by: str) -> None:
    """Append `lines` to `path`, a file only its owner may read or write: created 0600, set back to 0600
    if it existed with more, never written through a symlink. Appended, not replaced: a secret made
    earlier (the key, when only the password is new now) stays readable until the owner deletes the file."""
    from datetime import datetime, timezone

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        os.fchmod(fd, 0o600)
        when = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        out.write(f"# {when}, made by `{made_by}`: shown only here; keep them safe, then delete this file\n")
        out.writelines(f"{line}\n" for line in lines)


def show_secrets(settings, made_by: str, key: str | None, password: str | None) -> None:
    """The API key and admin password made just now. Printed when standard output is a terminal; anywhere
    else (docker compose logs, a redirected stdout) the output outlives the moment, so they go to an
    owner-only file (secrets_path) and only its path is printed."""
    made = [(label, value, hint) for label, value, hint in (
        ("API key", key, "`gaze api-key regenerate` makes a new one"),
        ("Web UI admin password", password, "`gaze admin-password` sets a new one"),
    ) if value]
    if not made:
        return
    if sys.stdout.isatty():
        for label, value, hint in made:
            print(f"Your {label} (shown once; {hint}):")
            print(f"    {value}")
        return
    path = secrets_path(settings)
    try:
        write_secrets_file(path, [f"{label}: {value}" for label, value, _ in made], made_by)
    except OSError as exc:
        raise SystemExit(f"could not write {path} ({exc.strerror}); set GAZE_SECRETS_FILE to a writable path,"
                         f" or run `gaze api-key regenerate` and `gaze admin-password` in a terminal") from None
    print(f"New {' and '.join(label for label, _, _ in made)}: not printed (standard output is not a terminal,"
          f" and a log keeps what it is given); written to a file only you can read:")
    print(f"    {path}")
    print(f"Read it with `cat {path}`, keep them somewhere safe, then delete the file.")


def cmd_init(args):
    """The one-shot set-up step of a deployment (docker compose's `migrate` service)."""
    from shared import config

    settings = config.load()
    key, password = initialise(settings)
    show_secrets(settings, "gaze init", key, password)


def cmd_up(args):
    """Migrate, make sure an API key exists (show it the first time), then supervise every process."""
    from shared import config

    settings = config.load()
    key, password = initialise(settings)
    run_dir = Path(settings.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    Path(settings.media_root).mkdir(parents=True, exist_ok=True)
    bar = "=" * 72
    print(bar)
    print(f"GAZE is starting on {settings.public_url}  ({args.generators} generator replica(s), "
          f"backend: {settings.backend}, media store: {settings.media_store})")
    show_secrets(settings, "gaze up", key, password)
    if not key:
        print("API key: already created earlier; run `gaze api-key regenerate` for a new one.")
    if not password and not settings.admin_password:
        print("Web UI: log in with the admin password shown at first start (or run `gaze admin-password`).")
    print("Stop with Ctrl-C.")
    print(bar, flush=True)
    # what supervisord.conf reads (%(ENV_GAZE_...)s) and every process it starts inherits: the run
    # directory resolved here, so all of them use the same one
    env = dict(os.environ, GAZE_GENERATORS=str(args.generators), GAZE_RUN_DIR=str(run_dir),
               GAZE_ROOT=str(ROOT), PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    supervisord = shutil.which("supervisord", path=env["PATH"])
    os.execve(supervisord, [supervisord, "--nodaemon", "--configuration", str(SUPERVISOR_CONF)], env)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="gaze", description="GAZE image generation service")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="create the database if needed and apply every service's migrations")
    queues = sub.add_parser("migrate-queues", help="turn the RabbitMQ queues of an older install into the quorum "
                                                   "queues GAZE declares now, keeping their messages (stop the "
                                                   "services first)")
    queues.add_argument("--checkpoint", action="append", help="also the line of this checkpoint (repeatable)")
    sub.add_parser("init", help="migrate, create the S3 bucket (GAZE_MEDIA_STORE=s3), the API key and admin "
                                "password if missing (shown once: on a terminal, else in an owner-only file)")
    keys = sub.add_parser("api-key", help="manage the REST API key")
    keys.add_argument("action", choices=["regenerate", "ensure"])
    admin = sub.add_parser("admin-password", help="set the web UI admin password (random and printed, or --stdin)")
    admin.add_argument("--stdin", action="store_true", help="read the new password from standard input's first line")
    health = sub.add_parser("generator-health", help="list generator replicas; exit 1 when none is healthy")
    health.add_argument("--replica", help="check only this replica")
    secret = sub.add_parser("webhook-secret", help="print an API key's webhook signing secret (last line)")
    secret.add_argument("--key", default="default", help="the API key's name (default: default)")
    secret.add_argument("--rotate", action="store_true",
                        help="make a new secret first; the old one keeps signing beside it for 24 h")
    service = sub.add_parser("service", help="run one nameko service in the foreground")
    service.add_argument("name", choices=NAMEKO_SERVICES)
    up = sub.add_parser("up", help="run the whole stack (gateway, presets, jobs, webhooks, generators) until Ctrl-C")
    # GENERATORS, not a GAZE_ setting: the stack's shape, the variable docker compose's deploy.replicas reads too
    up.add_argument("--generators", type=int, default=int(os.environ.get("GENERATORS", "1")),
                    help="generator replicas (default: $GENERATORS or 1)")
    args = parser.parse_args(argv)
    {"migrate": cmd_migrate, "migrate-queues": cmd_migrate_queues, "init": cmd_init, "api-key": cmd_api_key, "admin-password": cmd_admin_password,
     "generator-health": cmd_generator_health, "webhook-secret": cmd_webhook_secret, "service": cmd_service,
     "up": cmd_up}[args.command](args)


if __name__ == "__main__":
    main()
