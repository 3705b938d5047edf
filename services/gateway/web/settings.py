"""The settings page: the REST API keys (regenerate the default one, add named ones, revoke) and how to
use the API.

A freshly minted key is shown exactly once, in the answer to the POST that made it: that page is
rendered directly (no redirect to a page that could show it again) and marked `no-store`. Only a
key's non-secret prefix is ever listed.
"""
from __future__ import annotations

from datetime import timezone
from pathlib import Path

import falcon

from services.gateway.stores.api_keys import InvalidKeyName
from services.gateway.errors import ApiError
from services.gateway.web.render import form_values, redirect, render

DEFAULT_KEY = "default"
GUIDE = Path(__file__).resolve().parents[3] / "docs" / "gaze-rest-api-guide.md"


def when(moment) -> str:
    """A database timestamp for people: UTC, to the minute."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if moment else ""


class _SettingsPage:
    login_required = True

    def __init__(self, keys, settings):
        self.keys = keys
        self.settings = settings

    def page(self, req, resp, status=falcon.HTTP_200, **context):
        keys = self.keys.list()
        render(req, resp, "settings.html", status=status,
               active_keys=[k for k in keys if k["revoked_at"] is None],
               revoked_keys=[k for k in keys if k["revoked_at"] is not None],
               public_url=self.settings.public_url.rstrip("/"), guide_available=GUIDE.is_file(),
               default_key=DEFAULT_KEY, when=when, **context)

    def show_new_key(self, req, resp, key, name, replaced):
        resp.cache_control = ["no-store"]
        resp.set_header("Pragma", "no-cache")
        resp.set_header("Referrer-Policy", "no-referrer")
        self.page(req, resp, new_key=key, new_key_name=name, replaced=replaced)


class SettingsResource(_SettingsPage):
    def on_get(self, req, resp):
        # After a revocation: ?revoked=<id> names the key in the notice (an id, so no text is reflected).
        raw = req.get_param("revoked") or ""
        self.page(req, resp, just_revoked=int(raw) if raw.isdigit() and len(raw) < 20 else None)


class RegenerateKeyResource(_SettingsPage):
    def on_post(self, req, resp):
        replaced = any(k["name"] == DEFAULT_KEY and k["revoked_at"] is None for k in self.keys.list())
        key = self.keys.regenerate(DEFAULT_KEY)
        self.show_new_key(req, resp, key, DEFAULT_KEY, replaced)


class ApiKeysResource(_SettingsPage):
    def on_post(self, req, resp):
        name = form_values(req).get("name", "")
        try:
            key = self.keys.create(name)
        except InvalidKeyName as exc:
            return self.page(req, resp, status=falcon.HTTP_400, name_error=str(exc),
                             name_value=name if isinstance(name, str) else "")
        self.show_new_key(req, resp, key, name.strip(), replaced=False)


class RevokeKeyResource:
    login_required = True

    def __init__(self, keys):
        self.keys = keys

    def on_post(self, req, resp, key_id):
        if self.keys.revoke(key_id) is None:
            raise ApiError(falcon.HTTP_404, "no such API key")
        # Nothing secret on the page that follows, so the usual redirect-after-POST applies.
        redirect(resp, f"/settings?revoked={key_id}#api-keys")


class ApiGuideResource:
    """The REST API guide as plain text (Markdown), for the settings page's link."""
    login_required = True

    def on_get(self, req, resp):
        if not GUIDE.is_file():
            raise ApiError(falcon.HTTP_404, "the API guide is not installed here")
        resp.content_type = "text/plain; charset=utf-8"
        resp.text = GUIDE.read_text(encoding="utf-8")
