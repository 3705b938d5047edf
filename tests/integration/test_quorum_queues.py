"""GAZE's queues on the real RabbitMQ (issue 16, shared/broker.py): quorum queues with a delivery limit of
GAZE_MAX_ATTEMPTS, a dead-letter path the jobs service records, and a redelivered job that waits while the
replica running it still says so (JobRepository.claim)."""
import dataclasses
import json
import subprocess
import time

import pytest
from kombu import Connection

from shared import broker, events
from tests.helpers import job_row, make_spec, wait_until


@pytest.fixture
def jobs_config(settings):
    # a replica silent for 1.5 s counts as gone (GAZE_OWNER_SILENCE_SECONDS; 10 s by default)
    return dataclasses.replace(settings, owner_silence_seconds=1.5).nameko_config(max_workers=1)


def queues_of(vhost_uri) -> dict:
    """{name: {"type": ..., "arguments": {...}, "messages": n}} of the vhost, as RabbitMQ lists them."""
    vhost = vhost_uri.rsplit("/", 1)[1].replace("%2F", "/")
    listed = subprocess.run(["rabbitmqctl", "list_queues", "-p", vhost, "name", "type", "arguments", "messages",
                             "--formatter", "json"], capture_output=True, text=True, check=True, timeout=60).stdout
    # arguments: [[name, type, value], ...]
    return {q["name"]: {"type": q["type"], "messages": q["messages"],
                        "arguments": {name: value for name, _, value in q["arguments"] or []}}
            for q in json.loads(listed)}


def test_every_durable_queue_of_the_jobs_service_is_a_quorum_queue_with_the_delivery_limit(settings, jobs):
    jobs.create(make_spec(width=64, height=64), 1)          # declares the job's checkpoint line too
    queues = queues_of(settings.amqp_uri)
    ours = {name: queue for name, queue in queues.items()
            if name.startswith(("gaze.", "rpc-jobs", "evt-generator-")) and name != broker.DEAD_LETTER_QUEUE.name}
    line = events.checkpoint_queue_name(make_spec()["checkpoint"])
    assert {events.WORK_QUEUE_NAME, line, events.WEBHOOKS_QUEUE_NAME, "rpc-jobs",
            "evt-generator-job_completed--jobs.on_completed"} <= set(ours)
    for name, queue in ours.items():
        assert queue["type"] == "quorum", (name, queue)
        assert queue["arguments"]["x-delivery-limit"] == settings.max_attempts, (name, queue)
        assert queue["arguments"]["x-dead-letter-exchange"] == broker.DEAD_LETTER_EXCHANGE.name, (name, queue)
    assert queues[broker.DEAD_LETTER_QUEUE.name]["type"] == "quorum"


def test_a_work_order_whose_consumer_dies_each_time_is_dead_lettered_and_its_job_fails(settings, jobs, db):
    """A consumer that takes the order and dies before any claim is recorded (the connection closes without
    an ack), again and again: the broker delivers it GAZE_MAX_ATTEMPTS + 1 times, then dead-letters it; the
    jobs service records it and fails the job with a readable error instead of the order looping forever."""
    [job_id] = jobs.create(make_spec(width=64, height=64), 1)
    line = events.checkpoint_queue(make_spec()["checkpoint"], settings.max_attempts)
    deliveries = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with Connection(settings.amqp_uri) as conn:     # each pass is a consumer that dies holding the order
            message = line(conn.default_channel).get(no_ack=False)
            if message is None:
                if job_row(db, job_id)["status"] == "failed":
                    break
                continue
            assert message.payload["job_id"] == job_id
            deliveries += 1
            assert deliveries <= settings.max_attempts + 1, "the order came back past its delivery limit"
    assert deliveries == settings.max_attempts + 1
    wait_until(lambda: job_row(db, job_id)["status"] == "failed", timeout=30, what="the job failed")
    assert job_row(db, job_id)["error"] == (f"gave up after {settings.max_attempts + 1} deliveries: the generators"
                                            " that took this job stopped each time before finishing it")
    [letter] = db.execute("SELECT queue, reason, job_id::text AS job_id FROM jobs.dead_letters"
                          " WHERE job_id = %s", (job_id,)).fetchall()
    assert (letter["queue"], letter["reason"]) == (line.name, "delivery_limit")


def test_a_redelivered_job_waits_while_the_replica_running_it_says_so(jobs, db):
    """The broker redelivers an order whenever its consumer's connection goes (a broker node stopped), while
    the replica may go on running the job: the copy waits (claim answers wait) while that replica names
    the job in its line requests, and runs once it stops naming it, or falls silent."""
    [named, silent] = jobs.create(make_spec(width=64, height=64), 2)
    for job_id in (named, silent):
        assert jobs.claim(job_id, "replica-a", False)["run"] is True
    jobs.assign_line({"replica": "replica-a", "running": [named, silent]})

    answer = jobs.claim(named, "replica-b", True)
    assert (answer["run"], answer["wait"]) == (False, True)
    assert "replica-a" in answer["reason"]
    assert jobs.claim(named, "replica-a", True)["wait"] is True   # its own copy waits for its own run too
    jobs.assign_line({"replica": "replica-a", "running": [silent]})           # the run of `named` ended
    assert jobs.claim(named, "replica-b", True) == {"run": True, "attempt": 2, "reason": None, "wait": False}

    # replica-a says nothing more: after GAZE_OWNER_SILENCE_SECONDS (1.5 s here) it counts as gone
    asked = time.monotonic()
    assert jobs.claim(silent, "replica-b", True)["wait"] is True
    wait_until(lambda: jobs.claim(silent, "replica-b", True)["run"], timeout=15, what="the silent owner's job to run")
    assert time.monotonic() - asked >= 1.0
    assert job_row(db, silent)["replica"] == "replica-b"
