"""Issue 6: the published OpenAPI 3.1 document, and a property-based fuzzer (schemathesis) against the
real stack: no 500s, every answer matches the document, and no route answers without a valid key."""
import pytest
import requests
import schemathesis
from schemathesis.specs.openapi.checks import positive_data_acceptance
from hypothesis import HealthCheck, given, settings

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MAX_EXAMPLES = 40   # per operation: bounded so the suite stays quick; raise locally to fuzz harder


# the event streams (/api/v1/job/{job_id}/events, /api/v1/events) are left out: a stream has no end to
# validate; tests/e2e/test_follow.py covers them
OPERATIONS = [("/api/v1/presets", "GET"), ("/api/v1/generate/{preset_slug}", "POST"), ("/api/v1/job/{job_id}", "GET"),
              ("/api/v1/job/{job_id}/cancel", "POST"), ("/api/v1/jobs", "GET")]


@pytest.fixture(scope="module")
def api_schema(stack):
    document = requests.get(f"{stack.url}/api/v1/openapi.json", timeout=30).json()
    return schemathesis.openapi.from_dict(document)


def fuzz(api_schema, path, method, check, max_examples):
    """Run `check(case)` over Hypothesis-generated cases of one operation (schemathesis' strategies,
    driven by Hypothesis directly: its pytest plugin does not support this pytest). A generated Prefer
    header is sent as `wait=1`: a held answer (up to 60 s) must not stretch the run."""
    operation = api_schema[path][method]

    @given(case=operation.as_strategy())
    @settings(max_examples=max_examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case):
        if case.headers and any(name.lower() == "prefer" for name in case.headers):
            case.headers = {**{k: v for k, v in case.headers.items() if k.lower() != "prefer"}, "Prefer": "wait=1"}
        check(case)

    run()


@pytest.mark.parametrize("path,method", OPERATIONS)
def test_the_api_keeps_its_documented_contract(api_schema, stack, path, method):
    """With a valid key: never a 5xx, status codes and bodies as documented."""
    def check(case):
        response = case.call(base_url=stack.url, headers={"X-API-Key": stack.key}, timeout=30)
        assert response.status_code < 500, (case.method, case.formatted_path, case.body, response.text)
        # positive_data_acceptance is left out on purpose: JSON Schema calls 650.0 an integer, our strict
        # parsing refuses it (400 naming the field), as it refuses "650" and true; every other check runs
        case.validate_response(response, excluded_checks=[positive_data_acceptance])

    fuzz(api_schema, path, method, check, MAX_EXAMPLES)


@pytest.mark.parametrize("path,method", OPERATIONS)
def test_no_route_answers_without_a_valid_key(api_schema, stack, path, method):
    def check(case):
        # schemathesis fills in the security schemes with made-up keys: take them out, then send none/a bad one
        case.query = {k: v for k, v in (case.query or {}).items() if k != "api_key"} or None
        case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "x-api-key"} or None
        for headers, expected in (({}, 401), ({"X-API-Key": "gz_not-a-real-key"}, 403)):
            response = case.call(base_url=stack.url, headers=headers, timeout=30)
            assert response.status_code == expected, (headers, case.method, case.formatted_path, response.text)

    fuzz(api_schema, path, method, check, 10)


def test_the_document_describes_the_guides_three_endpoints_and_the_additions(stack):
    document = requests.get(f"{stack.url}/api/v1/openapi.json", timeout=30).json()
    assert document["openapi"] == "3.1.0"
    assert {(path, method) for path, item in document["paths"].items() for method in item} >= {
        ("/api/v1/presets", "get"), ("/api/v1/generate/{preset_slug}", "post"), ("/api/v1/job/{job_id}", "get"),
        ("/api/v1/job/{job_id}/cancel", "post"), ("/api/v1/jobs", "get")}
    schemes = document["components"]["securitySchemes"]
    assert schemes["ApiKeyHeader"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert schemes["ApiKeyQuery"] == {"type": "apiKey", "in": "query", "name": "api_key"}
    body = document["components"]["schemas"]["GenerateRequest"]["properties"]
    assert set(body) == {"count", "checkpoint", "extra_positive", "extra_negative", "seed", "width", "height",
                         "webhook", "webhook_events_filter"}   # the last two: an addition (webhooks)
    assert (body["count"]["minimum"], body["count"]["maximum"]) == (1, 20)
