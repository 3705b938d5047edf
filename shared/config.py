"""All configuration, read from environment variables in one place.

Every process (gateway, services, CLI) calls `load()` once at start-up; nameko services receive the
values through their container config (see `nameko_config`) so tests can hand them their own.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, asdict
from pathlib import Path


def _int(env, name, default):
    raw = env.get(name)
    return default if raw in (None, "") else int(raw)


def _float(env, name, default):
    raw = env.get(name)
    return default if raw in (None, "") else float(raw)


def _list(env, name, default):
    raw = env.get(name)
    if raw in (None, ""):
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


DEFAULT_CHECKPOINTS = (
    "Illustrious/model.safetensors",
    "SDXL/sd_xl_base_1.0.safetensors",
    "SD15/v1-5-pruned-emaonly.safetensors",
)


@dataclass(frozen=True)
class Settings:
    amqp_uri: str = "amqp://guest:guest@127.0.0.1:5672/"
    database_url: str = "postgresql://postgres@127.0.0.1:5432/gaze"
    redis_url: str = "redis://127.0.0.1:6379/0"   # the job read model (shared/job_view.py); "" = none, polls use RPC
    redis_prefix: str = "gaze"                     # key prefix, so several stacks can share one Redis
    media_root: str = "var/media"
    # media store (shared/media.py): "local" = the media_root directory; "s3" = a bucket of an
    # S3-compatible store, for generators on other machines (the gateway still caches thumbnails locally)
    media_store: str = "local"
    s3_endpoint_url: str = ""               # "" = AWS; e.g. http://minio:9000
    s3_bucket: str = ""
    s3_prefix: str = ""                     # optional key prefix: objects are <prefix>/<relative path>
    s3_region: str = ""                     # "" = boto3's default
    s3_access_key_id: str = ""              # both "" = boto3's credential chain (env, ~/.aws, instance role)
    s3_secret_access_key: str = field(default="", repr=False)
    bind: str = "0.0.0.0:5782"
    public_url: str = "http://localhost:5782"
    log_format: str = "json"                # every process's log lines (shared/logs.py): json | text
    # gateway
    gateway_workers: int = 2
    gateway_threads: int = 8
    rpc_timeout: float = 10.0
    max_body_bytes: int = 64 * 1024
    metrics_token: str = ""                 # "" = /metrics open (keep it off the public network); else a bearer token
    # gateway rate limits (services/gateway/rate_limit.py): "<n>/<second|minute|hour|day>"; "" or "0" = off
    rate_limit_submit: str = "60/minute"        # POST /api/v1/generate/<slug>, per API key
    rate_limit_read: str = ""                   # polls and the presets list, per API key; off: no Redis round trip
    rate_limit_auth_failures: str = "30/minute" # invalid API keys, per client address
    rate_limit_login: str = "10/minute"         # web UI login attempts, per client address
    rate_limit_strategy: str = "fixed-window"   # or moving-window, sliding-window-counter (the `limits` library)
    # validation
    max_dimension: int = 2048
    max_prompt_chars: int = 2000
    checkpoints: list = field(default_factory=lambda: list(DEFAULT_CHECKPOINTS))
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
    # presets: how often the presets read model (shared/preset_view.py) is checked against Postgres
    presets_publish_seconds: float = 5.0
    max_attempts: int = 3
    # generator
    backend: str = "preview"
    replica_name: str = ""
    simulated_gpu_seconds: float = 0.2
    generator_prefetch: int = 2             # jobs a replica holds: 1 running + 1 claimed and waiting (see shared/runner.py)
    status_interval_seconds: float = 30.0
    # generator: its worker process (services/generator/supervisor.py)
    # per job, every backend, counted from the moment the backend starts the job; then it is stopped and fails
    job_timeout_seconds: float = 600.0
    # a busy worker with no sign of life from its backend (a step, an engine event) for this long is stuck:
    # killed and replaced. Fits a 1024² SDXL job on a slow GPU including a checkpoint load from disk.
    worker_stall_seconds: float = 180.0
    generator_health_bind: str = ""         # e.g. 0.0.0.0:8790: the replica's own health endpoint; "" = none
    # generator: the ComfyUI backend (GAZE_BACKEND=comfyui)
    comfyui_url: str = "http://127.0.0.1:8188"
    comfyui_workflow: str = ""              # "" = the bundled SDXL/Illustrious txt2img template
    comfyui_retry_seconds: float = 30.0     # how long to retry an unreachable ComfyUI before failing
    comfyui_poll_seconds: float = 1.0       # /history polling interval when the websocket is down
    # generator: the in-process diffusers backend (GAZE_BACKEND=diffusers; pip install -e '.[diffusers]')
    models_dir: str = "var/models"          # checkpoints; a spec's checkpoint is a path relative to it
    diffusers_config_dir: str = ""          # "" = <models_dir>/diffusers-configs: <repo id>/model_index.json, ...
    diffusers_device: str = ""              # "" = cuda when torch sees a GPU, else cpu
    diffusers_dtype: str = ""               # "" = float16 on cuda, float32 on cpu; or bfloat16, float32

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


def load(env=None) -> Settings:
    env = os.environ if env is None else env
    d = Settings()
    return _checked(Settings(
        amqp_uri=env.get("GAZE_AMQP_URI", d.amqp_uri),
        database_url=env.get("GAZE_DATABASE_URL", d.database_url),
        redis_url=env.get("GAZE_REDIS_URL", d.redis_url),
        redis_prefix=env.get("GAZE_REDIS_PREFIX", d.redis_prefix),
        media_root=str(Path(env.get("GAZE_MEDIA_ROOT", d.media_root)).resolve()),
        media_store=env.get("GAZE_MEDIA_STORE", d.media_store).strip().lower() or d.media_store,
        s3_endpoint_url=env.get("GAZE_S3_ENDPOINT_URL", d.s3_endpoint_url),
        s3_bucket=env.get("GAZE_S3_BUCKET", d.s3_bucket),
        s3_prefix=env.get("GAZE_S3_PREFIX", d.s3_prefix).strip("/"),
        s3_region=env.get("GAZE_S3_REGION", d.s3_region),
        s3_access_key_id=env.get("GAZE_S3_ACCESS_KEY_ID", d.s3_access_key_id),
        s3_secret_access_key=env.get("GAZE_S3_SECRET_ACCESS_KEY", d.s3_secret_access_key),
        bind=env.get("GAZE_BIND", d.bind),
        public_url=env.get("GAZE_PUBLIC_URL", d.public_url),
        log_format=env.get("GAZE_LOG_FORMAT", d.log_format).strip().lower() or d.log_format,
        gateway_workers=_int(env, "GAZE_GATEWAY_WORKERS", d.gateway_workers),
        gateway_threads=_int(env, "GAZE_GATEWAY_THREADS", d.gateway_threads),
        rpc_timeout=_float(env, "GAZE_RPC_TIMEOUT", d.rpc_timeout),
        max_body_bytes=_int(env, "GAZE_MAX_BODY_BYTES", d.max_body_bytes),
        metrics_token=env.get("GAZE_METRICS_TOKEN", d.metrics_token),
        rate_limit_submit=env.get("GAZE_RATE_LIMIT_SUBMIT", d.rate_limit_submit).strip(),
        rate_limit_read=env.get("GAZE_RATE_LIMIT_READ", d.rate_limit_read).strip(),
        rate_limit_auth_failures=env.get("GAZE_RATE_LIMIT_AUTH_FAILURES", d.rate_limit_auth_failures).strip(),
        rate_limit_login=env.get("GAZE_RATE_LIMIT_LOGIN", d.rate_limit_login).strip(),
        rate_limit_strategy=env.get("GAZE_RATE_LIMIT_STRATEGY", d.rate_limit_strategy).strip().lower()
                            or d.rate_limit_strategy,
        max_dimension=_int(env, "GAZE_MAX_DIMENSION", d.max_dimension),
        max_prompt_chars=_int(env, "GAZE_MAX_PROMPT_CHARS", d.max_prompt_chars),
        checkpoints=_list(env, "GAZE_CHECKPOINTS", DEFAULT_CHECKPOINTS),
        heartbeat=_int(env, "GAZE_HEARTBEAT", d.heartbeat),
        service_workers=_int(env, "GAZE_SERVICE_WORKERS", d.service_workers),
        db_pool_size=_int(env, "GAZE_DB_POOL_SIZE", d.db_pool_size),
        db_timeout=_float(env, "GAZE_DB_TIMEOUT", d.db_timeout),
        dispatch_sweep_seconds=_float(env, "GAZE_DISPATCH_SWEEP_SECONDS", d.dispatch_sweep_seconds),
        stuck_job_seconds=_float(env, "GAZE_STUCK_JOB_SECONDS", d.stuck_job_seconds),
        stuck_sweep_seconds=_float(env, "GAZE_STUCK_SWEEP_SECONDS", d.stuck_sweep_seconds),
        presets_publish_seconds=_float(env, "GAZE_PRESETS_PUBLISH_SECONDS", d.presets_publish_seconds),
        max_attempts=_int(env, "GAZE_MAX_ATTEMPTS", d.max_attempts),
        backend=env.get("GAZE_BACKEND", d.backend),
        replica_name=env.get("GAZE_REPLICA_NAME", d.replica_name),
        simulated_gpu_seconds=_float(env, "GAZE_SIMULATED_GPU_SECONDS", d.simulated_gpu_seconds),
        generator_prefetch=_int(env, "GAZE_GENERATOR_PREFETCH", d.generator_prefetch),
        status_interval_seconds=_float(env, "GAZE_STATUS_INTERVAL_SECONDS", d.status_interval_seconds),
        # GAZE_COMFYUI_TIMEOUT_SECONDS is the old name of this limit, when it was ComfyUI's only
        job_timeout_seconds=_float(env, "GAZE_JOB_TIMEOUT_SECONDS",
                                   _float(env, "GAZE_COMFYUI_TIMEOUT_SECONDS", d.job_timeout_seconds)),
        worker_stall_seconds=_float(env, "GAZE_WORKER_STALL_SECONDS", d.worker_stall_seconds),
        generator_health_bind=env.get("GAZE_GENERATOR_HEALTH_BIND", d.generator_health_bind).strip(),
        comfyui_url=env.get("GAZE_COMFYUI_URL", d.comfyui_url),
        comfyui_workflow=env.get("GAZE_COMFYUI_WORKFLOW", d.comfyui_workflow),
        comfyui_retry_seconds=_float(env, "GAZE_COMFYUI_RETRY_SECONDS", d.comfyui_retry_seconds),
        comfyui_poll_seconds=_float(env, "GAZE_COMFYUI_POLL_SECONDS", d.comfyui_poll_seconds),
        models_dir=str(Path(env.get("GAZE_MODELS_DIR", d.models_dir)).resolve()),
        diffusers_config_dir=(str(Path(env["GAZE_DIFFUSERS_CONFIG_DIR"]).resolve())
                              if env.get("GAZE_DIFFUSERS_CONFIG_DIR") else d.diffusers_config_dir),
        diffusers_device=env.get("GAZE_DIFFUSERS_DEVICE", d.diffusers_device),
        diffusers_dtype=env.get("GAZE_DIFFUSERS_DTYPE", d.diffusers_dtype),
    ))


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
