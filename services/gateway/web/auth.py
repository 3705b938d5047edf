"""Log in and out of the web UI."""
from __future__ import annotations

import secrets
from urllib.parse import urlsplit

import falcon

from services.gateway.stores.admin import SESSION_DAYS
from services.gateway.web.render import form_values, redirect, render
from services.gateway.web.session import (COOKIE, clear_session_cookie, csrf_ok, secure_cookies,
                                          set_session_cookie)

# Before there is a session, the login form is protected by a double-submit token: a random value
# in a SameSite cookie that the form must echo.
LOGIN_COOKIE = "gaze_login_csrf"


def _safe_next(target) -> str:
    """`target` when it is a path on this site, else "/". Browsers drop tabs and newlines from a URL and
    read a backslash as a slash, so "/\t/evil.example" or "/\\evil.example" would leave the site: any
    control character, space or backslash refuses it, as does anything with a scheme or a host."""
    if (isinstance(target, str) and target.startswith("/") and not target.startswith("//")
            and not any(ch <= " " or ch == "\x7f" or ch == "\\" for ch in target)):
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc:
            return target
    return "/"


class LoginResource:
    def __init__(self, admin, settings):
        self.admin = admin
        self.settings = settings

    def _form(self, req, resp, next_url, error=None, status=falcon.HTTP_200):
        token = secrets.token_urlsafe(24)
        resp.set_cookie(LOGIN_COOKIE, token, max_age=3600, path="/login", http_only=True, same_site="Strict",
                        secure=secure_cookies(req, self.settings))
        render(req, resp, "login.html", status=status, login_token=token, error=error,
               next=_safe_next(next_url))

    def on_get(self, req, resp):
        if self.admin.session(req.cookies.get(COOKIE)):
            raise falcon.HTTPSeeOther(_safe_next(req.get_param("next")))
        self._form(req, resp, req.get_param("next"))

    def on_post(self, req, resp):
        form = form_values(req)
        if not csrf_ok(req.cookies.get(LOGIN_COOKIE) or "", form.get("login_token")):
            return self._form(req, resp, form.get("next"), "The form expired; please try again.", falcon.HTTP_403)
        if not self.admin.verify_password(form.get("password", "")):
            return self._form(req, resp, form.get("next"), "Wrong password.", falcon.HTTP_401)
        set_session_cookie(req, resp, self.admin.open_session(), self.settings, max_age=SESSION_DAYS * 86400)
        resp.unset_cookie(LOGIN_COOKIE, path="/login")
        redirect(resp, _safe_next(form.get("next")))


class LogoutResource:
    login_required = True

    def __init__(self, admin, settings):
        self.admin = admin
        self.settings = settings

    def on_post(self, req, resp):
        self.admin.close_session(req.cookies.get(COOKIE))
        clear_session_cookie(req, resp, self.settings)
        redirect(resp, "/login")
