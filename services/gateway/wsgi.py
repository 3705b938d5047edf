"""The WSGI entry point gunicorn loads in each worker (after the fork: preload is off)."""
import logging

from shared import config
from shared.db import open_pool
from shared.job_view import JobView
from services.gateway.admin import AdminStore
from services.gateway.api_keys import ApiKeyStore
from services.gateway.app import create_app
from services.gateway.probes import Probes
from services.gateway.rpc import RpcPool

logging.basicConfig(level=logging.INFO, format="%(asctime)s gateway[%(process)d] %(levelname)s %(name)s: %(message)s")

settings = config.load()
_pool = open_pool(settings.database_url, max_size=settings.gateway_threads, name="gateway")
app = create_app(
    settings,
    rpc=RpcPool(settings.amqp_uri, settings.rpc_timeout, size=settings.gateway_threads),
    keys=ApiKeyStore(_pool),
    admin=AdminStore(_pool),
    probes=Probes.from_settings(settings, _pool),
    view=JobView(settings.redis_url, settings.redis_prefix),
)
