"""All configuration, read from environment variables in one place.

Each setting is declared once, as a field of a settings dataclass with its default (and, where plain type
conversion is not enough, its parser or an older name: `setting(...)`); its environment variable is
GAZE_<FIELD NAME>, derived, never written out again (`load_settings`). `Settings` holds what the
processes share; a backend's own settings are declared beside it (services/generator/backends: its
`settings_class`) and loaded by the same `load_settings` in the process that builds it.
tests/unit/test_config.py checks that every one is documented in the README and that no GAZE_ variable is
read anywhere else.

Every process (gateway, services, CLI) calls `load()` once at start-up; nameko services receive the
values through their container config (see `nameko_config`) so tests can hand them their own.
"""
from __future__ import annotations

import os
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


# Parsers for `setting(parse=...)`: each turns the variable's text (the default when it is unset) into the value.

def stripped(raw: str, default):
    return raw.strip()


def choice(raw: str, default):
    """A keyword: case and spaces do not matter, and empty means the default."""
    return raw.strip().lower() or default


def resolved_path(raw: str, default):
    return str(Path(raw or default).resolve())


def optional_path(raw: str, default):
    return str(Path(raw).resolve()) if raw else default


def key_prefix(raw: str, default):
    return raw.strip("/")


def flag(raw, default):
    """On or off: 1, true, yes or on (any case) mean on; anything else, off."""
    return raw if isinstance(raw, bool) else raw.strip().lower() in ("1", "true", "yes", "on")


def seconds_list(raw, default):
    """Comma-separated seconds, e.g. "1, 5, 30"."""
    if not isinstance(raw, str):
        return list(raw)
    return [float(item) for item in raw.split(",") if item.strip()] or list(default)


def setting(default=None, *, parse=None, aliases=(), default_factory=None, **kwargs):
    """A field of a settings dataclass whose environment variable is GAZE_<NAME>; `parse(raw, default)`
    turns a set value into the field's value (default: by the field's type), `aliases` are older names
    still read."""
    metadata = {"parse": parse, "aliases": aliases}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=metadata, **kwargs)
    return field(default=default, metadata=metadata, **kwargs)


SCHEDULING_MODES = ("checkpoint", "fcfs")   # GAZE_SCHEDULING

DEFAULT_CHECKPOINTS = (
    "Illustrious/model.safetensors",
    "SDXL/sd_xl_base_1.0.safetensors",
    "SD15/v1-5-pruned-emaonly.safetensors",
)


