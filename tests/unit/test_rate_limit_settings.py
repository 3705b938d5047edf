"""Rate limits (services/gateway/stores/rate_limit.py) as configured: the limit syntax, the defaults, bad
settings refused at start-up, and a gateway without a limiter. (Counting in Redis:
tests/integration/test_rate_limit.py.)"""
import pytest

from services.gateway.stores.rate_limit import RateLimiter, parse_limit
from shared import config
from tests.helpers import app_client, gateway_settings, post_generate


def test_without_a_limiter_nothing_is_limited(tmp_path):
    client = app_client(gateway_settings(tmp_path))
    assert {post_generate(client, {"count": 1}).status_code for _ in range(70)} == {202}


@pytest.mark.parametrize("spec, amount", [("", None), ("0", None), ("off", None), (" 60/minute ", 60),
                                          ("10 per second", 10), ("1000/hour", 1000)])
def test_parse_limit(spec, amount):
    item = parse_limit(spec)
    assert (item and item.amount) == amount


@pytest.mark.parametrize("spec", ["lots", "60/fortnight", "0/minute"])
def test_bad_limits_are_refused_at_start_up(spec):
    with pytest.raises(ValueError, match="GAZE_RATE_LIMIT_SUBMIT"):
        RateLimiter.from_settings(config.load({"GAZE_RATE_LIMIT_SUBMIT": spec}))
    with pytest.raises(ValueError, match="GAZE_RATE_LIMIT_STRATEGY"):
        RateLimiter.from_settings(config.load({"GAZE_RATE_LIMIT_STRATEGY": "token-bucket"}))


def test_defaults():
    limiter = RateLimiter.from_settings(config.load({}))
    assert limiter.items["submit"].amount == 60 and limiter.items["read"] is None
    assert limiter.items["auth_failures"].amount == 30 and limiter.items["login"].amount == 10
