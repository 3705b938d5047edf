"""The WSGI app each gateway worker builds (after the fork: preload is off); asgi.py serves it."""
from shared import config, logs
from shared.db import open_pool
from shared.contracts.jobs.view import JobView
from shared.contracts.presets.view import PresetView
from services.gateway.stores.admin import AdminStore
from services.gateway.stores.api_keys import ApiKeyStore
from services.gateway.app import create_app
from services.gateway.stores.idempotency import IdempotencyStore
from services.gateway.ops.probes import Probes
from services.gateway.stores.rate_limit import RateLimiter
from services.gateway.stores.rpc import RpcPool

settings = config.load()
logs.configure("gateway", settings)
_pool = open_pool(settings.database_url, max_size=settings.gateway_threads, name="gateway",
                  timeout=settings.db_timeout)
rpc = RpcPool(settings.amqp_uri, settings.rpc_timeout, size=settings.gateway_threads)
view = JobView(settings.redis_url, settings.redis_prefix)
app = create_app(
    settings,
    rpc=rpc,
    keys=ApiKeyStore(_pool, settings.redis_url, settings.redis_prefix),
    admin=AdminStore(_pool, settings.admin_idle_seconds),
    probes=Probes.from_settings(settings, _pool),
    view=view,
    preset_view=PresetView(settings.redis_url, settings.redis_prefix),
    idempotency=IdempotencyStore.from_settings(_pool, settings),
    limiter=RateLimiter.from_settings(settings),
)
