"""The ASGI entry point the gateway's gunicorn workers serve (services/gateway/hold/worker.py): the WSGI
app of wsgi.py for every request, the asyncio side (services/gateway/hold/) for held ones and streams."""
from services.gateway import wsgi
from services.gateway.hold.app import GatewayApp
from services.gateway.hold.changes import JobChanges
from services.gateway.stores.job_lookup import JobLookup
from services.gateway.web.presets import MAX_IMPORT_BYTES
from services.gateway.web.render import MAX_FORM_BYTES


def body_limit(path: str) -> int:
    """The largest body a route under `path` reads (the API's GAZE_MAX_BODY_BYTES, the web UI's forms and
    import): the asyncio side reads no more of a body before the app sees it (hold/framing.py)."""
    return wsgi.settings.max_body_bytes if path.startswith("/api/") else max(MAX_FORM_BYTES, MAX_IMPORT_BYTES)


app = GatewayApp(wsgi.app, JobChanges(wsgi.settings.redis_url, wsgi.view.changes_channel, JobLookup(wsgi.rpc, wsgi.view)),
                 threads=wsgi.settings.gateway_threads, max_body=body_limit)
