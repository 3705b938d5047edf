"""The eventlet trap: a generation that blocks its OS thread for longer than two AMQP heartbeat intervals.

Run on the eventlet loop, such a job would stop the replica's heartbeats; RabbitMQ would drop its
connection and hand the unacknowledged job to the other replica while the first one still runs it, so
the job would start twice. The replica runs the backend in its worker process
(services/generator/supervisor.py) to keep the loop (and its heartbeats) going; this test holds it to that.

The two generator replicas run as separate processes (`python -m operations.runner generator`), as in
production: in one process a blocked loop would freeze both replicas at once, and the redelivered job
could only be picked up after the first run had already finished, which hides the double start."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from kombu import Connection
from nameko.standalone.rpc import ServiceRpcProxy

from services.jobs.service import JobsService
from shared import events
from tests.helpers import make_spec, wait_until

ROOT = Path(__file__).resolve().parents[2]
# Not 2: RabbitMQ sends its own heartbeats every HEARTBEAT/2 seconds, and kombu's consumer loop (which
# nameko 2.14 uses) only sends the client's heartbeat after a full second without any incoming frame. At
# HEARTBEAT=2 the broker's frames arrive about once a second, so that second of silence often never
# comes and even an idle replica is dropped now and then. At 3 the loop heartbeats reliably.
HEARTBEAT = 3
# RabbitMQ checks for client traffic every HEARTBEAT seconds and drops the connection after two silent
# checks in a row, i.e. after 2-3 intervals of silence: a blocked loop is dropped for sure from 9 s on.
GPU_SECONDS = 11


@pytest.fixture
def spawn_generator(settings, tmp_path):
    """Starts a generator replica process on the test database, vhost and media root."""
    started = []

    def spawn(replica_name, **env):
        log_path = tmp_path / f"{replica_name}.log"
        environment = dict(
            os.environ,
            GAZE_AMQP_URI=settings.amqp_uri,
            GAZE_DATABASE_URL=settings.database_url,
            GAZE_MEDIA_ROOT=settings.media_root,
            GAZE_REPLICA_NAME=replica_name,
            PYTHONWARNINGS="ignore",
            **env,
        )
        with open(log_path, "wb") as log:
            process = subprocess.Popen([sys.executable, "-m", "operations.runner", "generator"], cwd=ROOT,
                                       env=environment, stdout=log, stderr=subprocess.STDOUT)
        started.append((process, log_path))
        return process, log_path

    yield spawn

    for process, _ in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # nameko's graceful stop: running jobs finish first
    for process, _ in started:
        try:
            process.wait(timeout=GPU_SECONDS + 10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def work_queue_consumers(settings):
    with Connection(settings.amqp_uri) as conn:
        _, _, consumers = events.work_queue(settings.max_attempts)(conn.default_channel).queue_declare(passive=True)
        return consumers


@pytest.mark.slow
def test_a_long_blocking_generation_completes_once(container_factory, settings, clean_jobs, work_queue,
                                                      subscribe, spawn_generator):
    observed = subscribe(events.JOB_STARTED, events.JOB_COMPLETED, events.JOB_FAILED)
    container_factory(JobsService, settings.nameko_config()).start()
    replicas = [spawn_generator(name, GAZE_BACKEND="simulated", GAZE_SIMULATED_GPU_SECONDS=str(GPU_SECONDS),
                                GAZE_HEARTBEAT=str(HEARTBEAT))
                for name in ("gen-a", "gen-b")]

    def both_consuming():
        for process, log_path in replicas:
            assert process.poll() is None, f"replica exited:\n{log_path.read_text()}"
        return work_queue_consumers(settings) == 2

    wait_until(both_consuming, timeout=30, interval=0.2, what="both generator replicas consuming")

    with ServiceRpcProxy("jobs", {"AMQP_URI": settings.amqp_uri, "serializer": "json"}, timeout=10) as jobs:
        [job_id] = jobs.create(make_spec(width=64, height=64, steps=1), 1)
        job = wait_until(lambda: (j := jobs.get(job_id))["status"] in ("done", "failed") and j,
                         timeout=GPU_SECONDS * 4, interval=0.2, what="the job to finish")

    logs = "\n".join(f"--- {path.name}\n{path.read_text()}" for _, path in replicas)
    assert job["status"] == "done", job["error"]
    assert job["attempts"] == 1, logs
    [completed] = wait_until(lambda: observed.of(events.JOB_COMPLETED, job_id), what="job_completed event")
    assert completed["generation_seconds"] >= GPU_SECONDS
    started = observed.of(events.JOB_STARTED, job_id)
    assert len(started) == 1, f"the job started {len(started)} times: {started}\n{logs}"
    assert started[0]["attempt"] == 1
    assert observed.of(events.JOB_FAILED) == []
    # Both replicas are still connected and the work order was acknowledged, not handed on.
    assert all(process.poll() is None for process, _ in replicas)
    assert work_queue_consumers(settings) == 2, logs
    assert work_queue.drain() == []
