"""Rate limits through the real stack: gunicorn's workers share one budget per API key in Redis."""
import uuid

import pytest
import requests

from tests.stack import running_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def limited_stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("stack_ratelimit"), generators=1,
                       GAZE_RATE_LIMIT_SUBMIT="3/minute", GAZE_RATE_LIMIT_AUTH_FAILURES="2/minute") as stack:
        yield stack


def test_the_fourth_submission_in_a_minute_is_a_429_with_retry_after(limited_stack):
    stack = limited_stack
    # a new connection each: gunicorn hands them to whichever worker accepts first; the budget is shared
    for _ in range(3):
        response = requests.post(f"{stack.url}/api/v1/generate/example_01", headers=stack.headers(),
                                 json={"count": 1, "width": 64, "height": 64}, timeout=30)
        assert response.status_code == 202, response.text
    response = requests.post(f"{stack.url}/api/v1/generate/example_01", headers=stack.headers(),
                             json={"count": 1, "width": 64, "height": 64}, timeout=30)
    assert response.status_code == 429, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    assert set(response.json()) == {"error"} and "too many" in response.json()["error"]
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    # reads are unlimited by default: polling goes on
    assert stack.get(f"/api/v1/job/{uuid.uuid4()}").status_code == 404
    assert stack.get("/api/v1/presets").status_code == 200


def test_invalid_keys_are_limited_per_address(limited_stack):
    stack = limited_stack
    statuses = [requests.get(f"{stack.url}/api/v1/presets", headers={"X-API-Key": f"gz_guess-{i}"},
                             timeout=30).status_code for i in range(3)]
    assert statuses == [403, 403, 429]
