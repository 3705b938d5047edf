"""The ASGI entry point the gateway's gunicorn workers serve (services/gateway/hold/worker.py): the WSGI
app of wsgi.py for every request, the asyncio side (services/gateway/hold/) for held ones and streams."""
from services.gateway import wsgi
from services.gateway.hold.app import GatewayApp
from services.gateway.hold.changes import JobChanges
from services.gateway.stores.job_lookup import JobLookup

app = GatewayApp(wsgi.app, JobChanges(wsgi.settings.redis_url, wsgi.view.changes_channel, JobLookup(wsgi.rpc, wsgi.view)),
                 threads=wsgi.settings.gateway_threads)
