"""The gateway's Falcon app factory: gunicorn serves `services.gateway.wsgi:app`, tests build their own."""
from __future__ import annotations

from pathlib import Path

import falcon

from shared.media import URL_PREFIX
from services.gateway import errors
from services.gateway.auth import ApiKeyAuth
from services.gateway.resources import GenerateResource, JobResource, PresetsResource
from services.gateway.web import routes as web_routes
from services.gateway.web.session import SessionAuth


def create_app(settings, rpc, keys, admin) -> falcon.App:
    """`rpc` has .call(service, method, *args); `keys` is the ApiKeyStore, `admin` the AdminStore (web
    login and sessions). All are injected so tests can run the real app against fakes or against the
    real broker and database."""
    app = falcon.App(middleware=[ApiKeyAuth(keys), SessionAuth(admin)])
    app.req_options.strip_url_path_trailing_slash = True
    errors.register(app)
    app.add_route("/api/v1/presets", PresetsResource(rpc))
    app.add_route("/api/v1/generate/{slug}", GenerateResource(rpc, settings))
    app.add_route("/api/v1/job/{job_id}", JobResource(rpc))
    media_root = Path(settings.media_root)
    media_root.mkdir(parents=True, exist_ok=True)
    # Falcon's static route refuses "..", encoded separators and anything outside the directory.
    app.add_static_route(URL_PREFIX, str(media_root))
    web_routes.mount(app, settings, rpc, keys, admin)
    return app
