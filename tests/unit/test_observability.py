"""/healthz, /readyz and /metrics through the real Falcon app over fakes (FakeRpc for the API routes,
FakeProbes for the broker, database and work queue as the operations endpoints see them). (The metrics
of several gunicorn worker processes: tests/integration/test_gateway_processes.py.)"""
from __future__ import annotations

import threading
import time
import uuid

import pytest
from nameko.exceptions import RpcTimeout
from prometheus_client.parser import text_string_to_metric_families
from psycopg_pool import PoolTimeout

from shared.errors import NotFound
from services.gateway.stores.rpc import ServiceUnavailable
from tests.fakes import AUTH, JOB_ID, JOBS_METRICS, REPLICAS, FakeProbes, FakeRpc
from tests.helpers import app_client, gateway_settings, metric_samples, metric_value


def make_client(tmp_path, probes=None, rpc=None, env=None):
    probes = probes or FakeProbes()
    client = app_client(gateway_settings(tmp_path / "media", env), rpc=rpc or FakeRpc(), probes=probes)
    return client, probes


OPS_TOKEN = "ops-token"
OPS = {"Authorization": f"Bearer {OPS_TOKEN}"}


def readiness_client(tmp_path, probes=None, env=None):
    """A gateway whose /readyz details are readable with OPS (GAZE_METRICS_TOKEN)."""
    return make_client(tmp_path, probes=probes, env={"GAZE_METRICS_TOKEN": OPS_TOKEN, **(env or {})})


# --- /healthz ----------------------------------------------------------------------------------------

def test_healthz_is_ok_without_a_key_and_without_touching_anything(tmp_path):
    client, probes = make_client(tmp_path, probes=FakeProbes(database_error=RuntimeError("db down"),
                                                             raises={("jobs", "replicas"): ServiceUnavailable("x")}))
    result = client.simulate_get("/healthz")
    assert result.status_code == 200
    assert result.json == {"status": "ok"}
    assert probes.calls == []


# --- /readyz -----------------------------------------------------------------------------------------

def test_readyz_ready_when_broker_database_and_a_fresh_healthy_generator_answer(tmp_path):
    client, probes = readiness_client(tmp_path)
    result = client.simulate_get("/readyz", headers=OPS)
    assert result.status_code == 200, result.text
    body = result.json
    assert body["status"] == "ready"
    assert set(body["checks"]) == {"broker", "database", "generators"}
    assert all(check["ok"] and check["detail"] for check in body["checks"].values())
    assert "1 of 3 replica(s) healthy" in body["checks"]["generators"]["detail"]
    assert ("jobs", "replicas", ()) in probes.calls and ("database", "SELECT 1", ()) in probes.calls


def assert_not_ready(result, failing):
    assert result.status_code == 503, result.text
    assert result.headers["retry-after"] == "5"
    assert result.headers["content-type"].startswith("application/json")
    body = result.json
    assert body["status"] == "not ready"
    assert set(body["checks"]) == {"broker", "database", "generators"}
    assert {name for name, check in body["checks"].items() if not check["ok"]} == set(failing)
    for check in body["checks"].values():
        assert isinstance(check["detail"], str) and 0 < len(check["detail"]) <= 200
    return body["checks"]


@pytest.mark.parametrize("error, detail", [
    (ServiceUnavailable("message broker unreachable: [Errno 111] Connection refused"), "message broker unreachable"),
    (ServiceUnavailable("service 'jobs' is not running"), "service 'jobs' is not running"),
    (RpcTimeout("x"), "did not answer within 2 s"),
    (ValueError("something odd"), "ValueError: something odd"),
])
def test_readyz_names_the_broker_when_the_rpc_round_trip_fails(tmp_path, error, detail):
    client, _ = readiness_client(tmp_path, probes=FakeProbes(raises={("jobs", "replicas"): error}))
    # the generators cannot be judged without the jobs service: they fail too, and say why
    checks = assert_not_ready(client.simulate_get("/readyz", headers=OPS), failing={"broker", "generators"})
    assert detail in checks["broker"]["detail"]
    assert "jobs service" in checks["generators"]["detail"]


def test_readyz_names_the_database(tmp_path):
    probes = FakeProbes(database_error=PoolTimeout("couldn't get a connection after 2.00 sec"))
    client, _ = readiness_client(tmp_path, probes=probes)
    checks = assert_not_ready(client.simulate_get("/readyz", headers=OPS), failing={"database"})
    assert "PoolTimeout: couldn't get a connection" in checks["database"]["detail"]