@dataclass(frozen=True)
class Settings:
    amqp_uri: str = "amqp://guest:guest@127.0.0.1:5672/"
    database_url: str = "postgresql://postgres@127.0.0.1:5432/gaze"
    redis_url: str = "redis://127.0.0.1:6379/0"   # the job read model (shared/contracts/jobs/view.py); "" = none, polls use RPC
    redis_prefix: str = "gaze"                     # key prefix, so several stacks can share one Redis
    media_root: str = setting("var/media", parse=resolved_path)
    # media store (shared/media.py): "local" = the media_root directory; "s3" = a bucket of an
    # S3-compatible store, for generators on other machines (the gateway still caches thumbnails locally)
    media_store: str = setting("local", parse=choice)
    s3_endpoint_url: str = ""               # "" = AWS; e.g. http://minio:9000
    s3_bucket: str = ""
    s3_prefix: str = setting("", parse=key_prefix)  # optional key prefix: objects are <prefix>/<relative path>
    s3_region: str = ""                     # "" = boto3's default
    s3_access_key_id: str = ""              # both "" = boto3's credential chain (env, ~/.aws, instance role)
    s3_secret_access_key: str = setting("", repr=False)
    bind: str = "0.0.0.0:5782"
    public_url: str = "http://localhost:5782"
    log_format: str = setting("json", parse=choice)  # every process's log lines (shared/logs.py): json | text
    # `gaze up` (operations/cli.py): supervisord's files and logs, and gunicorn's metrics directory beneath
    # it (services/gateway/gunicorn_conf.py); `gaze up` hands it on to the processes it starts
    run_dir: str = setting(str(ROOT / "var" / "run"), parse=resolved_path)
    admin_password: str = setting("", repr=False)  # `gaze init` / `gaze up`: the web UI's password; "" = generate one
    # where `gaze init` / `gaze up` write the secrets they make when standard output is not a terminal
    # (owner-only file, operations/cli.py); "" = <run_dir>/first-start-secrets.txt. Not resolved: a symlink
    # there is refused when the file is opened, never followed
    secrets_file: str = setting("", parse=stripped)
    # gateway
    gateway_workers: int = 2
    gateway_threads: int = 8
    rpc_timeout: float = 10.0
    max_body_bytes: int = 64 * 1024
    # the Python client's sources the gateway builds its served wheel from (web/client_wheel.py); "" = the
    # checkout's clients/python (the deployment image copies them to /app/clients/python and sets this)
    client_source: str = setting("", parse=stripped)
    metrics_token: str = ""                 # "" = /metrics only to loopback callers; else a bearer token (ops/auth.py)
    # fault injection for tests, never on in production: the first N generate requests of each API key name
    # (per gateway process) answer 503 as if the broker failed, after their jobs were created (generation.py)
    fault_generate_503_after_create: int = 0
    # cookies are Secure when the request came over https; with this on, also when X-Forwarded-Proto (or
    # Forwarded proto=) says https: only behind a proxy that sets it and strips clients' own
    trust_proxy_headers: bool = setting(False, parse=flag)
    admin_idle_seconds: float = 7200.0      # a web UI session unused this long is logged out (stores/admin.py)
    # gateway rate limits (services/gateway/stores/rate_limit.py): "<n>/<second|minute|hour|day>"; "" or "0" = off
    rate_limit_submit: str = setting("60/minute", parse=stripped)        # POST /api/v1/generate/<slug>, per API key
    rate_limit_read: str = setting("", parse=stripped)                   # polls and the presets list, per API key; off: no Redis round trip
    rate_limit_auth_failures: str = setting("30/minute", parse=stripped) # invalid API keys, per client address
    rate_limit_login: str = setting("10/minute", parse=stripped)         # web UI login attempts, per client address
    rate_limit_strategy: str = setting("fixed-window", parse=choice)   # or moving-window, sliding-window-counter (the `limits` library)
    # validation
    max_dimension: int = 2048
    max_prompt_chars: int = 2000
    checkpoints: list = setting(default_factory=lambda: list(DEFAULT_CHECKPOINTS))
    # services
    heartbeat: int = 60
    service_workers: int = 10
    db_pool_size: int = 10
    # how long a request waits for a database connection before giving up (psycopg_pool's PoolTimeout,
    # which the gateway answers with 503 + Retry-After); below rpc_timeout, so a service's outage is a 503
    db_timeout: float = 5.0
    # jobs
    dispatch_sweep_seconds: float = 10.0
    # stuck-job sweep: a job held by a replica (reserved or processing) with no sign of life (claim,
    # job_started, job_progress) for this long is put back on the work queue, or failed after
    # max_attempts runs. Must exceed the longest time a job can go without one: with a backend that reports
    # no progress, GAZE_GENERATOR_PREFETCH x the longest generation (a reserved job waits for the ones ahead).
    stuck_job_seconds: float = 1800.0
    stuck_sweep_seconds: float = 60.0       # how often the jobs service looks for stuck jobs
    # presets: how often the presets read model (shared/contracts/presets/view.py) is checked against Postgres
    presets_publish_seconds: float = 5.0
    # runs of a job before it fails; also the delivery limit of every durable queue (shared/broker.py)
    max_attempts: int = 3
    # a job redelivered by the broker while the replica that runs it still says so (it asks for its line every
    # GAZE_SCHEDULER_TICK_SECONDS, naming the jobs it runs) waits for that run instead of running twice: its
    # connection went (a broker node stopped), not the replica. Silent this long, the replica counts as gone.
    owner_silence_seconds: float = 10.0
    # checkpoint-aware scheduling (README "Scheduling"; services/jobs/scheduling.py): "checkpoint" routes each
    # job to its checkpoint's line and keeps replicas on the model they hold; "fcfs" puts every job on the
    # one shared line, first come first served (the behaviour before, and the benchmark's peer)
    scheduling: str = setting("checkpoint", parse=choice)
    # no job waits longer than this for a replica to take up its checkpoint (while the farm has capacity):
    # a line nobody serves gets a replica early enough for its jobs to start by then
    scheduler_max_wait_seconds: float = 60.0
    # how often a busy replica asks whether it should move to another line (an idle one asks at once)
    scheduler_tick_seconds: float = 0.5
    # generator: the backend a replica runs (its own settings are declared beside it: services/generator/backends)
    backend: str = "preview"
    replica_name: str = ""
    generator_prefetch: int = 2             # jobs a replica holds: 1 running + 1 claimed and waiting (see operations/runner.py)
    status_interval_seconds: float = 30.0
    # generator: its worker process (services/generator/supervisor.py)
    # per job, every backend, counted from the moment the backend starts the job; then it is stopped and fails
    job_timeout_seconds: float = setting(600.0, aliases=("GAZE_COMFYUI_TIMEOUT_SECONDS",))  # the old, ComfyUI-only name
    # a busy worker with no sign of life from its backend (a step, an engine event) for this long is stuck:
    # killed and replaced. Fits a 1024² SDXL job on a slow GPU including a checkpoint load from disk.
    worker_stall_seconds: float = 180.0
    generator_health_bind: str = setting("", parse=stripped)  # e.g. 0.0.0.0:8790: the replica's own health endpoint; "" = none
    # webhooks (services/webhooks): the waits before each retry of a delivery that got no 2xx answer (1 s,
    # 5 s, 30 s, then backing off to about an hour in all); after the last one the delivery is failed
    webhook_retry_schedule: list = setting(default_factory=lambda: [1.0, 5.0, 30.0, 120.0, 600.0, 1200.0, 1800.0],
                                           parse=seconds_list)
    webhook_timeout_seconds: float = 10.0   # a receiver that has not answered by then failed this attempt
    webhook_poll_seconds: float = 1.0       # how often the webhooks service looks for deliveries that are due
    webhook_concurrency: int = 50           # deliveries in flight at once per webhooks service process
    # 1 = webhooks may target loopback, private, link-local and metadata addresses (tests, a LAN receiver)
    webhook_allow_private: bool = setting(False, parse=flag)

    def nameko_config(self, **overrides) -> dict:
        """The container config a nameko service runs with; DependencyProviders read from it."""
        config = {
            "AMQP_URI": self.amqp_uri,
            "HEARTBEAT": self.heartbeat,
            "max_workers": self.service_workers,
            "serializer": "json",
            "GAZE": asdict(self),
        }
        config.update(overrides)
        return config


