"""The shipped example subscriber, run as an outside program, sees a job complete."""
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

SUBSCRIBER = Path(__file__).resolve().parents[2] / "examples" / "job_subscriber.py"


def test_example_subscriber_sees_job_completion(stack):
    proc = subprocess.Popen([sys.executable, str(SUBSCRIBER), "--amqp-uri", stack.env["GAZE_AMQP_URI"],
                             "--events", "job_completed", "--max-events", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "listening on generator.events" in proc.stderr.readline()
        job_id = stack.post("/api/v1/generate/example_01", json={}).json()["jobs"][0]["job_id"]
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    job = stack.wait_job(job_id)
    assert out.split() == ["job_completed", job_id, job["result"]["image_url"], f"seed={job['result']['seed']}"]
