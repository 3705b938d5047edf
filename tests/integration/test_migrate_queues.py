"""`gaze migrate-queues` (operations/queues.py) on the real RabbitMQ: an install from before quorum queues,
whose classic queues hold messages, moves to the quorum queues GAZE declares now without losing one, and its
services then run the jobs those messages carry."""
import dataclasses
import os
import subprocess
import sys
import uuid

import pytest
from amqp.exceptions import PreconditionFailed
from kombu import Connection, Exchange, Producer, Queue

from services.generator.service import GeneratorService
from services.jobs.service import JobsService
from services.jobs.store import JobRepository
from shared import events
from tests.helpers import files_for_job, job_row, make_spec, wait_until
from tests.integration.test_generator import all_finished
from tests.integration.test_quorum_queues import queues_of
from tests.stack import create_vhost, delete_vhost

ORDERS = 12


@pytest.fixture
def old_install(settings, pool, clean_jobs):
    """A vhost of its own, as an install from before quorum queues left it: classic `gaze.generate` and the
    jobs service's job_completed queue, holding work orders of pending jobs and an event; settings for it
    (fcfs: the orders wait on the shared line)."""
    vhost, uri = create_vhost("gaze_migrate")
    old = dataclasses.replace(settings, amqp_uri=uri, scheduling="fcfs")
    specs = [make_spec(width=64, height=64, seed=n) for n in range(ORDERS)]
    rows, _ = JobRepository(pool).create([{"id": str(uuid.uuid4()), "preset_slug": spec["preset_slug"],
                                           "label": "migrated", "spec": spec, "seed": spec["seed"]} for spec in specs])
    work = Queue(events.WORK_QUEUE_NAME, exchange=events.WORK_EXCHANGE, routing_key=events.WORK_ROUTING_KEY,
                 durable=True)
    completed = Queue("evt-generator-job_completed--jobs.on_completed", routing_key=events.JOB_COMPLETED,
                      exchange=Exchange(events.EVENTS_EXCHANGE, type="topic", durable=True),
                      durable=True)
    with Connection(uri) as conn:
        producer = Producer(conn.default_channel)
        for row in rows:
            order = events.WorkOrder(job_id=row["id"], spec=row["spec"], created_at=1.0)
            producer.publish(order.model_dump(), exchange=events.WORK_EXCHANGE, routing_key=events.WORK_ROUTING_KEY,
                             serializer="json", declare=[work], headers={"old-install": row["id"]})
        # an event for a job that does not exist: a message the migration must keep, not interpret
        producer.publish({"job_id": str(uuid.uuid4())}, exchange=completed.exchange, routing_key=events.JOB_COMPLETED,
                         serializer="json", declare=[completed])
    yield old, [row["id"] for row in rows]
    delete_vhost(vhost)


def depth(settings, name) -> int:
    """Messages ready in queue `name` (the broker's own answer; rabbitmqctl's figures lag for quorum queues)."""
    with Connection(settings.amqp_uri) as conn:
        return conn.channel().queue_declare(name, passive=True).message_count


def migrate_queues(settings):
    env = dict(os.environ, GAZE_AMQP_URI=settings.amqp_uri, GAZE_DATABASE_URL=settings.database_url)
    return subprocess.run([sys.executable, "-m", "operations.cli", "migrate-queues"], env=env, capture_output=True,
                          text=True, timeout=120)


def test_classic_queues_with_messages_become_quorum_queues_and_their_jobs_run(old_install, container_factory, db):
    settings, job_ids = old_install
    with Connection(settings.amqp_uri) as conn, pytest.raises(PreconditionFailed):
        events.work_queue(settings.max_attempts)(conn.channel()).declare()      # why a migration is needed

    first = migrate_queues(settings)
    assert first.returncode == 0, first.stderr
    assert f"queues: {events.WORK_QUEUE_NAME}: now a quorum queue; {ORDERS} message(s) moved" in first.stdout
    assert "queues: evt-generator-job_completed--jobs.on_completed: now a quorum queue; 1 message(s) moved" in first.stdout
    queues = queues_of(settings.amqp_uri)
    assert queues[events.WORK_QUEUE_NAME]["type"] == "quorum"
    assert depth(settings, events.WORK_QUEUE_NAME) == ORDERS
    assert depth(settings, "evt-generator-job_completed--jobs.on_completed") == 1
    assert not [name for name in queues if name.endswith(".migrating")]
    with Connection(settings.amqp_uri) as conn:      # in their order, headers kept: peek and put back
        line = events.work_queue(settings.max_attempts)(conn.channel())
        peeked = [line.get(no_ack=False) for _ in range(ORDERS)]
        assert [m.payload["job_id"] for m in peeked] == job_ids
        assert [m.headers["old-install"] for m in peeked] == job_ids
        for message in peeked:
            message.requeue()

    again = migrate_queues(settings)
    assert again.returncode == 0 and f"queues: {events.WORK_QUEUE_NAME}: up to date" in again.stdout

    # the services of this version start on the migrated queues and run the jobs the old install accepted
    container_factory(JobsService, settings.nameko_config()).start()
    generator = dataclasses.replace(settings, replica_name="gen-migrated")
    container_factory(GeneratorService, generator.nameko_config(max_workers=1)).start()
    wait_until(lambda: all_finished(db, job_ids), timeout=60, what="the migrated jobs to finish")
    for job_id in job_ids:
        assert (job_row(db, job_id)["status"], job_row(db, job_id)["attempts"]) == ("done", 1)
        assert len(files_for_job(settings.media_root, job_id)) == 1


def test_a_queue_with_consumers_is_left_alone(old_install):
    """Migrating under a running consumer could hand it a message twice or lose its unacked ones: the command
    refuses, names the queue and exits 1; the queue keeps every message."""
    settings, _ = old_install
    with Connection(settings.amqp_uri) as conn:
        channel = conn.channel()
        channel.basic_consume(events.WORK_QUEUE_NAME, callback=lambda message: None)    # an old generator
        refused = migrate_queues(settings)
        assert refused.returncode == 1
        assert f"queues: {events.WORK_QUEUE_NAME}: has consumers: stop the services that use it" in refused.stdout
        channel.close()
    assert queues_of(settings.amqp_uri)[events.WORK_QUEUE_NAME]["type"] == "classic"
    assert depth(settings, events.WORK_QUEUE_NAME) == ORDERS
