"""Idempotency-Key through the real stack (gunicorn gateway, presets, jobs, generators): a retried POST
with the same key and body gets the same jobs, and no extra job is created."""
import uuid

import psycopg
import pytest

pytestmark = pytest.mark.e2e


def jobs_in_database(stack):
    with psycopg.connect(stack.env["GAZE_DATABASE_URL"]) as conn:
        return conn.execute("SELECT count(*) FROM jobs.jobs").fetchone()[0]


def test_retried_post_with_the_same_key_returns_the_same_jobs(stack):
    key = f"e2e-{uuid.uuid4()}"
    headers = {**stack.headers(), "Idempotency-Key": key}
    body = {"count": 2, "width": 256, "height": 256, "seed": 11}
    before = jobs_in_database(stack)
    first = stack.post("/api/v1/generate/example_01", json=body, headers=headers)
    assert first.status_code == 202, first.text
    again = stack.post("/api/v1/generate/example_01", json=body, headers=headers)
    assert again.status_code == 202, again.text
    assert again.json() == first.json()
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert jobs_in_database(stack) == before + 2
    for job in first.json()["jobs"]:
        assert stack.wait_job(job["job_id"])["status"] == "done"

    other = stack.post("/api/v1/generate/example_01", json={**body, "seed": 12}, headers=headers)
    assert other.status_code == 422
    assert other.json() == {"error": other.json()["error"], "field": "Idempotency-Key"}
    bad = stack.post("/api/v1/generate/example_01", json=body, headers={**stack.headers(), "Idempotency-Key": "x" * 256})
    assert bad.status_code == 400 and bad.json()["field"] == "Idempotency-Key"
    assert jobs_in_database(stack) == before + 2
