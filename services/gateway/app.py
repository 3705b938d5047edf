"""The gateway's Falcon app factory: gunicorn serves it (services.gateway.asgi:app wraps wsgi.py's), tests build their own."""
from __future__ import annotations

from pathlib import Path

import falcon

from shared.media import URL_PREFIX, open_media_store
from services.gateway import errors
from services.gateway.api.auth import ApiKeyAuth
from services.gateway.stores.job_lookup import JobLookup
from services.gateway.api.openapi import OpenApiResource
from services.gateway.ops.health import HealthResource, Readiness, ReadinessResource
from services.gateway.ops.metrics import GatewayMetrics, MetricsResource
from services.gateway.api.media import StoreMediaRoute
from services.gateway.stores.preset_lookup import PresetLookup
from services.gateway.api.resources import (GenerateResource, JobCancelResource, JobEventsResource, JobResource,
                                            JobsResource, KeyEventsResource, PresetsResource)
from services.gateway.web import client_wheel
from services.gateway.web import routes as web_routes
from services.gateway.web.render import ASSETS_PREFIX, error_page
from services.gateway.web.headers import NoFraming
from services.gateway.web.session import SessionAuth


def create_app(settings, rpc, keys, admin, probes, view=None, preset_view=None,
               idempotency=None, limiter=None) -> falcon.App:
    """`rpc` has .call(service, method, *args); `keys` is the ApiKeyStore, `admin` the AdminStore (web
    login and sessions); `probes` (probes.Probes) gives /readyz and /metrics their bounded-time views of
    the broker, the database and the work queue; `view` the job read model (shared.contracts.jobs.view.JobView; None
    = none, every poll asks the jobs service); `preset_view` the presets read model
    (shared.contracts.presets.view.PresetView; None = none, listing and resolving ask the presets service);
    `idempotency` the Idempotency-Key store (idempotency.IdempotencyStore; None = the header is
    validated but not honoured). All are
    injected so tests can run the real app against fakes or against the real broker and database.

    Build one app per process: its request metrics are per-process (multiprocess files under gunicorn)."""
    metrics = GatewayMetrics(probes, settings, static_prefixes=(URL_PREFIX, ASSETS_PREFIX))
    # metrics first: its process_response runs last, so it counts every request with its final status
    # `limiter` (rate_limit.RateLimiter; None = no rate limits): ApiKeyAuth asks it around each key check,
    # and as the last middleware it limits login attempts
    limiting = [limiter] if limiter is not None else []
    app = falcon.App(middleware=[metrics.http, NoFraming(), ApiKeyAuth(keys, limiter), SessionAuth(admin),
                                  *limiting])
    app.req_options.strip_url_path_trailing_slash = True
    errors.register(app, render_page=error_page)
    # operations endpoints: no API key, no session (see README "Observability")
    app.add_route("/healthz", HealthResource())
    app.add_route("/readyz", ReadinessResource(Readiness(probes, settings.status_interval_seconds),
                                                settings.metrics_token))
    app.add_route("/metrics", MetricsResource(metrics, settings.metrics_token))
    presets = PresetLookup(rpc, preset_view)
    app.add_route("/api/v1/openapi.json", OpenApiResource(settings))
    app.add_route("/api/v1/presets", PresetsResource(presets))
    jobs = JobLookup(rpc, view)
    app.add_route("/api/v1/generate/{slug}", GenerateResource(rpc, settings, presets, idempotency, jobs))
    app.add_route("/api/v1/job/{job_id}", JobResource(jobs))
    app.add_route("/api/v1/job/{job_id}/cancel", JobCancelResource(jobs))
    app.add_route("/api/v1/jobs", JobsResource(jobs))
    # the event streams open here and go on in the asyncio side (services/gateway/hold/app.py)
    app.add_route("/api/v1/job/{job_id}/events", JobEventsResource(jobs))
    app.add_route("/api/v1/events", KeyEventsResource())
    media_root = Path(settings.media_root)
    media_root.mkdir(parents=True, exist_ok=True)  # the local store, or (s3) the gateway's thumbnail cache
    media = open_media_store(settings, pool_size=settings.gateway_threads)
    if media.kind == "local":
        # Falcon's static route refuses "..", encoded separators and anything outside the directory.
        app.add_static_route(URL_PREFIX, str(media_root))
    else:
        StoreMediaRoute(media).mount(app)  # the same URLs, streamed from the object store
    web_routes.mount(app, settings, rpc, keys, admin, jobs, presets)
    client_wheel.mount(app, settings)   # GET /client: the Python client's wheel (public)
    return app
