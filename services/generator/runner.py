"""Runs a backend off the eventlet loop and relays its progress.

A backend holds the CPU or blocks in C (Pillow, a CUDA call) for seconds. On the eventlet loop that
would starve the AMQP heartbeats: RabbitMQ would drop the connection and redeliver the job to another
replica while this one still runs it. So `generate` runs on a real OS thread via eventlet.tpool, and
the loop stays free to heartbeat and to publish the progress the thread leaves in a deque.
"""
from __future__ import annotations

import collections
import time

import eventlet
from eventlet import tpool
from nameko.extensions import DependencyProvider

from shared.config import from_nameko
from services.generator.backends import make_backend

PROGRESS_INTERVAL = 0.25


class BackendRunner:
    def __init__(self, backend):
        self.backend = backend

    @property
    def name(self):
        return self.backend.name

    def run(self, spec, publish_progress):
        """Generate on a worker thread; calls publish_progress(value, max) from the green thread."""
        reports = collections.deque()   # appends from the OS thread, pops here: deque ops are atomic
        started = time.monotonic()
        job = eventlet.spawn(tpool.execute, self.backend.generate, spec,
                             lambda value, maximum: reports.append((value, maximum)))
        last_sent, finished, image = None, False, None
        while not finished:
            # wake at the latest every PROGRESS_INTERVAL to relay progress, at once when the job ends
            with eventlet.Timeout(PROGRESS_INTERVAL, False):
                image = job.wait()
                finished = True
            last_sent = self._flush(reports, publish_progress, last_sent)
        return image, time.monotonic() - started

    @staticmethod
    def _flush(reports, publish_progress, last_sent):
        latest = None
        while reports:
            latest = reports.popleft()
        if latest is not None and latest != last_sent:
            publish_progress(*latest)
            return latest
        return last_sent


class Backend(DependencyProvider):
    def setup(self):
        self.runner = BackendRunner(make_backend(from_nameko(self.container.config)))

    def get_dependency(self, worker_ctx):
        return self.runner
