"""Issue 5's read path through the real stack: polls are answered from the Redis read model, what a
client sees of a job only moves forward, the read model trails the jobs service by a bounded interval,
and an unknown job is never shown as pending."""
import os
import signal
import threading
import time
import uuid

import psycopg
import pytest
import redis
import requests

from shared.contracts.jobs.view import RANK, JobView
from tests.stack import generator_pids

pytestmark = pytest.mark.e2e


def seen_version(job):
    return (RANK[job["status"]], job["attempts"], (job["progress"] or {}).get("value") or 0)


def test_polls_only_ever_move_forward_while_jobs_run(stack):
    ids = []
    for _ in range(3):
        response = stack.post("/api/v1/generate/example_01", json={"count": 10, "width": 256, "height": 256})
        assert response.status_code == 202
        ids += [job["job_id"] for job in response.json()["jobs"]]
    observed = {}   # (poller, job id) -> what that poller saw, in order
    failures = []

    def poll(poller, my_ids):
        session = requests.Session()
        session.headers.update(stack.headers())
        deadline = time.monotonic() + 120
        waiting = set(my_ids)
        while waiting and time.monotonic() < deadline:
            for job_id in list(waiting):
                response = session.get(f"{stack.url}/api/v1/job/{job_id}", timeout=30)
                if response.status_code != 200:
                    failures.append((job_id, response.status_code, response.text))
                    waiting.discard(job_id)
                    continue
                job = response.json()
                observed.setdefault((poller, job_id), []).append(seen_version(job))
                if job["status"] in ("done", "failed"):
                    waiting.discard(job_id)

    # every job has two pollers on their own connections, so reads go through different gateway threads
    # and workers, and each poller's view must only move forward
    slices = [ids[i::2] for i in range(2)] + [ids[i::3] for i in range(3)]
    threads = [threading.Thread(target=poll, args=(n, part)) for n, part in enumerate(slices)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures[:3]
    assert {job_id for _, job_id in observed} == set(ids)
    for (poller, job_id), versions in observed.items():
        assert versions[-1][0] == RANK["done"], (job_id, versions[-1])
        assert versions == sorted(versions), (poller, job_id, versions)
    assert any(len(set(v)) > 1 for v in observed.values()), "some poll saw a job before it was done"


def test_the_read_model_answers_polls_and_trails_the_jobs_service_by_little(stack):
    response = stack.post("/api/v1/generate/example_01", json={"count": 5, "width": 128, "height": 128})
    ids = [job["job_id"] for job in response.json()["jobs"]]
    jobs = [stack.wait_job(job_id) for job_id in ids]
    view = JobView("redis://127.0.0.1:6379/0", prefix=stack.env["GAZE_REDIS_PREFIX"])
    try:
        for job in jobs:
            stored = view.get(job["id"])
            assert {**stored, "queue_position": None} == job, "the poll's answer is the read model's document"
            # written after the jobs service committed `done` (finished_at is that transaction's start)
            lag = view.written_at(job["id"]) - job["finished_at"]
            assert -0.01 <= lag < 2.0, lag
    finally:
        view.close()


def test_a_job_missing_from_the_read_model_is_read_through_and_written_back(stack):
    response = stack.post("/api/v1/generate/example_01", json={"count": 1, "width": 64, "height": 64})
    job_id = response.json()["jobs"][0]["job_id"]
    done = stack.wait_job(job_id)
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    key = f"{stack.env['GAZE_REDIS_PREFIX']}:job:{job_id}"
    client.delete(key)                                   # as after a Redis restart
    assert stack.get(f"/api/v1/job/{job_id}").json() == done
    assert client.exists(key), "the fallback answer was written back"


def test_an_unknown_job_is_a_404_never_pending(stack):
    for _ in range(3):
        unknown = str(uuid.uuid4())
        response = stack.get(f"/api/v1/job/{unknown}")
        assert response.status_code == 404
        assert "not found" in response.json()["error"]


def test_a_pending_job_reads_pending_before_any_generator_could_start_it(stack):
    """Written to the read model before the 202: the first poll is answered from it, not the RPC. The
    generator replicas are paused (SIGSTOP) around the request, so none can claim or start the job
    before the read model is read: what is there was written by the create, and says pending."""
    supervisor = int((stack.media_root.parent / "run" / "supervisord.pid").read_text())
    replicas = generator_pids(supervisor)
    assert len(replicas) == 2, replicas
    view = JobView("redis://127.0.0.1:6379/0", prefix=stack.env["GAZE_REDIS_PREFIX"])
    for pid in replicas.values():
        os.kill(pid, signal.SIGSTOP)
    try:
        response = stack.post("/api/v1/generate/example_01", json={"count": 1, "width": 64, "height": 64})
        assert response.status_code == 202, response.text
        job_id = response.json()["jobs"][0]["job_id"]
        stored = view.get(job_id)
        assert stored is not None, "the read model was written before the 202"
        assert (stored["id"], stored["status"], stored["attempts"], stored["replica"]) == (job_id, "pending", 0, None)
        assert stack.get(f"/api/v1/job/{job_id}").json()["status"] == "pending"
    finally:
        for pid in replicas.values():
            os.kill(pid, signal.SIGCONT)
        view.close()
    with psycopg.connect(stack.env["GAZE_DATABASE_URL"]) as conn:
        assert conn.execute("SELECT count(*) FROM jobs.jobs WHERE id = %s", (job_id,)).fetchone()[0] == 1
    stack.wait_job(job_id)
