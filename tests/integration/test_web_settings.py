"""The settings page (API keys, over the session's real PostgreSQL) through the real Falcon app with a
logged-in admin (FakeAdmin). (The queue page, over a fake RPC: tests/unit/test_web_queue.py.)"""
from __future__ import annotations

import dataclasses
import html
import re

import falcon
import pytest

from services.gateway.stores.api_keys import KEY_PREFIX, LOOKUP_CHARS, ApiKeyStore, InvalidKeyName
from tests.fakes import COOKIES, CSRF
from tests.helpers import admin_get, app_client

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
HTML = {"Accept": "text/html"}
KEY_RE = re.compile(r"gz_[A-Za-z0-9_-]{40,}")


@pytest.fixture
def keys(pool, db):
    db.execute("TRUNCATE gateway.api_keys")
    return ApiKeyStore(pool)


@pytest.fixture
def client(settings, tmp_path, keys):
    app_settings = dataclasses.replace(settings, media_root=str(tmp_path), public_url="https://gaze.example.org/")
    return app_client(app_settings, keys=keys)


def post(client, path, form=None, csrf=CSRF):
    fields = dict(form or {})
    if csrf is not None:
        fields["csrf_token"] = csrf
    body = "&".join(f"{k}={falcon.uri.encode_value(v)}" for k, v in fields.items())
    return client.simulate_post(path, body=body, headers={**FORM, **HTML}, cookies=COOKIES)


def shown_keys(text):
    return KEY_RE.findall(text)


# --------------------------------------------------------------------------------------------------
# Login and CSRF
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/settings/api-keys/regenerate", "/settings/api-keys", "/settings/api-keys/1/revoke"])
def test_posts_need_a_login(client, keys, path):
    result = client.simulate_post(path, body=f"csrf_token={CSRF}&name=x", headers=FORM)
    assert result.status_code == 401
    assert keys.list() == []


@pytest.mark.parametrize("csrf", [None, "", "wrong"])
def test_regenerate_needs_the_csrf_token(client, keys, csrf):
    old = keys.ensure()
    result = post(client, "/settings/api-keys/regenerate", csrf=csrf)
    assert result.status_code == 403
    assert not shown_keys(result.text)
    assert keys.verify(old)
    assert len(keys.list()) == 1


def test_create_and_revoke_need_the_csrf_token(client, keys):
    key = keys.create("ci")
    key_id = keys.list()[0]["id"]
    assert post(client, "/settings/api-keys", {"name": "other"}, csrf="nope").status_code == 403
    assert post(client, f"/settings/api-keys/{key_id}/revoke", csrf=None).status_code == 403
    assert keys.verify(key)
    assert [k["name"] for k in keys.list()] == ["ci"]


# --------------------------------------------------------------------------------------------------
# The settings page and regeneration
# --------------------------------------------------------------------------------------------------

def test_settings_page_has_the_api_key_section(client, keys):
    keys.ensure()
    result = admin_get(client, "/settings")
    assert result.status_code == 200
    assert result.headers["content-type"].startswith("text/html")
    assert re.search(r"<h2[^>]*>REST API Key</h2>", result.text)
    assert 'action="/settings/api-keys/regenerate"' in result.text
    assert re.search(r"<button[^>]*>Regenerate</button>", result.text)
    assert f'name="csrf_token" value="{CSRF}"' in result.text
    # the usage snippet is addressed to the public URL
    assert 'HOST="https://gaze.example.org"' in result.text
    assert "X-API-Key: $API_KEY" in result.text
    assert 'href="/settings/api-guide"' in result.text


