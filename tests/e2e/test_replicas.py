"""Generator replicas share one work queue: with 4 real generator processes (`gaze up --generators 4`)
20 jobs spread over all four and every one finishes, exactly once."""
import collections

import pytest

from tests.e2e.conftest import running_stack

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
    # prefetch 1: nobody hoards the queue (a replica holding 2 jobs while others idle would skew this)
    assert max(per_replica.values()) <= 8, per_replica
    assert len({j["result"]["relative_path"] for j in jobs}) == 20
