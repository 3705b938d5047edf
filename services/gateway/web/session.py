"""Admin-session authentication and CSRF protection for the UI's resources.

A resource opts in with `login_required = True`. Without a live session a page request is redirected
to /login; a JSON request (resource has `json_api = True`) gets 401. Every POST must carry the
session's CSRF token as the form field `csrf_token` (or the X-CSRF-Token header for fetch calls).
"""
from __future__ import annotations

import hmac
from urllib.parse import quote

import falcon

from services.gateway.errors import ApiError
from services.gateway.web.render import form_values

COOKIE = "gaze_session"
# The largest form a UI page may post; a resource can set its own `max_form_bytes`.
MAX_FORM_BYTES = 1024 * 1024


def set_session_cookie(resp, token: str, settings, max_age: int) -> None:
    resp.set_cookie(COOKIE, token, max_age=max_age, path="/", http_only=True, same_site="Lax",
                    secure=settings.public_url.startswith("https://"))


def clear_session_cookie(resp, settings) -> None:
    resp.unset_cookie(COOKIE, path="/", same_site="Lax", secure=settings.public_url.startswith("https://"))


def csrf_ok(expected: str, given) -> bool:
    return isinstance(given, str) and bool(given) and hmac.compare_digest(expected, given)


class SessionAuth:
    def __init__(self, admin):
        self.admin = admin

    def process_resource(self, req, resp, resource, params):
        if not getattr(resource, "login_required", False):
            return
        session = self.admin.session(req.cookies.get(COOKIE))
        if session is None:
            if req.method == "GET" and not getattr(resource, "json_api", False):
                raise falcon.HTTPSeeOther(f"/login?next={quote(req.relative_uri, safe='')}")
            raise ApiError(falcon.HTTP_401, "log in to the web UI first")
        req.context.session = session
        if req.method not in ("GET", "HEAD", "OPTIONS"):
            # The CSRF check below parses the form, so the size limit has to come first.
            limit = getattr(resource, "max_form_bytes", MAX_FORM_BYTES)
            if req.content_length is not None and req.content_length > limit:
                raise ApiError(falcon.HTTP_413, f"body larger than {limit} bytes", "body")
            given = req.get_header("X-CSRF-Token") or form_values(req).get("csrf_token")
            if not csrf_ok(session["csrf_token"], given):
                raise ApiError(falcon.HTTP_403, "csrf_token: missing or wrong; reload the page and try again",
                               "csrf_token")
