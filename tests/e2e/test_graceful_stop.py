"""A generator told to stop (SIGTERM, as supervisord or an operator sends it) finishes the jobs it holds
(the one running and the one it had already claimed: GAZE_GENERATOR_PREFETCH=2), takes no new one, and
exits; no job is lost or run twice."""
import os
import signal
import time

import pytest

from tests.helpers import wait_until
from tests.stack import generator_pids, running_stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_a_stopping_generator_finishes_its_jobs_and_takes_no_more(tmp_path):
    with running_stack(tmp_path, generators=2, GAZE_BACKEND="simulated", GAZE_SIMULATED_GPU_SECONDS="2",
                       GAZE_GENERATOR_PREFETCH="2") as stack:
        supervisor_pid = int((tmp_path / "run" / "supervisord.pid").read_text())
        pids = generator_pids(supervisor_pid)
        assert len(pids) == 2, pids
        job_ids = [j["job_id"] for j in stack.post("/api/v1/generate/example_01",
                                                     json={"count": 6, "width": 64, "height": 64}).json()["jobs"]]

        def a_full_replica():
            """(replica, its jobs) once a replica runs one job and holds a second, claimed, waiting its turn:
            it has no room for a third until the first ends (2 s of "GPU" from its start)."""
            jobs = [stack.get(f"/api/v1/job/{j}").json() for j in job_ids]
            for replica in pids:
                held = [j for j in jobs if j["replica"] == replica and j["status"] in ("pending", "processing")]
                if sorted(j["status"] for j in held) == ["pending", "processing"]:
                    return replica, held
            return None

        victim, held = wait_until(a_full_replica, timeout=30, interval=0.05, what="a replica holding two jobs")
        signalled_at = time.time()
        os.kill(pids[victim], signal.SIGTERM)
        jobs = [stack.wait_job(j, timeout=90) for j in job_ids]
        assert [j["status"] for j in jobs] == ["done"] * 6
        assert all(j["attempts"] == 1 for j in jobs), [(j["replica"], j["attempts"]) for j in jobs]
        # it finished exactly the two jobs it held when signalled (the running one ended after the signal),
        # and took nothing new: the other four went to the other replica
        assert {j["id"] for j in jobs if j["replica"] == victim} == {j["id"] for j in held}
        running = next(j for j in held if j["status"] == "processing")
        assert next(j for j in jobs if j["id"] == running["id"])["finished_at"] > signalled_at
        wait_until(lambda: _gone(pids[victim]), timeout=30, what="the stopped replica to exit")


def _gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False
