"""Runs a backend off the eventlet loop and relays its progress.

A backend holds the CPU or blocks in C (Pillow, a CUDA call) for seconds. On the eventlet loop that
would starve the AMQP heartbeats: RabbitMQ would drop the connection and redeliver the job to another
replica while this one still runs it. So `generate` runs on a real OS thread via eventlet.tpool, and
the loop stays free to heartbeat and to publish the progress the thread leaves in a deque.
"""
from __future__ import annotations

import collections
import contextvars
import logging
import os
import socket
import sys
import time

import eventlet
from eventlet import tpool
from eventlet.semaphore import Semaphore
from nameko.extensions import DependencyProvider
from nameko.standalone.events import event_dispatcher

from shared.config import from_nameko
from shared.events import EVENT_SOURCE, GENERATOR_STATUS, GeneratorStatus
from services.generator.backends import make_backend

PROGRESS_INTERVAL = 0.25
GIL_SWITCH_INTERVAL = 0.0001
log = logging.getLogger(__name__)


class BackendRunner:
    """The replica's one GPU. Workers (see `generator_prefetch`) claim their jobs concurrently but take
    turns here, so the next job is claimed while the current one is still generating."""

    def __init__(self, backend):
        self.backend = backend
        self.gpu = Semaphore(1)

    @property
    def name(self):
        return self.backend.name

    def run(self, spec, publish_progress, on_started=lambda: True):
        """Wait for the GPU, then generate on an OS thread; calls on_started() once the backend is running
        (the job_started event: published while the GPU already works, not before) and
        publish_progress(value, max), both from this green thread; when on_started() answers False, no
        progress is relayed (the result will be discarded). Returns (image, backend seconds)."""
        reports = collections.deque()   # appends from the OS thread, pops here: deque ops are atomic
        with self.gpu:
            # in a copy of this green thread's context: the backend's log lines carry the job's fields
            job = eventlet.spawn(tpool.execute, contextvars.copy_context().run, _timed, self.backend.generate, spec,
                                 lambda value, maximum: reports.append((value, maximum)))
            eventlet.sleep(0)   # hand the job to the OS thread now, not after on_started's round trips
            failure = None
            try:
                if on_started() is False:
                    publish_progress = _ignore
            except Exception as exc:   # e.g. no claim answer: still wait for the GPU to be free again
                failure, publish_progress = exc, _ignore
            last_sent, finished, result = None, False, None
            while not finished:
                # wake at the latest every PROGRESS_INTERVAL to relay progress, at once when the job ends
                with eventlet.Timeout(PROGRESS_INTERVAL, False):
                    result = job.wait()
                    finished = True
                last_sent = self._flush(reports, publish_progress, last_sent)
        if failure is not None:
            raise failure
        # Let the job waiting for the GPU start its backend now, before this one stores its PNG and
        # publishes its event (which do not need the GPU): otherwise the GPU idles for those milliseconds.
        eventlet.sleep(0)
        return result

    @staticmethod
    def _flush(reports, publish_progress, last_sent):
        latest = None
        while reports:
            latest = reports.popleft()
        if latest is not None and latest != last_sent:
            publish_progress(*latest)
            return latest
        return last_sent


def _timed(generate, spec, on_progress):
    """The backend's own time, taken on its thread: waits of the green thread are not in it."""
    started = time.monotonic()
    image = generate(spec, on_progress)
    return image, time.monotonic() - started


def _ignore(*args):
    pass


def backend_status(backend, replica: str) -> GeneratorStatus:
    """Ask the backend how it is (on an OS thread: a health probe may block) and say so as an event."""
    health = getattr(backend, "health", None)
    checkpoints = getattr(backend, "checkpoints", None)
    try:
        healthy, detail = tpool.execute(health) if health else (True, f"{backend.name} backend")
        names = list(tpool.execute(checkpoints)) if (checkpoints and healthy) else None
    except Exception as exc:  # a broken probe is itself the finding to report
        healthy, detail, names = False, f"health check failed: {type(exc).__name__}: {exc}", None
    return GeneratorStatus(replica=replica, backend=backend.name, healthy=healthy, detail=detail,
                           checkpoints=names)


class Backend(DependencyProvider):
    """The replica's backend, plus a green thread that reports its health and checkpoints.

    The report runs outside nameko's worker pool on purpose: a replica has one worker, busy for the
    whole of a long job, and a health report must not wait for it."""

    def setup(self):
        settings = from_nameko(self.container.config)
        self.settings = settings
        # The backend's OS thread needs the GIL to start a job and to hand its result back, and the
        # green threads (storing the last image, publishing events) hold it for up to the interpreter's
        # switch interval (5 ms) at a time: measured as a ~5 ms idle GPU between consecutive jobs.
        # 0.1 ms bounds that wait (0.5 ms measured no better than the default); the backends spend their time in C code that releases the GIL anyway.
        sys.setswitchinterval(GIL_SWITCH_INTERVAL)
        self.runner = BackendRunner(make_backend(settings))
        self.replica = replica_name(settings)
        self._reporter = None

    def start(self):
        self._reporter = self.container.spawn_managed_thread(self._report_forever)

    def stop(self):
        if self._reporter is not None:
            self._reporter.kill()

    kill = stop

    def _report_forever(self):
        dispatch = event_dispatcher(self.container.config)
        was_healthy = None
        # Report often at first (1, 2, 4 ... s, then every interval): an event published before the
        # jobs and presets services have declared their queues (they may start after us) is dropped.
        delay = 1.0
        while True:
            status = backend_status(self.runner.backend, self.replica)
            if status.healthy != was_healthy:
                level = logging.INFO if status.healthy else logging.ERROR
                log.log(level, "backend %s is %s: %s%s", status.backend,
                        "ready" if status.healthy else "NOT USABLE", status.detail,
                        "" if status.healthy else " (jobs sent to this replica will fail until it recovers)",
                        extra={"replica": self.replica, "backend": status.backend})
                was_healthy = status.healthy
            try:
                dispatch(EVENT_SOURCE, GENERATOR_STATUS, status.model_dump())
            except Exception:
                log.warning("could not publish the generator status", exc_info=True,
                            extra={"replica": self.replica})
            eventlet.sleep(min(delay, self.settings.status_interval_seconds))
            delay *= 2

    def get_dependency(self, worker_ctx):
        return self.runner


def replica_name(settings) -> str:
    return settings.replica_name or f"{socket.gethostname()}-{os.getpid()}"
