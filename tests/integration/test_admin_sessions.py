"""Admin sessions end after GAZE_ADMIN_IDLE_SECONDS without a request (services/gateway/stores/admin.py), over
the session's real PostgreSQL: each use moves `last_seen_at` forward (written at most once per
`touch_seconds`, so browsing is not a write per request), and a session left alone too long is logged out:
the next page redirects to /login. Time is moved by setting `last_seen_at` back, not by waiting."""
from __future__ import annotations

import dataclasses

import pytest

from services.gateway.stores.admin import AdminStore, _token_hash
from services.gateway.stores.api_keys import ApiKeyStore
from tests.helpers import app_client

IDLE = 600.0     # touch_seconds = 60


@pytest.fixture
def admin(pool, db):
    db.execute("TRUNCATE gateway.sessions")
    return AdminStore(pool, idle_seconds=IDLE)


def idle_for(db, token, seconds):
    """Pretend the session's last use was `seconds` ago."""
    db.execute("UPDATE gateway.sessions SET last_seen_at = now() - make_interval(secs => %s) WHERE token_hash = %s",
               (seconds, _token_hash(token)))


def idle_seconds(db, token):
    row = db.execute("SELECT extract(epoch FROM now() - last_seen_at) AS idle FROM gateway.sessions"
                     " WHERE token_hash = %s", (_token_hash(token),)).fetchone()
    return float(row["idle"])


def test_the_default_is_two_hours_and_the_setting_reaches_the_store(settings):
    assert settings.admin_idle_seconds == 7200
    assert dataclasses.replace(settings, admin_idle_seconds=30).admin_idle_seconds == 30
    assert AdminStore(None).idle_seconds == 7200 and AdminStore(None).touch_seconds == 60
    assert AdminStore(None, 30).touch_seconds == 3     # a short limit is kept to within a tenth


def test_a_session_used_within_the_limit_lives_on_and_each_use_extends_it(admin, db):
    token = admin.open_session()
    assert admin.session(token)["csrf_token"]
    idle_for(db, token, IDLE - 5)
    assert admin.session(token), "used just inside the limit: still logged in"
    assert idle_seconds(db, token) < 5, "and that use moved last_seen_at to now"
    idle_for(db, token, IDLE - 5)
    assert admin.session(token), "extended again: a session in use never times out"


def test_a_use_within_a_minute_of_the_last_writes_nothing(admin, db):
    token = admin.open_session()
    idle_for(db, token, 30)
    for _ in range(5):
        assert admin.session(token)
    assert 29 < idle_seconds(db, token) < 40, "last_seen_at untouched: no write per request"


def test_a_session_idle_past_the_limit_is_logged_out_for_good(admin, db):
    token, other = admin.open_session(), admin.open_session()
    idle_for(db, token, IDLE + 1)
    assert admin.session(token) is None
    assert admin.session(token) is None, "the refused use did not revive it"
    assert admin.session(other), "other sessions are not touched"
    admin.open_session()           # purges idle sessions with the expired ones
    assert db.execute("SELECT count(*) AS n FROM gateway.sessions WHERE token_hash = %s",
                      (_token_hash(token),)).fetchone()["n"] == 0


def test_the_next_page_after_the_limit_asks_for_the_login(settings, tmp_path, pool, admin, db):
    client = app_client(dataclasses.replace(settings, media_root=str(tmp_path)), admin=admin, keys=ApiKeyStore(pool))
    token = admin.open_session()
    cookies = {"gaze_session": token}
    page = client.simulate_get("/settings", cookies=cookies, headers={"Accept": "text/html"})
    assert page.status_code == 200, page.text
    idle_for(db, token, IDLE + 1)
    page = client.simulate_get("/settings", cookies=cookies, headers={"Accept": "text/html"})
    assert page.status_code == 303 and page.headers["location"] == "/login?next=%2Fsettings"
    assert client.simulate_get("/ui/jobs?ids=x", cookies=cookies).status_code == 401