def test_regenerate_shows_the_new_key_once_and_the_old_one_stops_working(client, keys):
    old = keys.ensure()
    result = post(client, "/settings/api-keys/regenerate")
    assert result.status_code == 200  # rendered directly, not a redirect to a page showing it again
    assert "location" not in result.headers
    assert "no-store" in result.headers["cache-control"]
    found = set(shown_keys(result.text))
    assert len(found) == 1
    new = found.pop()
    assert new != old
    assert not keys.verify(old)
    assert keys.verify(new)
    # in a read-only input, with a copy button pointing at it
    field = re.search(r'<input id="new-api-key"[^>]*>', result.text, re.S).group(0)
    assert f'value="{new}"' in field and "readonly" in field
    assert 'data-copy="#new-api-key"' in result.text
    assert "previous key stopped working" in result.text
    # a later visit to the page does not show it again
    again = admin_get(client, "/settings")
    assert new not in again.text
    assert not shown_keys(again.text)
    assert new[:LOOKUP_CHARS] in again.text


def test_regenerate_with_no_key_yet(client, keys):
    result = post(client, "/settings/api-keys/regenerate")
    assert result.status_code == 200
    (new,) = set(shown_keys(result.text))
    assert keys.verify(new)
    assert "previous key stopped working" not in result.text


def test_regenerate_leaves_other_named_keys_alone(client, keys):
    ci = keys.create("ci")
    result = post(client, "/settings/api-keys/regenerate")
    (new,) = set(shown_keys(result.text))
    assert keys.verify(ci) and keys.verify(new)


def test_list_shows_prefixes_never_secrets(client, keys):
    default = keys.regenerate()
    ci = keys.create("ci runner")
    old = keys.create("old")
    keys.revoke(next(k["id"] for k in keys.list() if k["name"] == "old"))
    text = admin_get(client, "/settings").text
    for key in (default, ci, old):
        assert key not in text
        assert key[LOOKUP_CHARS:] not in text
        assert key[LOOKUP_CHARS:LOOKUP_CHARS + 12] not in text
        assert html.escape(key[:LOOKUP_CHARS]) + "&hellip;" in text or key[:LOOKUP_CHARS] + "…" in text
    assert not shown_keys(text)
    assert "ci runner" in text and "default" in text
    assert text.count('class="key-state active"') == 2
    assert text.count('class="key-state revoked"') == 1
    # only active keys can be revoked, and the form asks first
    assert text.count('/revoke"') == 2
    assert re.search(r'<form[^>]*action="/settings/api-keys/\d+/revoke"[^>]*data-confirm=', text, re.S)


def test_page_says_when_no_key_is_active(client, keys):
    text = admin_get(client, "/settings").text
    assert "No active key" in text


# --------------------------------------------------------------------------------------------------
# Named keys
# --------------------------------------------------------------------------------------------------

def test_create_a_named_key(client, keys):
    default = keys.ensure()
    result = post(client, "/settings/api-keys", {"name": "  nightly batch  "})
    assert result.status_code == 200
    assert "location" not in result.headers
    assert "no-store" in result.headers["cache-control"]
    (new,) = set(shown_keys(result.text))
    assert keys.verify(new) and keys.verify(default)
    assert 'data-copy="#new-api-key"' in result.text
    assert "nightly batch" in result.text
    names = {k["name"]: k for k in keys.list()}
    assert set(names) == {"default", "nightly batch"}
    assert names["nightly batch"]["prefix"] == new[:LOOKUP_CHARS]
    assert new not in admin_get(client, "/settings").text


def test_a_64_character_name_is_fine(client, keys):
    result = post(client, "/settings/api-keys", {"name": "n" * 64})
    assert result.status_code == 200
    assert [k["name"] for k in keys.list()] == ["n" * 64]


@pytest.mark.parametrize("name,message", [
    ("", "Give the key a name"),
    ("    ", "Give the key a name"),
    ("n" * 65, "At most 64 characters"),
    ("line\nbreak", "No control characters"),
])
def test_a_bad_name_is_400_with_the_error_next_to_the_field(client, keys, name, message):
    result = post(client, "/settings/api-keys", {"name": name})
    assert result.status_code == 400
    assert result.headers["content-type"].startswith("text/html")
    assert not shown_keys(result.text)
    field = re.search(r'<input id="key-name"[^>]*>', result.text, re.S).group(0)
    assert 'aria-invalid="true"' in field
    error = re.search(r'<p class="field-error" id="key-name-error"[^>]*>([^<]*)</p>', result.text)
    assert error and message in html.unescape(error.group(1))
    assert keys.list() == []