def env_name(name: str) -> str:
    return f"GAZE_{name.upper()}"


def load_settings(cls, env=None):
    """A settings dataclass (`cls`) from the environment: each field from GAZE_<FIELD NAME> (or an older
    alias), parsed as its field says (see `setting`) or by its type; unset, or empty for a number or a
    list, means the default."""
    env = os.environ if env is None else env
    values = {}
    for spec in fields(cls):
        default = spec.default if spec.default is not MISSING else spec.default_factory()
        names = (env_name(spec.name), *spec.metadata.get("aliases", ()))
        raw = next((env[name] for name in names if env.get(name) not in (None, "")), env.get(names[0]))
        parse = spec.metadata.get("parse")
        kind = spec.type if isinstance(spec.type, str) else spec.type.__name__
        if parse is not None:
            values[spec.name] = parse(default if raw is None else raw, default)
        elif raw is None or (raw == "" and kind != "str"):
            values[spec.name] = default
        else:
            values[spec.name] = _BY_TYPE[kind](raw)
    return cls(**values)


def load(env=None) -> Settings:
    """The shared Settings from the environment (`load_settings`), checked."""
    return _checked(load_settings(Settings, env))


_BY_TYPE = {"str": str, "int": int, "float": float,
            "list": lambda raw: [item.strip() for item in raw.split(",") if item.strip()]}


def _checked(settings: Settings) -> Settings:
    # kombu's consumer loop only sends a heartbeat after a full second of silence; at 2 s RabbitMQ's own
    # heartbeats (every second) keep it from ever doing so and the broker drops idle services.
    if 0 < settings.heartbeat < 3:
        raise ValueError("GAZE_HEARTBEAT must be 0 (off) or at least 3 seconds")
    if settings.stuck_job_seconds <= 0 or settings.stuck_sweep_seconds <= 0:
        raise ValueError("GAZE_STUCK_JOB_SECONDS and GAZE_STUCK_SWEEP_SECONDS must be positive")
    if settings.job_timeout_seconds <= 0 or settings.worker_stall_seconds <= 0:
        raise ValueError("GAZE_JOB_TIMEOUT_SECONDS and GAZE_WORKER_STALL_SECONDS must be positive")
    if settings.generator_prefetch < 1:
        raise ValueError("GAZE_GENERATOR_PREFETCH must be at least 1")
    if not settings.webhook_retry_schedule or min(settings.webhook_retry_schedule) < 0:
        raise ValueError("GAZE_WEBHOOK_RETRY_SCHEDULE must list at least one wait of 0 seconds or more")
    if settings.webhook_timeout_seconds <= 0 or settings.webhook_poll_seconds <= 0 or settings.webhook_concurrency < 1:
        raise ValueError("GAZE_WEBHOOK_TIMEOUT_SECONDS, GAZE_WEBHOOK_POLL_SECONDS and GAZE_WEBHOOK_CONCURRENCY"
                         " must be positive")
    if settings.scheduling not in SCHEDULING_MODES:
        raise ValueError(f"GAZE_SCHEDULING must be one of {', '.join(SCHEDULING_MODES)}, not {settings.scheduling!r}")
    if settings.scheduler_max_wait_seconds <= 0 or settings.scheduler_tick_seconds <= 0:
        raise ValueError("GAZE_SCHEDULER_MAX_WAIT_SECONDS and GAZE_SCHEDULER_TICK_SECONDS must be positive")
    if settings.admin_idle_seconds <= 0:
        raise ValueError("GAZE_ADMIN_IDLE_SECONDS must be positive")
    if settings.media_store not in ("local", "s3"):
        raise ValueError(f"GAZE_MEDIA_STORE must be local or s3, not {settings.media_store!r}")
    if settings.media_store == "s3" and not settings.s3_bucket:
        raise ValueError("GAZE_MEDIA_STORE=s3 needs GAZE_S3_BUCKET")
    if bool(settings.s3_access_key_id) != bool(settings.s3_secret_access_key):
        raise ValueError("set both GAZE_S3_ACCESS_KEY_ID and GAZE_S3_SECRET_ACCESS_KEY, or neither")
    return settings


def from_nameko(config: dict) -> Settings:
    """Rebuild Settings inside a nameko container from the dict `nameko_config` put there."""
    return Settings(**config["GAZE"])
