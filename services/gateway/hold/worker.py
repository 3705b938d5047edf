"""The gateway's gunicorn worker class: uvicorn (an asyncio HTTP server) instead of gthread, so a request
that waits or streams costs a coroutine, not one of the worker's threads (see hold/__init__.py)."""
from uvicorn_worker import UvicornWorker

# A held request ends by itself within 60 s and a stream does not end by itself: on a stop, give open
# connections this long before they are cut (gunicorn's graceful_timeout is the outer bound).
GRACEFUL_SHUTDOWN_SECONDS = 5


class GatewayWorker(UvicornWorker):
    # uvicorn's own access lines would print the query string (?api_key=): hold/app.py writes the
    # gateway's access lines instead (services/gateway/access_log.py)
    # http: uvicorn's httptools protocol with the gateway's limits and JSON refusals (hold/framing.py)
    CONFIG_KWARGS = {"loop": "auto", "http": "services.gateway.hold.framing:GatewayHttpProtocol", "lifespan": "on",
                     "access_log": False, "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_SECONDS}
