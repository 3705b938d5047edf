"""A generator told to stop (SIGTERM, as supervisord or an operator sends it) finishes the job it is
running, takes no new one, and exits; no job is lost or run twice."""
import os
import signal
import time

import pytest

from tests.stack import generator_pids, running_stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_a_stopping_generator_finishes_its_job_and_takes_no_more(tmp_path):
    with running_stack(tmp_path, generators=2, GAZE_BACKEND="simulated", GAZE_SIMULATED_GPU_SECONDS="2") as stack:
        supervisor_pid = int((tmp_path / "run" / "supervisord.pid").read_text())
        pids = generator_pids(supervisor_pid)
        assert len(pids) == 2, pids
        job_ids = [j["job_id"] for j in stack.post("/api/v1/generate/example_01",
                                                     json={"count": 6, "width": 64, "height": 64}).json()["jobs"]]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:       # wait until a replica is in the middle of a job
            running = [stack.get(f"/api/v1/job/{j}").json() for j in job_ids]
            busy = [j for j in running if j["status"] == "processing"]
            if busy:
                break
            time.sleep(0.05)
        victim = busy[0]["replica"]
        os.kill(pids[victim], signal.SIGTERM)
        jobs = [stack.wait_job(j, timeout=90) for j in job_ids]
        assert [j["status"] for j in jobs] == ["done"] * 6
        assert all(j["attempts"] == 1 for j in jobs), [(j["replica"], j["attempts"]) for j in jobs]
        # the job it was running was finished by it, not handed to the other replica
        assert next(j for j in jobs if j["id"] == busy[0]["id"])["replica"] == victim
        # and it took nothing new after the signal: it ran at most the one job it had started
        # (its share of the rest went to the other replica)
        assert sum(j["replica"] == victim for j in jobs) <= 2
        with pytest.raises(ProcessLookupError):
            os.kill(pids[victim], 0)