def test_a_missing_name_field_is_400(client, keys):
    result = post(client, "/settings/api-keys", {})
    assert result.status_code == 400
    assert keys.list() == []


def test_a_name_in_use_is_refused_and_kept_in_the_field(client, keys):
    first = keys.create("ci")
    result = post(client, "/settings/api-keys", {"name": " ci "})
    assert result.status_code == 400
    assert "already named" in html.unescape(result.text)
    assert re.search(r'<input id="key-name"[^>]*value=" ci "', result.text, re.S)
    assert keys.verify(first)
    assert len(keys.list()) == 1


def test_names_are_escaped(client, keys):
    result = post(client, "/settings/api-keys", {"name": "<script>alert(1)</script>"})
    assert result.status_code == 200
    assert "<script>alert(1)</script>" not in result.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in result.text


# --------------------------------------------------------------------------------------------------
# Revoking
# --------------------------------------------------------------------------------------------------

def test_revoke_a_key(client, keys):
    default = keys.ensure()
    ci = keys.create("ci")
    ci_id = next(k["id"] for k in keys.list() if k["name"] == "ci")
    result = post(client, f"/settings/api-keys/{ci_id}/revoke")
    assert result.status_code == 303
    assert result.headers["location"].startswith(f"/settings?revoked={ci_id}")
    assert not keys.verify(ci)
    assert keys.verify(default)
    page = admin_get(client, f"/settings?revoked={ci_id}").text
    assert "was revoked" in page and "ci" in page
    # revoking again is harmless; an unknown key is 404
    assert post(client, f"/settings/api-keys/{ci_id}/revoke").status_code == 303
    assert post(client, "/settings/api-keys/999999/revoke").status_code == 404
    assert post(client, f"/settings/api-keys/{2**70}/revoke").status_code == 404
    assert keys.verify(default)


def test_the_revoked_notice_reflects_no_text(client, keys):
    page = admin_get(client, "/settings?revoked=<b>hi</b>")
    assert page.status_code == 200
    assert "was revoked" not in page.text and "<b>hi</b>" not in page.text


# --------------------------------------------------------------------------------------------------
# ApiKeyStore's list/create/revoke
# --------------------------------------------------------------------------------------------------

def test_store_list_create_revoke(keys):
    assert keys.list() == []
    a = keys.create(" alpha ")
    b = keys.create("beta")
    rows = keys.list()
    assert [r["name"] for r in rows] == ["beta", "alpha"]  # newest first
    assert set(rows[0]) == {"id", "name", "prefix", "created_at", "revoked_at"}
    assert rows[1]["prefix"] == a[:LOOKUP_CHARS] and a.startswith(KEY_PREFIX)
    assert keys.revoke(rows[1]["id"]) == "alpha"
    assert not keys.verify(a) and keys.verify(b)
    rows = keys.list()
    assert [(r["name"], r["revoked_at"] is None) for r in rows] == [("beta", True), ("alpha", False)]
    first_revocation = rows[1]["revoked_at"]
    assert keys.revoke(rows[1]["id"]) == "alpha"
    assert keys.list()[1]["revoked_at"] == first_revocation
    assert keys.revoke(0) is None and keys.revoke(10**9) is None and keys.revoke(2**64) is None
    # a revoked name can be used again
    again = keys.create("alpha")
    assert keys.verify(again)


@pytest.mark.parametrize("bad", ["", " ", "x" * 65, None, 5, "a\tb"])
def test_store_create_refuses_bad_names(keys, bad):
    with pytest.raises(InvalidKeyName):
        keys.create(bad)
    assert keys.list() == []


def test_queue_js_is_served_and_only_on_the_queue_page(client, keys):
    script = client.simulate_get("/assets/queue.js")
    assert script.status_code == 200
    assert "recent" in script.text and "fetchJobs" in script.text
    assert "/assets/queue.js" not in admin_get(client, "/settings").text