@pytest.mark.parametrize("replicas, detail", [
    ([], "no generator replica has reported yet"),
    ([REPLICAS[1]], "node-generator-1 unhealthy (worker restarting: the worker process exited"),
    ([REPLICAS[2]], "old-node-generator-0 last heard 86400 s ago"),
    ([{**REPLICAS[0], "age_seconds": 31.0}], "within 30 s"),  # 3 × the 10 s interval set below
])
def test_readyz_names_the_generators_without_a_fresh_healthy_replica(tmp_path, replicas, detail):
    client, _ = readiness_client(tmp_path, probes=FakeProbes(answers={("jobs", "replicas"): replicas}),
                            env={"GAZE_STATUS_INTERVAL_SECONDS": "10"})
    checks = assert_not_ready(client.simulate_get("/readyz", headers=OPS), failing={"generators"})
    assert detail in checks["generators"]["detail"]


def test_readyz_accepts_a_replica_heard_from_within_three_intervals(tmp_path):
    replicas = [{**REPLICAS[0], "age_seconds": 29.0}]
    client, _ = readiness_client(tmp_path, probes=FakeProbes(answers={("jobs", "replicas"): replicas}),
                            env={"GAZE_STATUS_INTERVAL_SECONDS": "10"})
    assert client.simulate_get("/readyz", headers=OPS).status_code == 200


def test_readyz_with_generators_optional_is_ready_without_any_generator(tmp_path):
    # Kubernetes asks this way (deploy/k8s): generators scaled to zero start only once a job waits, and a
    # job arrives only through a ready gateway
    no_generator = FakeProbes(answers={("jobs", "replicas"): []})
    client, _ = readiness_client(tmp_path, probes=no_generator)
    assert_not_ready(client.simulate_get("/readyz", headers=OPS), failing={"generators"})
    result = client.simulate_get("/readyz", query_string="generators=optional", headers=OPS)
    assert result.status_code == 200, result.text
    assert result.json["status"] == "ready"
    assert result.json["checks"]["generators"] == {"ok": False, "detail": "no generator replica has reported yet"}
    anonymous = client.simulate_get("/readyz", query_string="generators=optional")
    assert anonymous.status_code == 200 and anonymous.json["generators"] == {"ok": False}


@pytest.mark.parametrize("probes, failing", [
    (FakeProbes(answers={("jobs", "replicas"): []}, database_error=RuntimeError("db down")), {"database", "generators"}),
    (FakeProbes(raises={("jobs", "replicas"): ServiceUnavailable("broker down")}), {"broker", "generators"}),
])
def test_readyz_with_generators_optional_still_needs_the_broker_and_the_database(tmp_path, probes, failing):
    client, _ = readiness_client(tmp_path, probes=probes)
    assert_not_ready(client.simulate_get("/readyz", query_string="generators=optional", headers=OPS), failing)


class HangingProbes(FakeProbes):
    """A database that never answers and a broker that answers late: the probes' own limits failed."""

    def __init__(self):
        super().__init__(timeout=0.2)
        self.release = threading.Event()

    def ping_database(self):
        self.release.wait(30)

    def call(self, service, method, *args):
        self.release.wait(30)
        return super().call(service, method, *args)


def test_readyz_is_bounded_in_time_when_a_dependency_hangs(tmp_path):
    probes = HangingProbes()
    client, _ = readiness_client(tmp_path, probes=probes)
    started = time.monotonic()
    try:
        result = client.simulate_get("/readyz", headers=OPS)
    finally:
        probes.release.set()
    elapsed = time.monotonic() - started
    checks = assert_not_ready(result, failing={"broker", "database", "generators"})
    assert elapsed < 2.0, elapsed  # checks run at once: one timeout (0.2 s + slack), not one per check
    assert "no answer within" in checks["database"]["detail"]
    assert "no answer within" in checks["broker"]["detail"]


def test_readyz_needs_no_key_and_ignores_a_bad_one(tmp_path):
    client, _ = make_client(tmp_path)
    assert client.simulate_get("/readyz", headers={"X-API-Key": "gz_wrong"}).status_code == 200


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic b3BzOg=="}])
@pytest.mark.parametrize("token", ["", OPS_TOKEN])
def test_readyz_tells_anonymous_callers_only_which_checks_pass(tmp_path, headers, token):
    probes = FakeProbes(answers={("jobs", "replicas"): [REPLICAS[1]]})   # a broken replica, with details
    client, _ = make_client(tmp_path, probes=probes, env={"GAZE_METRICS_TOKEN": token})
    result = client.simulate_get("/readyz", headers=headers)
    assert result.status_code == 503
    assert result.json == {"broker": {"ok": True}, "database": {"ok": True}, "generators": {"ok": False}}


