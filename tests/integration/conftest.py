"""Helpers for the integration tests: they run nameko containers in this process against the session's
real RabbitMQ vhost and PostgreSQL database (see tests/conftest.py).

The vhost lives for the whole session, so the durable work queue is purged before each test that uses
it, and every outside subscriber gets its own exclusive queue."""
import time
import uuid
from pathlib import Path

import pytest
from kombu import Connection, Exchange, Queue, binding

from shared import events

EVENTS_EXCHANGE = Exchange(events.EVENTS_EXCHANGE, type="topic", durable=True)


def wait_until(predicate, timeout=10.0, interval=0.05, what="condition"):
    """Poll `predicate` until it returns something truthy; return that, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)  # patched by eventlet: lets the containers in this process run


def make_spec(**overrides):
    """A GenerationSpec as the presets service would resolve it (small, so the preview renders fast)."""
    spec = {
        "preset_slug": "example_01",
        "preset_name": "Example",
        "prompt": "a lighthouse at dusk",
        "negative": "blurry",
        "checkpoint": "SD15/v1-5-pruned-emaonly.safetensors",
        "width": 128,
        "height": 128,
        "steps": 3,
        "cfg": 6.0,
        "sampler": "euler",
        "seed": None,
        "kind": "preview",
    }
    spec.update(overrides)
    return spec


def job_row(db, job_id):
    return db.execute("SELECT *, id::text AS id FROM jobs.jobs WHERE id = %s", (job_id,)).fetchone()


def files_for_job(media_root, job_id):
    """Every file under the media root whose name carries this job's id (temporary files included)."""
    return sorted(Path(media_root).rglob(f"*{job_id.replace('-', '')}*"))


class QueueReader:
    """Reads an AMQP queue the way an outside program would, with basic.get and a deadline."""

    def __init__(self, connection, queue):
        self.connection = connection
        self.queue = queue(connection.default_channel)
        self.queue.declare()

    def get(self, ack=True):
        message = self.queue.get(no_ack=False, accept=["json"])
        if message is not None and ack:
            message.ack()
        return message

    def take(self, count, timeout=10.0):
        """Exactly `count` messages, waiting up to `timeout` for them to arrive."""
        taken = []

        def enough():
            while len(taken) < count:
                message = self.get()
                if message is None:
                    return False
                taken.append(message)
            return True

        wait_until(enough, timeout, what=f"{count} message(s) on {self.queue.name} (got {len(taken)})")
        return taken

    def drain(self):
        """Whatever is in the queue right now."""
        messages = []
        while (message := self.get()) is not None:
            messages.append(message)
        return messages

    def purge(self):
        self.queue.purge()


@pytest.fixture
def amqp_connection(settings):
    with Connection(settings.amqp_uri) as conn:
        conn.ensure_connection(max_retries=3)
        yield conn


@pytest.fixture
def work_queue(settings):
    """The durable work queue, emptied before (and after) the test; `.take(n)` reads orders off it."""
    with Connection(settings.amqp_uri) as conn:
        reader = QueueReader(conn, events.WORK_QUEUE)
        reader.purge()
        yield reader
        reader.purge()


class EventSubscriber(QueueReader):
    """An outside program's view of the job events: its own exclusive queue bound to generator.events."""

    def __init__(self, connection, *event_types):
        name = f"test-subscriber-{uuid.uuid4().hex[:8]}"
        queue = Queue(name, bindings=[binding(EVENTS_EXCHANGE, routing_key=t) for t in event_types],
                      exclusive=True, auto_delete=True)
        EVENTS_EXCHANGE(connection.default_channel).declare()
        super().__init__(connection, queue)
        self.seen = []

    def collect(self):
        """Read everything that has arrived so far; returns all (event_type, payload) pairs seen."""
        for message in self.drain():
            self.seen.append((message.delivery_info["routing_key"], message.payload))
        return self.seen

    def of(self, event_type, job_id=None):
        return [payload for kind, payload in self.collect()
                if kind == event_type and (job_id is None or payload.get("job_id") == job_id)]


@pytest.fixture
def subscribe(amqp_connection):
    """subscribe("job_started", "job_completed") -> an EventSubscriber bound before anything happens."""
    return lambda *event_types: EventSubscriber(amqp_connection, *event_types)
