"""The replica's runtime: its GPU work in a worker process, watched and replaced (issue 10).

The stress test drives the generator service's own `generate` (claim, worker, store, announce) with
the broker, the RPC and the media store replaced by in-process fakes, thousands of times, with a backend
that logs and does HTTP from its own code while the replica's loop logs too: the pattern that deadlocked
a replica whose backend ran on an eventlet tpool thread. The other tests break the worker on purpose: a
hang, a crash, a kill, a job past its time limit, an idle worker that stops answering.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import signal
import time
import uuid

import eventlet
import eventlet.wsgi
import pytest
from nameko.testing.services import worker_factory

from services.generator import supervisor as supervisor_module
from services.generator.backends import BackendError
from services.generator.service import GeneratorService
from services.generator.supervisor import (CLIENT_CANCEL, JobCancelledByClient, JobTimedOut, WorkerLost,
                                          WorkerStartFailed, WorkerSupervisor)
from shared import config, events, logs
from shared.schemas import GenerationSpec
from tests.helpers import make_spec, wait_until

SCRIPTED = "tests.backends:ScriptedBackend"
log = logging.getLogger("tests.replica_loop")


@pytest.fixture(autouse=True)
def probe_url(monkeypatch):
    """An HTTP server in this (eventlet) process for the backend's requests; its URL reaches the worker
    through the environment it inherits."""
    listener = eventlet.listen(("127.0.0.1", 0))

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    server = eventlet.spawn(eventlet.wsgi.server, listener, app, log_output=False)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
    monkeypatch.setenv("GAZE_TEST_PROBE_URL", url)
    yield url
    server.kill()
    listener.close()


@pytest.fixture
def start_supervisor():
    started = []

    def start(**overrides):
        settings = dataclasses.replace(config.load({}), **{"backend": SCRIPTED, **overrides})
        states = []
        supervisor = WorkerSupervisor(settings, "test-replica", on_state=lambda state, detail: states.append(state))
        supervisor.start()
        started.append(supervisor)
        return supervisor, states

    yield start
    for supervisor in started:
        supervisor.stop()


def spec(**overrides):
    return GenerationSpec(**make_spec(**{"width": 32, "height": 32, "steps": 2, **overrides}))


def run(supervisor, prompt="a lighthouse", **overrides):
    return supervisor.run(str(uuid.uuid4()), spec(prompt=prompt, **overrides), lambda value, maximum: None)


# ---- thousands of jobs


class FakeJobs:
    """jobs.claim answers at once: run it, first attempt."""

    class _Claim:
        def __init__(self):
            self.claim = self

        def call_async(self, job_id, replica, redelivered):
            return self

        def result(self):
            return {"run": True, "attempt": 1}

    def __init__(self):
        self.claim = self._Claim()


class FakeDispatch:
    def __init__(self):
        self.events = []

    def __call__(self, event_type, payload):
        self.events.append((event_type, payload["job_id"]))
        log.info("dispatched %s for %s", event_type, payload["job_id"])     # the loop logs, a lot


class FakeMedia:
    def __init__(self):
        self.saved = {}

    def save(self, relative_path, data):
        assert relative_path not in self.saved, "an image written twice"
        self.saved[relative_path] = len(data)


@pytest.fixture
def replica_logging():
    """Logging as a replica has it (shared/logs.py at INFO, one handler on the root logger): its handler's
    lock is made after monkey-patching, so it is a green lock, as in a real replica."""
    root = logging.getLogger()
    saved = root.level, list(root.handlers)
    handler = logs.configure("generator", config.Settings(), stream=open(os.devnull, "w"))
    yield
    root.setLevel(saved[0])
    root.handlers[:] = saved[1]
    handler.stream.close()


@pytest.mark.timeout(240)
def test_thousands_of_jobs_through_the_replica_and_its_worker_process(start_supervisor, replica_logging):
    jobs_count = 3000
    supervisor, _ = start_supervisor()
    dispatch, media = FakeDispatch(), FakeMedia()
    settings = supervisor.settings
    service = worker_factory(GeneratorService, worker=supervisor, jobs=FakeJobs(), dispatch=dispatch, media=media,
                             replica="stress", config=settings.nameko_config())
    orders = [{"job_id": str(uuid.uuid4()), "spec": make_spec(width=16, height=16, steps=2, seed=n),
               "created_at": time.time()} for n in range(jobs_count)]

    def chatter():     # the replica's loop logging while the backend logs in its own code
        while True:
            log.info("replica loop still here")
            eventlet.sleep(0)

    noise = eventlet.spawn(chatter)
    pool = eventlet.GreenPool(settings.generator_prefetch)
    started = time.monotonic()
    try:
        with eventlet.Timeout(180, AssertionError("the replica stopped moving: a job never ended")):
            for _ in pool.imap(service.generate, orders):
                pass
    finally:
        noise.kill()
    elapsed = time.monotonic() - started
    completed = [job_id for kind, job_id in dispatch.events if kind == events.JOB_COMPLETED]
    failed = [job_id for kind, job_id in dispatch.events if kind == events.JOB_FAILED]
    assert not failed
    assert sorted(completed) == sorted(order["job_id"] for order in orders)      # each once
    assert len(media.saved) == jobs_count
    assert supervisor.restarts == 0
    print(f"{jobs_count} jobs in {elapsed:.1f} s ({elapsed / jobs_count * 1000:.2f} ms per job)")


# ---- a worker that breaks


def test_a_hung_backend_is_found_stuck_killed_and_its_replica_serves_again(start_supervisor):
    supervisor, states = start_supervisor(worker_stall_seconds=1.5)
    first_pid = supervisor.worker_pid
    began = time.monotonic()
    with pytest.raises(WorkerLost, match="^the generator's worker process stopped responding") as lost:
        run(supervisor, "hang")
    assert "no sign of life" in lost.value.detail     # and GAZE_WORKER_STALL_SECONDS: the operator's words
    assert time.monotonic() - began < 1.5 + 3
    assert states[states.index("stuck"):][:2] == ["stuck", "restarting"]
    assert not supervisor.health()[0] or supervisor.serving   # never ok while not serving
    wait_until(lambda: supervisor.serving, timeout=10, what="a fresh worker")
    assert supervisor.worker_pid != first_pid and supervisor.restarts == 1
    image, _ = run(supervisor)
    assert image.png.startswith(b"\x89PNG")


@pytest.mark.parametrize("prompt, cause", [("crash-exit", "exit code 3"), ("crash-segv", "SIGSEGV")])
def test_a_worker_that_crashes_mid_job_loses_the_job_and_is_replaced(start_supervisor, prompt, cause):
    supervisor, states = start_supervisor()
    with pytest.raises(WorkerLost, match="^the generator's worker process crashed while running the job$") as lost:
        run(supervisor, prompt)
    assert cause in lost.value.detail
    assert "restarting" in states
    wait_until(lambda: supervisor.serving, timeout=10, what="a fresh worker")
    assert run(supervisor)[0].png.startswith(b"\x89PNG")


def test_a_killed_worker_loses_its_running_job_and_the_next_worker_runs_the_one_queued_behind(start_supervisor):
    supervisor, _ = start_supervisor()
    running = eventlet.spawn(run, supervisor, "slow:5")
    wait_until(lambda: any(t.started_at for t in supervisor.tickets.values()), what="the first job started")
    queued = eventlet.spawn(run, supervisor, "a second job")
    wait_until(lambda: len(supervisor.tickets) == 2, what="the second job handed over")
    os.kill(supervisor.worker_pid, signal.SIGKILL)
    with pytest.raises(WorkerLost) as lost:
        running.wait()
    assert "SIGKILL" in lost.value.detail
    image, _ = queued.wait()         # never started in the dead worker: the fresh one ran it
    assert image.png.startswith(b"\x89PNG") and supervisor.restarts == 1


def test_a_job_past_its_time_limit_is_stopped_and_fails_at_once(start_supervisor):
    supervisor, _ = start_supervisor(job_timeout_seconds=1.0)
    began = time.monotonic()
    with pytest.raises(JobTimedOut, match="time limit of 1 s"):
        run(supervisor, "slow:30")
    assert time.monotonic() - began < 4
    assert supervisor.restarts == 0      # it stopped when asked: the worker (and its model) stays
    assert run(supervisor)[0].png.startswith(b"\x89PNG")


def test_a_job_that_ignores_its_time_limit_is_ended_by_killing_its_worker(start_supervisor, monkeypatch):
    monkeypatch.setattr(supervisor_module, "KILL_GRACE_SECONDS", 1.0)
    supervisor, _ = start_supervisor(job_timeout_seconds=1.0)
    with pytest.raises(JobTimedOut):
        run(supervisor, "stubborn:60")
    wait_until(lambda: supervisor.serving, timeout=10, what="a fresh worker")
    assert supervisor.restarts == 1


def test_an_idle_worker_that_stops_answering_is_found_stuck(start_supervisor, monkeypatch):
    monkeypatch.setattr(supervisor_module, "PING_INTERVAL", 0.2)
    supervisor, states = start_supervisor(worker_stall_seconds=1.0)
    frozen = supervisor.worker_pid
    os.kill(frozen, signal.SIGSTOP)
    try:
        wait_until(lambda: "stuck" in states, timeout=5, what="the frozen worker found stuck")
        assert not supervisor.health()[0]
        wait_until(lambda: supervisor.serving, timeout=10, what="a fresh worker")
        assert supervisor.worker_pid != frozen
    finally:
        try:
            os.kill(frozen, signal.SIGCONT)
        except ProcessLookupError:
            pass


def test_a_backend_that_cannot_be_built_stops_the_replica_at_start(start_supervisor):
    with pytest.raises(WorkerStartFailed, match="cannot start the tests.backends:Nothing backend"):
        start_supervisor(backend="tests.backends:Nothing")


def test_a_backend_failure_is_the_jobs_error_and_the_worker_stays(start_supervisor):
    supervisor, _ = start_supervisor(backend="preview")
    with pytest.raises(BackendError):
        supervisor.run(str(uuid.uuid4()), spec(width=0), lambda v, m: None)
    assert supervisor.restarts == 0


def test_a_clients_cancel_stops_a_running_job_at_once_and_one_heard_before_its_run_refuses_it(start_supervisor):
    supervisor, _ = start_supervisor()
    running = str(uuid.uuid4())
    began = time.monotonic()
    eventlet.spawn_after(1.0, supervisor.cancel, running, CLIENT_CANCEL)
    with pytest.raises(JobCancelledByClient):
        supervisor.run(running, spec(prompt="slow:30"), lambda value, maximum: None)
    assert time.monotonic() - began < 6
    # the cancel came between the job's claim and its run: the job never takes the worker
    early = str(uuid.uuid4())
    supervisor.cancel(early, CLIENT_CANCEL)
    began = time.monotonic()
    with pytest.raises(JobCancelledByClient):
        supervisor.run(early, spec(prompt="slow:30"), lambda value, maximum: None)
    assert time.monotonic() - began < 0.5
    assert supervisor.restarts == 0 and run(supervisor)[0].png.startswith(b"\x89PNG")
