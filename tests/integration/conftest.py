"""Fixtures for the integration tests: each exercises one component against the real thing behind its
boundary, in this process: the session's own PostgreSQL database and RabbitMQ vhost (tests/stack.py), the
machine's Redis under a key prefix of the test's own, an S3-protocol server (moto) on a free port, and
nameko containers of the services.

The vhost lives for the whole session, so the durable work queue is purged before each test that uses
it, and every outside subscriber gets its own exclusive queue. Helpers (wait_until, make_spec, the job
events) are in tests/helpers.py, fakes in tests/fakes.py."""
import uuid

import psycopg
import pytest
from kombu import Connection, Exchange, Queue, binding
from nameko.standalone.events import event_dispatcher
from nameko.standalone.rpc import ServiceRpcProxy
from psycopg.rows import dict_row

from services.jobs.service import JobsService
from shared import config, events
from shared.db import open_pool
from tests.helpers import wait_until
from tests.s3_server import moto_s3_server, raw_client, unique_bucket
from tests.stack import create_database, create_vhost, delete_vhost, drop_database

EVENTS_EXCHANGE = Exchange(events.EVENTS_EXCHANGE, type="topic", durable=True)


# --- the session's database and vhost ---------------------------------------------------------------

@pytest.fixture(scope="session")
def test_database():
    name, url = create_database()
    yield url
    drop_database(name)


@pytest.fixture(scope="session")
def test_vhost():
    vhost, uri = create_vhost()
    yield uri
    delete_vhost(vhost)


@pytest.fixture(scope="session")
def media_root(tmp_path_factory):
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def settings(test_database, test_vhost, media_root):
    """Settings for in-process tests: the session's database (migrated) and vhost."""
    from operations.cli import cmd_migrate

    env = {"GAZE_DATABASE_URL": test_database, "GAZE_AMQP_URI": test_vhost, "GAZE_MEDIA_ROOT": str(media_root),
           "GAZE_DISPATCH_SWEEP_SECONDS": "1", "GAZE_REDIS_PREFIX": test_database.rsplit("/", 1)[-1]}
    loaded = config.load(env)
    cmd_migrate(None, loaded)
    return loaded


@pytest.fixture
def db(settings):
    """A plain autocommit connection for assertions and set-up (dict rows)."""
    with psycopg.connect(settings.database_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


@pytest.fixture
def clean_jobs(db):
    db.execute("TRUNCATE jobs.jobs")
    yield db


@pytest.fixture(scope="session")
def pool(settings):
    """A connection pool on the session's database, as the gateway's stores are given one (max_size: enough
    for the racing requests of the idempotency tests)."""
    pool = open_pool(settings.database_url, max_size=8, name="test-integration")
    yield pool
    pool.close()


# --- S3 ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def endpoint():
    """One moto S3 server for the whole run (each test uses buckets of its own)."""
    with moto_s3_server() as url:
        yield url


@pytest.fixture
def bucket(endpoint):
    name = unique_bucket()
    raw_client(endpoint).create_bucket(Bucket=name)
    return name


# --- RabbitMQ ---------------------------------------------------------------------------------------

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


class LinesReader(QueueReader):
    """The work lines: the shared one and every configured checkpoint's (services/jobs/scheduling.py), read
    as one queue: `get` takes from the first with a message."""

    def __init__(self, connection, checkpoints, max_attempts):
        self.lines = [QueueReader(connection, queue) for queue in
                      (events.work_queue(max_attempts),
                       *(events.checkpoint_queue(checkpoint, max_attempts) for checkpoint in checkpoints))]
        self.queue = self.lines[0].queue     # its name, in take()'s message

    def get(self, ack=True):
        return next((message for line in self.lines if (message := line.get(ack)) is not None), None)

    def purge(self):
        for line in self.lines:
            line.purge()


@pytest.fixture
def work_queue(settings):
    """The work lines (the shared one and each configured checkpoint's), emptied before (and after) the test;
    `.take(n)` reads orders off them."""
    with Connection(settings.amqp_uri) as conn:
        reader = LinesReader(conn, settings.checkpoints, settings.max_attempts)
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


# --- the jobs service -------------------------------------------------------------------------------

@pytest.fixture
def jobs_config(settings):
    # One worker: the container handles one message at a time, so events on the same queue are applied
    # strictly in the order they were dispatched (used by the "a later marker event was applied" checks).
    # A module that needs the production number of workers overrides this fixture.
    return settings.nameko_config(max_workers=1)


@pytest.fixture
def jobs_container(container_factory, jobs_config, clean_jobs, work_queue):
    container = container_factory(JobsService, jobs_config)
    container.start()
    return container


@pytest.fixture
def jobs(settings, jobs_container):
    """An RPC proxy to the jobs service running in this process, over an empty jobs table and work queue."""
    with ServiceRpcProxy("jobs", {"AMQP_URI": settings.amqp_uri, "serializer": "json"}, timeout=10) as proxy:
        yield proxy


@pytest.fixture
def dispatch(settings):
    """dispatch(event_type, event): sends a job event the way the generator replicas do."""
    send = event_dispatcher({"AMQP_URI": settings.amqp_uri, "serializer": "json"})

    def dispatch(event_type, event):
        send(events.EVENT_SOURCE, event_type, event.model_dump())

    return dispatch