def test_readyz_asks_its_dependencies_once_per_interval_however_often_it_is_called(tmp_path):
    client, probes = readiness_client(tmp_path)
    for _ in range(20):
        assert client.simulate_get("/readyz").status_code == 200
    assert probes.calls.count(("jobs", "replicas", ())) == 1
    assert probes.calls.count(("database", "SELECT 1", ())) == 1


# --- /metrics ----------------------------------------------------------------------------------------

def test_metrics_count_requests_by_route_template_and_status(tmp_path):
    rpc = FakeRpc(raises={})
    client, _ = make_client(tmp_path, rpc=rpc)
    other_job = str(uuid.uuid4())
    client.simulate_get("/api/v1/presets", headers=AUTH)
    client.simulate_get("/api/v1/presets", headers=AUTH)
    client.simulate_get(f"/api/v1/job/{JOB_ID}", headers=AUTH)
    rpc.raises[("jobs", "get")] = NotFound("job", other_job)
    client.simulate_get(f"/api/v1/job/{other_job}", headers=AUTH)
    client.simulate_get("/api/v1/presets")                       # no key: 401 from the auth middleware
    client.simulate_post("/api/v1/generate/example_01", headers={"X-API-Key": "gz_wrong"})  # 403
    client.simulate_get("/no/such/page")                         # no route at all
    client.simulate_get("/static/uploads/presets/x/missing.png")  # the static route, file missing

    result = client.simulate_get("/metrics")
    assert result.status_code == 200
    assert result.headers["content-type"].startswith("text/plain")
    text = result.text
    counter = "gaze_http_requests_total"
    assert metric_value(text, counter, method="GET", route="/api/v1/presets", status="200") == 2
    assert metric_value(text, counter, method="GET", route="/api/v1/presets", status="401") == 1
    assert metric_value(text, counter, method="GET", route="/api/v1/job/{job_id}", status="200") == 1
    assert metric_value(text, counter, method="GET", route="/api/v1/job/{job_id}", status="404") == 1
    assert metric_value(text, counter, method="POST", route="/api/v1/generate/{slug}", status="403") == 1
    assert metric_value(text, counter, method="GET", route="unmatched", status="404") == 1
    assert metric_value(text, counter, method="GET", route="/static/uploads/{path}", status="404") == 1
    # never a raw path: no job id and no unknown path becomes a label
    assert JOB_ID not in text and other_job not in text and "/no/such/page" not in text
    latency = "gaze_http_request_duration_seconds_count"
    assert metric_value(text, latency, method="GET", route="/api/v1/presets") == 3
    assert metric_value(text, latency, method="GET", route="/api/v1/job/{job_id}") == 2


def test_metrics_expose_jobs_by_status_queue_depth_durations_and_replicas(tmp_path):
    client, probes = make_client(tmp_path)
    text = client.simulate_get("/metrics").text

    assert metric_value(text, "gaze_scrape_source_up", source="jobs") == 1
    assert metric_value(text, "gaze_scrape_source_up", source="broker") == 1
    assert {status: metric_value(text, "gaze_jobs", status=status)
            for status in ("pending", "processing", "done", "failed")} == \
        {"pending": 4, "processing": 1, "done": 17, "failed": 2}
    assert metric_value(text, "gaze_queue_messages_ready", queue="gaze.generate") == 7
    assert metric_value(text, "gaze_queue_consumers", queue="gaze.generate") == 2
    assert ("broker", "queue_depth", ("gaze.generate",)) in probes.calls
    # one healthy and fresh, one reporting a broken backend, one not heard from for a day
    assert metric_value(text, "gaze_generator_replicas", state="healthy") == 1
    assert metric_value(text, "gaze_generator_replicas", state="unhealthy") == 1
    assert metric_value(text, "gaze_generator_replicas", state="stale") == 1
    # the fresh replicas' worker processes by state, and how often each replica replaced its worker
    assert metric_value(text, "gaze_generator_workers", state="busy") == 1
    assert metric_value(text, "gaze_generator_workers", state="restarting") == 1
    assert metric_value(text, "gaze_generator_workers", state="idle") == 0      # the only idle one is stale
    assert metric_value(text, "gaze_generator_worker_restarts_total", replica="node-generator-1") == 2
    # histograms: cumulative buckets, +Inf = count, sum
    wait = "gaze_job_queue_wait_seconds"
    assert metric_value(text, f"{wait}_bucket", outcome="done", le="0.1") == 1
    assert metric_value(text, f"{wait}_bucket", outcome="done", le="0.5") == 2
    assert metric_value(text, f"{wait}_bucket", outcome="done", le="30.0") == 3
    assert metric_value(text, f"{wait}_bucket", outcome="done", le="+Inf") == 3
    assert metric_value(text, f"{wait}_count", outcome="done") == 3
    assert metric_value(text, f"{wait}_sum", outcome="done") == pytest.approx(12.35)
    assert metric_value(text, f"{wait}_count", outcome="failed") == 0
    gen = "gaze_job_generation_seconds"
    assert metric_value(text, f"{gen}_bucket", outcome="done", le="0.25") == 2
    assert metric_value(text, f"{gen}_bucket", outcome="failed", le="600.0") == 0
    assert metric_value(text, f"{gen}_bucket", outcome="failed", le="+Inf") == 1
    # the families are typed as Prometheus expects
    types = {family.name: family.type for family in text_string_to_metric_families(text)}
    assert types[wait] == types[gen] == types["gaze_http_request_duration_seconds"] == "histogram"
    assert types["gaze_jobs"] == types["gaze_generator_replicas"] == "gauge"


