"""Generator replicas share one work queue: with 4 real generator processes (`gaze up --generators 4`)
20 jobs spread over all four and every one finishes, exactly once."""
import collections

import pytest

from tests.stack import running_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def four_generators(tmp_path_factory):
    # each job holds its replica for 0.5 s, like a short GPU generation, so the queue must fan out
    with running_stack(tmp_path_factory.mktemp("stack4"), generators=4,
                       GAZE_BACKEND="simulated", GAZE_SIMULATED_GPU_SECONDS="0.5") as running:
        yield running


def test_twenty_jobs_spread_over_four_replicas(four_generators):
    stack = four_generators
    response = stack.post("/api/v1/generate/example_01", json={"count": 20, "width": 128, "height": 128})
    assert response.status_code == 202
    jobs = [stack.wait_job(j["job_id"], timeout=120) for j in response.json()["jobs"]]
    assert [j["status"] for j in jobs] == ["done"] * 20
    assert all(j["attempts"] == 1 for j in jobs)
    per_replica = collections.Counter(j["replica"] for j in jobs)
    assert len(per_replica) == 4, per_replica
    # prefetch 2: a replica holds its running job and the next; nobody hoards the queue beyond that
    assert max(per_replica.values()) <= 8, per_replica
    assert len({j["result"]["relative_path"] for j in jobs}) == 20


def test_every_process_logs_json_lines_and_a_jobs_lines_carry_its_job_id(four_generators):
    """Issue 5: in the real stack's log (supervisord's children share the console) the services' and the
    gateway's lines are JSON objects; a job's queued/started/done lines and the access line of a poll
    carry its job id as a field; a key given as ?api_key= never reaches a line."""
    import json
    import time

    import requests

    stack = four_generators
    response = stack.post("/api/v1/generate/example_01", json={"count": 2, "width": 64, "height": 64})
    assert response.status_code == 202
    jobs = [stack.wait_job(j["job_id"]) for j in response.json()["jobs"]]
    assert [j["status"] for j in jobs] == ["done", "done"]
    job_id = jobs[0]["id"]
    assert requests.get(f"{stack.url}/api/v1/job/{job_id}?api_key={stack.key}", timeout=30).status_code == 200

    def lines():
        # the stack log also holds `gaze up`'s own printed banner (the API key) and supervisord's lines
        return [json.loads(line) for line in stack.log.read_text(errors="replace").splitlines()
                if line.startswith("{")]

    def found(parsed):
        wanted = {(job["id"], what) for job in jobs for what in ("queued", "started", "done")}
        have = {(p.get("job_id"), p["msg"].split(": ", 1)[-1].split(" ")[0]) for p in parsed}
        polled = [p for p in parsed if p["logger"] == "gunicorn.access" and p.get("job_id") == job_id]
        return wanted <= have and polled

    deadline = time.monotonic() + 15
    while not found(parsed := lines()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert found(parsed), "missing job lines in the stack log"
    assert {p["service"] for p in parsed} >= {"gateway", "jobs", "generator", "presets"}
    assert all({"ts", "level", "service", "pid", "logger", "msg"} <= set(p) for p in parsed)
    for job in jobs:
        [started] = [p for p in parsed if p.get("job_id") == job["id"] and ": started on " in p["msg"]]
        [done] = [p for p in parsed if p.get("job_id") == job["id"] and ": done in " in p["msg"]]
        for line in (started, done):
            assert (line["service"], line["replica"], line["attempt"]) == ("generator", job["replica"], 1)
    polled = [p for p in parsed if p["logger"] == "gunicorn.access" and p.get("job_id") == job_id]
    assert {(p["method"], p["path"], p["status"]) for p in polled} == {("GET", f"/api/v1/job/{job_id}", 200)}
    assert all("?" not in p["msg"] for p in polled)                     # the path, never the query string
    assert not [p for p in parsed if stack.key in json.dumps(p)]
