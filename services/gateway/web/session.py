"""Admin-session authentication and CSRF protection for the UI's resources.

A resource opts in with `login_required = True`. Without a live session a page request is redirected
to /login; a JSON request (resource has `json_api = True`) gets 401. Every POST must carry the
session's CSRF token as the form field `csrf_token` (or the X-CSRF-Token header for fetch calls).
"""
from __future__ import annotations

import hmac
from datetime import datetime, timezone
from urllib.parse import quote

import falcon

from services.gateway.errors import ApiError
from services.gateway.web.render import MAX_FORM_BYTES, form_values

COOKIE = "gaze_session"


def secure_cookies(req, settings) -> bool:
    """Whether this request's cookies are marked Secure (sent back over https only): when it came over
    https, when the public URL is https, or, with GAZE_TRUST_PROXY_HEADERS on, when the proxy in front
    says it did (X-Forwarded-Proto or Forwarded proto=https). Without that setting a client could send
    the header itself, so it is not read."""
    if req.scheme == "https" or settings.public_url.startswith("https://"):
        return True
    return settings.trust_proxy_headers and req.forwarded_scheme == "https"


def set_session_cookie(req, resp, token: str, settings, max_age: int) -> None:
    resp.set_cookie(COOKIE, token, max_age=max_age, path="/", http_only=True, same_site="Lax",
                    secure=secure_cookies(req, settings))


def clear_session_cookie(req, resp, settings) -> None:
    # set_cookie, not unset_cookie: Falcon 4.4's unset_cookie takes no `secure`, and the expired cookie
    # must carry the same attributes as the one it replaces
    resp.set_cookie(COOKIE, "", expires=datetime(1970, 1, 1, tzinfo=timezone.utc), path="/",
                    secure=secure_cookies(req, settings), http_only=True, same_site="Lax")


def csrf_ok(expected: str, given) -> bool:
    # bytes: compare_digest refuses str with characters outside ASCII (a TypeError, so a 500)
    return (isinstance(given, str) and bool(given)
            and hmac.compare_digest(expected.encode(), given.encode("utf-8", "surrogatepass")))


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
            # the form is read here, with this resource's limit; the responder gets the same parsed form
            form = form_values(req, getattr(resource, "max_form_bytes", MAX_FORM_BYTES))
            given = req.get_header("X-CSRF-Token") or form.get("csrf_token")
            if not csrf_ok(session["csrf_token"], given):
                raise ApiError(falcon.HTTP_403, "csrf_token: missing or wrong; reload the page and try again",
                               "csrf_token")
