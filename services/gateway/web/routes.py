"""Every web UI route in one table."""
from __future__ import annotations

from services.gateway.web.auth import LoginResource, LogoutResource
from services.gateway.web.jobs_api import UiJobsResource
from services.gateway.web.library import LibraryResource
from services.gateway.web.render import ASSETS_PREFIX, STATIC


def mount(app, settings, rpc, keys, admin) -> None:
    app.add_route("/login", LoginResource(admin, settings))
    app.add_route("/logout", LogoutResource(admin, settings))
    app.add_route("/", LibraryResource(rpc))
    app.add_route("/ui/jobs", UiJobsResource(rpc))
    app.add_static_route(ASSETS_PREFIX, str(STATIC))
