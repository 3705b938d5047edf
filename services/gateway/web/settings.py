"""The settings page: the REST API keys (regenerate the default one, add named ones, revoke), each key's
webhook signing secret (rotate it) with the latest webhook deliveries, and how to use the API.

A freshly minted key is shown exactly once, in the answer to the POST that made it: that page is
rendered directly (no redirect to a page that could show it again) and marked `no-store`. Only a
key's non-secret prefix is ever listed. The webhook secrets are the webhooks service's (asked over RPC);
they are shown in full, as a receiver needs them, so the page is never stored by a cache. Without the
webhooks service the rest of the page still works.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path

import falcon
from nameko.exceptions import RpcTimeout

from services.gateway.stores.api_keys import InvalidKeyName
from services.gateway.stores.rpc import ServiceUnavailable
from services.gateway.errors import ApiError
from shared.contracts.webhooks import WebhooksClient
from shared.errors import InvalidField
from services.gateway.web.client_wheel import wheel_name
from services.gateway.web.render import form_values, redirect, render

log = logging.getLogger(__name__)

DEFAULT_KEY = "default"
DELIVERIES_SHOWN = 50
GUIDE = Path(__file__).resolve().parents[3] / "docs" / "gaze-rest-api-guide.md"


def when(moment) -> str:
    """A database timestamp for people: UTC, to the minute."""
    if isinstance(moment, (int, float)):
        moment = datetime.fromtimestamp(moment, timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if moment else ""


def webhooks_view(webhooks: WebhooksClient, key_names) -> dict:
    """Each key name's webhook secret and the latest deliveries, or `webhooks_error` when the webhooks
    service cannot answer now."""
    try:
        return {"webhook_secrets": [webhooks.secret(name) for name in key_names],
                "deliveries": webhooks.deliveries(None, DELIVERIES_SHOWN), "webhooks_error": None}
    except (ServiceUnavailable, RpcTimeout) as exc:
        log.warning("settings page without webhooks: %s", exc)
        return {"webhook_secrets": [], "deliveries": [], "webhooks_error": "the webhooks service is not answering"}


class _SettingsPage:
    login_required = True

    def __init__(self, keys, settings, rpc):
        self.keys = keys
        self.settings = settings
        self.webhooks = WebhooksClient(rpc)

    def page(self, req, resp, status=falcon.HTTP_200, **context):
        keys = self.keys.list()
        active = [k for k in keys if k["revoked_at"] is None]
        resp.cache_control = ["no-store"]   # the webhook secrets
        render(req, resp, "settings.html", status=status,
               **webhooks_view(self.webhooks, sorted({k["name"] for k in active})),
               active_keys=active,
               revoked_keys=[k for k in keys if k["revoked_at"] is not None],
               public_url=self.settings.public_url.rstrip("/"), guide_available=GUIDE.is_file(),
               default_key=DEFAULT_KEY, when=when, client_wheel=wheel_name(), **context)

    def show_new_key(self, req, resp, key, name, replaced):
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


class RotateWebhookSecretResource:
    """POST /settings/webhook-secrets/rotate (form field `key_name`): a new secret; the old one keeps
    signing beside it for 24 h, so receivers can switch without losing a delivery."""
    login_required = True

    def __init__(self, rpc):
        self.webhooks = WebhooksClient(rpc)

    def on_post(self, req, resp):
        name = form_values(req).get("key_name", "")
        try:
            self.webhooks.rotate_secret(name if isinstance(name, str) else "")
        except InvalidField as exc:
            raise ApiError(falcon.HTTP_400, str(exc), "key_name") from None
        redirect(resp, "/settings#webhooks")


class ApiGuideResource:
    """The REST API guide as plain text (Markdown), for the settings page's link."""
    login_required = True

    def on_get(self, req, resp):
        if not GUIDE.is_file():
            raise ApiError(falcon.HTTP_404, "the API guide is not installed here")
        resp.content_type = "text/plain; charset=utf-8"
        resp.text = GUIDE.read_text(encoding="utf-8")
