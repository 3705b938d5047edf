"""The web UI's cookies are Secure exactly when the request came over https: by its own scheme, by an https
GAZE_PUBLIC_URL, or by a proxy's X-Forwarded-Proto / Forwarded header only when GAZE_TRUST_PROXY_HEADERS
says that proxy is trusted (else a client could claim https itself). Checked on every cookie the UI sets:
the login form's double-submit token, the session made by logging in, and the expired one a logout sends."""
from __future__ import annotations

import pytest

from tests.fakes import COOKIES, CSRF, FakeAdmin
from tests.helpers import app_client, gateway_settings

FORM = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "text/html"}
LOGIN_TOKEN = "login-token"
PASSWORD = "right-password"


class LoginAdmin(FakeAdmin):
    """FakeAdmin that also lets PASSWORD log in, opening the session COOKIES holds."""

    def verify_password(self, password):
        return password == PASSWORD

    def open_session(self):
        return COOKIES["gaze_session"]


# (settings, how the request arrives, Secure?)
CASES = [
    ({}, {}, False),
    ({}, {"protocol": "https"}, True),
    ({"GAZE_PUBLIC_URL": "https://gaze.example.org"}, {}, True),
    # a header any client can send: not trusted unless the setting says a proxy sets it
    ({}, {"headers": {"X-Forwarded-Proto": "https"}}, False),
    ({}, {"headers": {"Forwarded": "proto=https"}}, False),
    ({"GAZE_TRUST_PROXY_HEADERS": "1"}, {"headers": {"X-Forwarded-Proto": "https"}}, True),
    ({"GAZE_TRUST_PROXY_HEADERS": "true"}, {"headers": {"Forwarded": "for=203.0.113.5;proto=https"}}, True),
    ({"GAZE_TRUST_PROXY_HEADERS": "1"}, {"headers": {"X-Forwarded-Proto": "http"}}, False),
    ({"GAZE_TRUST_PROXY_HEADERS": "1"}, {}, False),
]
IDS = ["http", "https", "https-public-url", "untrusted-x-forwarded-proto", "untrusted-forwarded",
       "trusted-x-forwarded-proto", "trusted-forwarded", "trusted-proxy-says-http", "trusted-no-header"]


def client_for(tmp_path, env):
    return app_client(gateway_settings(tmp_path, env), admin=LoginAdmin())


def merged(arrival, headers):
    return {**arrival, "headers": {**headers, **arrival.get("headers", {})}}


def the_cookie(result, name):
    found = [c for c in result.cookies.values() if c.name == name] if result.cookies else []
    assert len(found) == 1, result.headers.get("set-cookie")
    return found[0]


@pytest.mark.parametrize("env, arrival, secure", CASES, ids=IDS)
def test_the_login_forms_token_cookie(tmp_path, env, arrival, secure):
    result = client_for(tmp_path, env).simulate_get("/login", **merged(arrival, {"Accept": "text/html"}))
    assert result.status_code == 200
    cookie = the_cookie(result, "gaze_login_csrf")
    assert cookie.secure is secure and cookie.http_only


@pytest.mark.parametrize("env, arrival, secure", CASES, ids=IDS)
def test_the_session_cookie_made_by_logging_in(tmp_path, env, arrival, secure):
    body = f"login_token={LOGIN_TOKEN}&password={PASSWORD}&next=/queue"
    result = client_for(tmp_path, env).simulate_post("/login", body=body, cookies={"gaze_login_csrf": LOGIN_TOKEN},
                                                     **merged(arrival, FORM))
    assert result.status_code == 303, result.text
    cookie = the_cookie(result, "gaze_session")
    assert cookie.value == COOKIES["gaze_session"]
    assert cookie.secure is secure and cookie.http_only and cookie.same_site == "Lax"


@pytest.mark.parametrize("env, arrival, secure", CASES, ids=IDS)
def test_the_expired_cookie_a_logout_sends(tmp_path, env, arrival, secure):
    result = client_for(tmp_path, env).simulate_post("/logout", body=f"csrf_token={CSRF}", cookies=COOKIES,
                                                     **merged(arrival, FORM))
    assert result.status_code == 303, result.text
    cookie = the_cookie(result, "gaze_session")
    assert cookie.value == "" and cookie.secure is secure