# jobs.metrics() with checkpoint-aware scheduling: the lines (per checkpoint), the total backlog, and each
# replica's model, line and loads; one checkpoint name needs escaping in the exposition
ODD_CHECKPOINT = 'Rare/"odd"\\name\n.safetensors'
SDXL = "SDXL/sd_xl_base_1.0.safetensors"
SCHEDULING_METRICS = {
    **JOBS_METRICS,
    "lines": [{"checkpoint": ODD_CHECKPOINT, "waiting": 3, "oldest_wait_seconds": 41.5},
              {"checkpoint": SDXL, "waiting": 9, "oldest_wait_seconds": 2.0}],
    "backlog": 12,
    "replicas": [
        {**REPLICAS[0], "loaded_checkpoint": SDXL, "resident_checkpoints": None,
         "serving": ODD_CHECKPOINT, "loads": 4, "load_seconds_total": 12.5, "mean_load_seconds": 3.0,
         "mean_job_seconds": 0.5},
        {**REPLICAS[1], "loaded_checkpoint": None, "serving": None, "loads": 0, "load_seconds_total": 0.0},
        # stale: left out
        {**REPLICAS[2], "loaded_checkpoint": SDXL, "serving": SDXL, "loads": 99, "load_seconds_total": 300.0},
    ],
}


def test_metrics_expose_the_backlog_per_checkpoint_and_each_replicas_model_and_loads(tmp_path):
    client, _ = make_client(tmp_path, probes=FakeProbes(answers={("jobs", "metrics"): SCHEDULING_METRICS}))
    text = client.simulate_get("/metrics").text
    odd = ODD_CHECKPOINT
    assert metric_value(text, "gaze_backlog_jobs") == 12
    assert metric_value(text, "gaze_checkpoint_backlog_jobs", checkpoint=odd) == 3
    assert metric_value(text, "gaze_checkpoint_backlog_jobs", checkpoint=SDXL) == 9
    assert metric_value(text, "gaze_checkpoint_oldest_wait_seconds", checkpoint=odd) == 41.5
    assert metric_value(text, "gaze_replica_checkpoint_loads_total", replica="node-generator-0") == 4
    assert metric_value(text, "gaze_replica_checkpoint_loads_total", replica="node-generator-1") == 0
    assert metric_value(text, "gaze_replica_checkpoint_load_seconds_total", replica="node-generator-0") == 12.5
    assert metric_value(text, "gaze_replica_checkpoint_loads_total", replica="old-node-generator-0") is None
    held = {labels: value for (name, labels), value in metric_samples(text).items()
            if name == "gaze_replica_checkpoint"}
    assert held == {frozenset({"replica": "node-generator-0", "checkpoint": SDXL, "role": "loaded"}.items()): 1,
                    frozenset({"replica": "node-generator-0", "checkpoint": odd, "role": "serving"}.items()): 1}
    # escaped as the exposition format wants (the parser above read it back whole)
    assert 'checkpoint="Rare/\\"odd\\"\\\\name\\n.safetensors"' in text
    types = {family.name: family.type for family in text_string_to_metric_families(text)}
    assert types["gaze_backlog_jobs"] == types["gaze_checkpoint_backlog_jobs"] == "gauge"
    assert types["gaze_replica_checkpoint_loads"] == types["gaze_replica_checkpoint_load_seconds"] == "counter"
    backlog = next(family for family in text_string_to_metric_families(text) if family.name == "gaze_backlog_jobs")
    assert "autoscale" in backlog.documentation


