"""The settings page's webhooks section through the real Falcon app with a logged-in admin (FakeAdmin), the
API keys in the session's real PostgreSQL and the webhooks service faked at its RPC contract: each active
key name's secret with a Rotate form (CSRF like the page's other forms), the deliveries with their
attempts, and the rest of the page when the webhooks service does not answer."""
from __future__ import annotations

import dataclasses
import html

import falcon
import pytest

from services.gateway.stores.api_keys import ApiKeyStore
from services.gateway.stores.rpc import ServiceUnavailable
from tests.fakes import COOKIES, CSRF, FakeRpc
from tests.helpers import admin_get, app_client

FORM = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "text/html"}
DELIVERY = {"id": "msg_abc", "job_id": "5b1b5c8e-0000-4000-8000-000000000001", "event": "completed",
            "key_name": "nightly", "url": "https://hooks.example.com/gaze", "status": "delivered", "attempts": 2,
            "created_at": 1_800_000_000.0, "finished_at": 1_800_000_002.0, "next_attempt_at": 1_800_000_002.0,
            "attempt_list": [{"number": 1, "at": 1_800_000_000.5, "status_code": 503, "error": "answered 503",
                              "duration_ms": 12},
                             {"number": 2, "at": 1_800_000_001.5, "status_code": 200, "error": None,
                              "duration_ms": 9}]}


class WebhooksRpc(FakeRpc):
    def __init__(self):
        super().__init__()
        self.rotations = {}

    def webhooks_secret(self, key_name):
        return {"key_name": key_name, "secret": f"whsec_{key_name}{self.rotations.get(key_name, 0)}",
                "created_at": 1_800_000_000.0, "previous_valid_until": None}

    def webhooks_rotate_secret(self, key_name):
        self.rotations[key_name] = self.rotations.get(key_name, 0) + 1
        return self.webhooks_secret(key_name)

    def webhooks_deliveries(self, key_name=None, limit=50):
        return [DELIVERY]


@pytest.fixture
def keys(pool, db):
    db.execute("TRUNCATE gateway.api_keys")
    store = ApiKeyStore(pool)
    store.create("nightly")
    store.regenerate("default")
    return store


@pytest.fixture
def rpc():
    return WebhooksRpc()


@pytest.fixture
def client(settings, tmp_path, keys, rpc):
    return app_client(dataclasses.replace(settings, media_root=str(tmp_path)), keys=keys, rpc=rpc)


def rotate(client, key_name, csrf=CSRF):
    body = f"key_name={falcon.uri.encode_value(key_name)}" + (f"&csrf_token={csrf}" if csrf is not None else "")
    return client.simulate_post("/settings/webhook-secrets/rotate", body=body, headers=FORM, cookies=COOKIES)


def test_each_keys_secret_and_the_deliveries_with_their_attempts_are_shown(client):
    page = admin_get(client, "/settings")
    assert page.status_code == 200
    assert "no-store" in page.headers["Cache-Control"]
    text = html.unescape(page.text)
    for name in ("default", "nightly"):
        assert f'value="whsec_{name}0"' in text and f'name="key_name" value="{name}"' in text
    assert text.count('action="/settings/webhook-secrets/rotate"') == 2
    assert 'data-delivery-id="msg_abc"' in text and "job.completed" in text and "hooks.example.com/gaze" in text
    assert "answered 503" in text and "(12 ms)" in text and "(9 ms)" in text


def test_rotate_makes_a_new_secret_with_the_csrf_token_only(client, rpc):
    assert rotate(client, "nightly", csrf="wrong").status_code == 403
    assert rotate(client, "nightly", csrf=None).status_code == 403
    assert rpc.called("webhooks", "rotate_secret") == []
    answer = rotate(client, "nightly")
    assert answer.status_code == 303 and answer.headers["Location"].endswith("/settings#webhooks")
    assert rpc.called("webhooks", "rotate_secret") == [("nightly",)]
    assert 'value="whsec_nightly1"' in admin_get(client, "/settings").text


def test_without_the_webhooks_service_the_rest_of_the_page_works(client, rpc):
    rpc.raises[("webhooks", "secret")] = ServiceUnavailable("service 'webhooks' is not running")
    page = admin_get(client, "/settings")
    assert page.status_code == 200
    assert "the webhooks service is not answering" in page.text and "whsec_" not in page.text
    assert "nightly" in page.text                          # the API keys are still listed
