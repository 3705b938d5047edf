"""Rate limits (services/gateway/stores/rate_limit.py): the real Falcon app over a fake RPC and fake keys, counting
in the real Redis under a prefix of its own per test (deleted afterwards)."""
from __future__ import annotations

import logging
import uuid

import falcon.testing
import pytest
import redis

from services.gateway.stores import rate_limit
from services.gateway.app import create_app
from services.gateway.stores.rate_limit import RateLimiter
from shared import config
from tests.fakes import AUTH, GOOD_KEY, JOB_ID, JSON, SLUG, FakeAdmin, FakeKeys, FakeProbes, FakeRpc
from tests.helpers import assert_json_error

OTHER_KEY = "gz_other-key"
SETTINGS = config.load({})


@pytest.fixture
def prefix():
    """A Redis key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"{SETTINGS.redis_prefix}-ratelimit-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(SETTINGS.redis_url)
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)


def redis_keys(prefix):
    return [k.decode() for k in redis.Redis.from_url(SETTINGS.redis_url).scan_iter(f"{prefix}:*")]


def make_client(tmp_path, prefix, redis_url=SETTINGS.redis_url, **limits):
    settings = config.load({"GAZE_MEDIA_ROOT": str(tmp_path / "media")})
    limiter = RateLimiter(redis_url, prefix, **limits)
    rpc = FakeRpc()
    app = create_app(settings, rpc=rpc, keys=FakeKeys(valid=(GOOD_KEY, OTHER_KEY)), admin=FakeAdmin(),
                     probes=FakeProbes(), limiter=limiter)
    return falcon.testing.TestClient(app), rpc


def post(client, key=GOOD_KEY, **kwargs):
    return client.simulate_post(f"/api/v1/generate/{SLUG}", json={"count": 1},
                                headers={**JSON, "X-API-Key": key}, **kwargs)


def poll(client, key=GOOD_KEY, **kwargs):
    return client.simulate_get(f"/api/v1/job/{JOB_ID}", headers={"X-API-Key": key}, **kwargs)


def assert_limited(result, max_retry_after=60):
    assert_json_error(result, 429)
    retry_after = result.headers["retry-after"]
    assert retry_after.isdigit() and 1 <= int(retry_after) <= max_retry_after, retry_after
    return result.json["error"]


def test_requests_under_the_limit_pass(tmp_path, prefix):
    client, rpc = make_client(tmp_path, prefix, submit="3/minute")
    assert [post(client).status_code for _ in range(3)] == [202, 202, 202]
    assert len(rpc.called("jobs", "create")) == 3


def test_over_the_limit_is_a_429_with_retry_after_and_a_json_error(tmp_path, prefix):
    client, rpc = make_client(tmp_path, prefix, submit="3/minute")
    for _ in range(3):
        assert post(client).status_code == 202
    message = assert_limited(post(client))
    assert "generate" in message and "retry after" in message
    assert len(rpc.called("jobs", "create")) == 3   # the refused request never reached the jobs service


def test_retry_after_counts_down_to_the_window_reset(tmp_path, prefix):
    client, _ = make_client(tmp_path, prefix, submit="1/hour")
    assert post(client).status_code == 202
    assert 60 < int(post(client).headers["retry-after"]) <= 3600


def test_each_key_has_its_own_budget(tmp_path, prefix):
    client, _ = make_client(tmp_path, prefix, submit="2/minute")
    assert [post(client).status_code for _ in range(3)] == [202, 202, 429]
    assert [post(client, OTHER_KEY).status_code for _ in range(3)] == [202, 202, 429]


def test_reads_and_submissions_have_separate_budgets(tmp_path, prefix):
    client, _ = make_client(tmp_path, prefix, submit="2/minute", read="3/minute")
    assert [post(client).status_code for _ in range(3)] == [202, 202, 429]
    # polls and the presets list share the read budget, untouched by the submissions
    assert [poll(client).status_code for _ in range(2)] == [200, 200]
    assert client.simulate_get("/api/v1/presets", headers=AUTH).status_code == 200
    assert "too many requests" in assert_limited(poll(client))
    assert_limited(client.simulate_get("/api/v1/presets", headers=AUTH))


def test_a_disabled_limit_never_refuses_and_stores_nothing(tmp_path, prefix):
    client, _ = make_client(tmp_path, prefix, submit="", read="0")
    assert {post(client).status_code for _ in range(10)} == {202}
    assert {poll(client).status_code for _ in range(10)} == {200}
    assert redis_keys(prefix) == []


def test_counters_are_named_by_a_hash_of_the_key_never_the_key(tmp_path, prefix):
    client, _ = make_client(tmp_path, prefix, submit="5/minute")
    post(client)
    keys = redis_keys(prefix)
    assert len(keys) == 1 and keys[0].startswith(f"{prefix}:ratelimit:")
    assert GOOD_KEY not in keys[0] and "good-key" not in keys[0]


def test_unreachable_redis_serves_every_request_and_warns_once(tmp_path, prefix, caplog):
    client, _ = make_client(tmp_path, prefix, redis_url="redis://127.0.0.1:1/0", submit="1/minute",
                              read="1/minute", auth_failures="1/minute")
    with caplog.at_level(logging.WARNING, logger=rate_limit.__name__):
        assert {post(client).status_code for _ in range(5)} == {202}
        assert {poll(client).status_code for _ in range(5)} == {200}
        assert {poll(client, "gz_wrong").status_code for _ in range(3)} == {403}
    warnings = [r for r in caplog.records if r.name == rate_limit.__name__]
    assert len(warnings) == 1 and "Redis unreachable" in warnings[0].getMessage()


def test_redis_is_tried_again_after_the_interval(prefix, monkeypatch):
    monkeypatch.setattr(rate_limit, "RETRY_SECONDS", 0.0)
    down = RateLimiter("redis://127.0.0.1:1/0", prefix, submit="1/minute")
    assert down.hit("submit", "x") is None
    down.limiter = RateLimiter(SETTINGS.redis_url, prefix, submit="1/minute").limiter   # Redis is back
    assert down.hit("submit", "x") is None
    assert down.hit("submit", "x") >= 1


def test_invalid_keys_from_one_address_are_refused_before_verification(tmp_path, prefix):
    client, _ = make_client(tmp_path, prefix, auth_failures="2/minute")
    assert poll(client).status_code == 200   # this process has seen GOOD_KEY: it stays trusted
    assert [poll(client, "gz_guess-1").status_code, poll(client, "gz_guess-2").status_code] == [403, 403]
    assert "invalid API keys" in assert_limited(poll(client, "gz_guess-3"))
    assert_limited(poll(client, "gz_guess-4"))          # refused from memory, before verification
    assert_limited(poll(client, OTHER_KEY))             # a valid key this process never verified: refused too
    assert poll(client).status_code == 200              # a key verified before keeps working
    # another address has its own budget
    assert poll(client, "gz_guess-5", remote_addr="10.0.0.2").status_code == 403
    assert poll(client, OTHER_KEY, remote_addr="10.0.0.2").status_code == 200


def test_blocked_keys_are_not_verified(tmp_path, prefix):
    settings = config.load({"GAZE_MEDIA_ROOT": str(tmp_path / "media")})
    keys = FakeKeys()
    app = create_app(settings, rpc=FakeRpc(), keys=keys, admin=FakeAdmin(), probes=FakeProbes(),
                     limiter=RateLimiter(SETTINGS.redis_url, prefix, auth_failures="1/minute"))
    client = falcon.testing.TestClient(app)
    assert poll(client, "gz_guess-1").status_code == 403
    assert poll(client, "gz_guess-2").status_code == 429
    assert poll(client, "gz_guess-3").status_code == 429
    assert keys.seen == ["gz_guess-1", "gz_guess-2"]     # the third never reached the key store


def test_login_attempts_are_limited_per_address(tmp_path, prefix):
    client, _ = make_client(tmp_path, prefix, login="2/minute")
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    # no login token: each attempt is refused (403), and counted
    assert [client.simulate_post("/login", body="password=x", headers=form).status_code
            for _ in range(2)] == [403, 403]
    result = client.simulate_post("/login", body="password=x", headers={**form, "Accept": "text/html"})
    assert result.status_code == 429 and 1 <= int(result.headers["retry-after"]) <= 60
    assert "too many login attempts" in result.text
    assert client.simulate_post("/login", body="password=x", headers=form, remote_addr="10.0.0.3").status_code == 403
    assert client.simulate_get("/login").status_code == 200   # showing the form is not an attempt


@pytest.mark.parametrize("strategy", ["fixed-window", "moving-window", "sliding-window-counter"])
def test_every_strategy_refuses_with_a_retry_after(prefix, strategy):
    limiter = RateLimiter(SETTINGS.redis_url, prefix, submit="2/minute", strategy=strategy)
    first, second, third = (limiter.hit("submit", "k") for _ in range(3))
    assert first is None and second is None and 1 <= third <= 60