def test_metrics_count_the_dead_letters_the_jobs_service_recorded(tmp_path):
    answers = {("jobs", "metrics"): {**SCHEDULING_METRICS, "dead_letters": 2}}
    text = make_client(tmp_path, probes=FakeProbes(answers=answers))[0].simulate_get("/metrics").text
    assert metric_value(text, "gaze_dead_letters_total") == 2
    assert "gaze_dead_letters_total" not in make_client(tmp_path)[0].simulate_get("/metrics").text   # older jobs service


def test_metrics_of_a_jobs_service_from_before_scheduling_leave_the_new_series_out(tmp_path):
    client, _ = make_client(tmp_path)   # JOBS_METRICS: no lines, no backlog, replicas without checkpoints
    text = client.simulate_get("/metrics").text
    assert metric_value(text, "gaze_jobs", status="pending") == 4
    families = {family.name for family in text_string_to_metric_families(text)}
    assert not families & {"gaze_backlog_jobs", "gaze_checkpoint_backlog_jobs", "gaze_checkpoint_oldest_wait_seconds"}
    assert metric_value(text, "gaze_replica_checkpoint_loads_total", replica="node-generator-0") == 0
    assert "gaze_replica_checkpoint{" not in text


def test_metrics_ask_the_jobs_service_and_the_broker_once_per_interval_however_often_scraped(tmp_path):
    client, probes = make_client(tmp_path)
    for _ in range(20):
        assert client.simulate_get("/metrics").status_code == 200
    assert probes.calls.count(("jobs", "metrics", ())) == 1
    assert sum(1 for call in probes.calls if call[:2] == ("broker", "queue_depth")) == 1


def test_metrics_still_answer_when_the_jobs_service_and_the_broker_do_not(tmp_path):
    probes = FakeProbes(raises={("jobs", "metrics"): ServiceUnavailable("message broker unreachable: refused")},
                        queue_error=ConnectionRefusedError(111, "Connection refused"))
    client, _ = make_client(tmp_path, probes=probes)
    client.simulate_get("/healthz")
    result = client.simulate_get("/metrics")
    assert result.status_code == 200
    text = result.text
    assert metric_value(text, "gaze_scrape_source_up", source="jobs") == 0
    assert metric_value(text, "gaze_scrape_source_up", source="broker") == 0
    assert metric_value(text, "gaze_http_requests_total", method="GET", route="/healthz", status="200") == 1
    assert "gaze_jobs{" not in text and "gaze_queue_messages_ready{" not in text


def test_metrics_scrape_is_bounded_in_time_when_a_source_hangs(tmp_path):
    probes = HangingProbes()
    client, _ = make_client(tmp_path, probes=probes)
    started = time.monotonic()
    try:
        result = client.simulate_get("/metrics")
    finally:
        probes.release.set()
    assert result.status_code == 200
    assert time.monotonic() - started < 2.0
    assert metric_value(result.text, "gaze_scrape_source_up", source="jobs") == 0


def test_metrics_need_no_api_key_but_honour_an_optional_bearer_token(tmp_path):
    open_client, _ = make_client(tmp_path)
    assert open_client.simulate_get("/metrics").status_code == 200

    client, _ = make_client(tmp_path, env={"GAZE_METRICS_TOKEN": "s3cret-token"})
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret-token"},
                    {"X-API-Key": AUTH["X-API-Key"]}):
        refused = client.simulate_get("/metrics", headers=headers)
        assert refused.status_code == 401, headers
        assert refused.json["field"] == "Authorization"
        assert refused.headers["www-authenticate"].startswith("Bearer")
    allowed = client.simulate_get("/metrics", headers={"Authorization": "Bearer s3cret-token"})
    assert allowed.status_code == 200
    assert "gaze_http_requests_total" in allowed.text
    # the token guards /metrics only
    assert client.simulate_get("/healthz").status_code == 200


def test_metrics_speak_openmetrics_when_asked(tmp_path):
    client, _ = make_client(tmp_path)
    result = client.simulate_get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert result.headers["content-type"].startswith("application/openmetrics-text")
    assert result.text.rstrip().endswith("# EOF")
