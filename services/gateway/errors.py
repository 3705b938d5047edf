"""Every error the gateway can return, mapped in one place to a status and a JSON body:
{"error": "<what went wrong>", "field": "<which field>" (when one is to blame)}.

No "status" key: the guide's polling loops read `status` from every answer they get, and an error
must not look like a job state."""
from __future__ import annotations

import json
import logging

import falcon
import psycopg
import redis
from nameko.exceptions import RemoteError, RpcTimeout

from shared.errors import Conflict, InvalidField, NotFound
from shared.media import MediaStoreError
from services.gateway.stores.idempotency import KeyReused, StillInProgress
from services.gateway.stores.rate_limit import RateLimited
from services.gateway.outages import RETRY_AFTER_SECONDS, outage_message
from services.gateway.stores.rpc import ServiceUnavailable

log = logging.getLogger(__name__)


class ApiError(falcon.HTTPError):
    def __init__(self, status, message, field=None, headers=None):
        super().__init__(status, title=message, description=message, headers=headers)
        self.field = field


JSON_PREFIXES = ("/api/", "/static/", "/thumbs/", "/ui/", "/healthz", "/readyz", "/metrics")


def _wants_html(req):
    """A person in a browser on a UI page gets an HTML error page; API clients always get JSON."""
    return not req.path.startswith(JSON_PREFIXES) and "text/html" in (req.accept or "")


def serializer(render_page=None):
    """The error serializer: JSON, or for a person in a browser `render_page(req, resp, exc, message)` (the
    web UI's error page, passed in by the app factory so this table does not import the UI)."""
    def serialize(req, resp, exc):
        message = exc.description or exc.title
        if render_page is not None and _wants_html(req):
            render_page(req, resp, exc, message)
            return
        body = {"error": message}
        if getattr(exc, "field", None):
            body["field"] = exc.field
        resp.content_type = falcon.MEDIA_JSON
        resp.text = json.dumps(body)
    return serialize


def _raise(status, message_of, field_of=lambda exc: None, headers=None):
    def handler(req, resp, exc, params):
        raise ApiError(status, message_of(exc), field_of(exc), headers=headers)
    return handler


def _unexpected(req, resp, exc, params):
    log.exception("unhandled error on %s %s", req.method, req.path)
    raise ApiError(falcon.HTTP_500, "internal error; the gateway log has the details")


def _media_unavailable(req, resp, exc, params):
    log.warning("media store: %s", exc)
    raise ApiError(falcon.HTTP_503, "the media store is not reachable; try again shortly",
                   headers={"Retry-After": RETRY_AFTER_SECONDS})


def _service_unavailable(req, resp, exc, params):
    """The broker, a service or the database is down: the body is the exception's fixed public sentence,
    its cause (hosts, exception text) only in the log."""
    log.warning("503 on %s %s: %s", req.method, req.path, getattr(exc, "detail", exc))
    raise ApiError(falcon.HTTP_503, getattr(exc, "public", None) or "a service is unavailable; try again shortly",
                   headers={"Retry-After": RETRY_AFTER_SECONDS})


def _rate_limited(req, resp, exc, params):
    raise ApiError(falcon.HTTP_429, str(exc), headers={"Retry-After": str(exc.retry_after)})


def _outage(req, resp, exc, params):
    """A dependency outage (database, broker, Redis; here or in a service behind an RPC) is a 503 with
    Retry-After and no details; anything else of the same type is still an unexpected 500."""
    message = outage_message(exc)
    if message is None:
        return _unexpected(req, resp, exc, params)
    raise ApiError(falcon.HTTP_503, message, headers={"Retry-After": RETRY_AFTER_SECONDS})


HANDLERS = [
    (Exception, _unexpected),
    (NotFound, _raise(falcon.HTTP_404, str)),
    (InvalidField, _raise(falcon.HTTP_400, str, lambda e: e.field)),
    (Conflict, _raise(falcon.HTTP_409, str, lambda e: e.field)),
    (RpcTimeout, _raise(falcon.HTTP_504, lambda e: "a backend service did not answer in time")),
    (ServiceUnavailable, _service_unavailable),
    (psycopg.OperationalError, _outage),   # PoolTimeout included: the gateway's own Postgres (API keys, admin)
    (redis.exceptions.ConnectionError, _outage),
    (redis.exceptions.TimeoutError, _outage),
    (RemoteError, _outage),                # a service's own Postgres outage, named by its exc_type
    (MediaStoreError, _media_unavailable),   # the S3 store behind images and thumbnails
    (RateLimited, _rate_limited),   # 429, Retry-After: seconds until the window resets
    (KeyReused, _raise(falcon.HTTP_422, str, lambda e: "Idempotency-Key")),
    (StillInProgress, _raise(falcon.HTTP_409, str, lambda e: "Idempotency-Key", headers={"Retry-After": "1"})),
]


def register(app: falcon.App, render_page=None) -> None:
    app.set_error_serializer(serializer(render_page))
    for exc_type, handler in HANDLERS:
        app.add_error_handler(exc_type, handler)
