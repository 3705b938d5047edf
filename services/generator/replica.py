"""The replica's worker process as a nameko dependency, and the replica's truth about itself.

`GpuWorker` starts the worker process (WorkerSupervisor) with the service and stops it with it; a
service worker calls `self.worker.run(...)`. Beside it run two green threads outside nameko's worker
pool (a replica's one pool slot is busy for a whole job, and its truth must not wait for that):
- the status reporter: a `generator_status` event at start, on every change of state (idle, busy, stuck,
  restarting), of the model its worker holds, or of the line it serves, and every
  GAZE_STATUS_INTERVAL_SECONDS, with the backend's health from the worker itself;
- the cancel listener (services/generator/cancels.py): a client's cancel stops the job at once;
- when GAZE_GENERATOR_HEALTH_BIND is set, a small HTTP endpoint answering the same truth (200 while the
  replica serves, 503 otherwise) for process supervisors and Kubernetes probes.

The status says what checkpoint-aware scheduling routes by (services/jobs/scheduling.py): the checkpoint the
worker holds (and keeps in memory), what its loads cost (WorkerSupervisor), and `serving`, the checkpoint
line this replica takes work from besides the shared one (None: the shared one only), which the replica's
line steering sets through `serve_line`.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time

import eventlet
import eventlet.wsgi
from eventlet.event import Event
from nameko.extensions import DependencyProvider
from nameko.standalone.events import event_dispatcher

from services.generator.cancels import CancelListener
from services.generator.supervisor import CLIENT_CANCEL, SERVING, WorkerSupervisor
from shared.config import from_nameko
from shared.events import EVENT_SOURCE, GENERATOR_STATUS, GeneratorStatus

log = logging.getLogger(__name__)
MIN_STATUS_SPACING = 0.2     # state changes closer together than this are reported as one


class GpuWorker(DependencyProvider):
    def setup(self):
        self.settings = from_nameko(self.container.config)
        self.replica = replica_name(self.settings)
        self._changed = Event()
        self._last_state = "starting"
        self.serving = None     # the checkpoint line taken from besides the shared one (serve_line)
        self.supervisor = WorkerSupervisor(self.settings, self.replica, on_state=self._on_state,
                                           on_model=self._publish_soon)
        self._health = (False, "not checked yet", None)
        self._threads = []
        self.cancels = None

    def start(self):
        self.supervisor.start()
        self._threads.append(self.container.spawn_managed_thread(self._report_forever))
        # clients' cancels, heard outside the worker pool (services/generator/cancels.py)
        self.cancels = CancelListener(self.settings.amqp_uri, self.replica,
                                      lambda job_id: self.supervisor.cancel(job_id, CLIENT_CANCEL))
        self._threads.append(self.container.spawn_managed_thread(self.cancels.run))
        if self.settings.generator_health_bind:
            host, _, port = self.settings.generator_health_bind.rpartition(":")
            listener = eventlet.listen((host or "0.0.0.0", int(port)))
            self._threads.append(self.container.spawn_managed_thread(
                lambda: eventlet.wsgi.server(listener, self._health_app, log_output=False)))

    def stop(self):
        if self.cancels is not None:
            self.cancels.stop()
        for thread in self._threads:
            thread.kill()
        self.supervisor.stop()

    kill = stop

    def get_dependency(self, worker_ctx):
        return self.supervisor

    def serve_line(self, checkpoint):
        """This replica takes work from `checkpoint`'s line now (None: from the shared line only): its next
        status says so. A switch is routine for a farm of several models: logged at DEBUG only."""
        if checkpoint == self.serving:
            return
        log.debug("replica %s serves the line of %s (was %s)", self.replica, checkpoint, self.serving,
                  extra={"replica": self.replica})
        self.serving = checkpoint
        self._publish_soon()

    # ---- the truth, as an event

    def _on_state(self, state, detail):
        # idle <-> busy flips with every job: worth an event, not a log line
        if state in SERVING:
            level = logging.DEBUG if self._last_state in SERVING else logging.INFO
        else:
            level = logging.INFO if state in ("starting", "stopped") else logging.ERROR
        self._last_state = state
        log.log(level, "replica %s is %s: %s", self.replica, state, detail, extra={"replica": self.replica})
        self._publish_soon()

    def _publish_soon(self):
        """Wake the status reporter: it publishes now (at most every MIN_STATUS_SPACING)."""
        if not self._changed.ready():
            self._changed.send(True)

    def status(self) -> GeneratorStatus:
        healthy, detail, checkpoints = self._health
        supervisor = self.supervisor
        in_service = supervisor.serving
        if not in_service:
            healthy, detail = False, supervisor.state_text
        return GeneratorStatus(replica=self.replica, backend=self.settings.backend, healthy=healthy and in_service,
                               detail=detail, checkpoints=checkpoints if healthy and in_service else None,
                               state=supervisor.state, worker_pid=supervisor.worker_pid,
                               restarts=supervisor.restarts, loaded_checkpoint=supervisor.loaded_checkpoint,
                               resident_checkpoints=supervisor.resident_checkpoints, serving=self.serving,
                               loads=supervisor.loads, load_seconds_total=round(supervisor.load_seconds_total, 3),
                               mean_load_seconds=supervisor.mean_load_seconds,
                               mean_job_seconds=supervisor.mean_job_seconds)

    def _report_forever(self):
        dispatch = event_dispatcher(self.container.config)
        was_healthy, next_probe = None, 0.0
        # Report often at first (1, 2, 4 ... s, then every interval): an event published before the
        # jobs and presets services have declared their queues (they may start after us) is dropped.
        delay = 1.0
        while True:
            self._changed = Event()
            if time.monotonic() >= next_probe:
                self._health = self.supervisor.health()
                next_probe = time.monotonic() + min(delay, self.settings.status_interval_seconds)
                delay *= 2
            status = self.status()
            if status.healthy != was_healthy:
                level = logging.INFO if status.healthy else logging.ERROR
                log.log(level, "backend %s is %s: %s", status.backend, "ready" if status.healthy else "NOT USABLE",
                        status.detail, extra={"replica": self.replica, "backend": status.backend})
                was_healthy = status.healthy
            try:
                dispatch(EVENT_SOURCE, GENERATOR_STATUS, status.model_dump())
            except Exception:
                log.warning("could not publish the generator status", exc_info=True, extra={"replica": self.replica})
            with eventlet.Timeout(max(0.0, next_probe - time.monotonic()), False):
                self._changed.wait()
                if self.supervisor.serving and not self._health[0]:
                    next_probe = 0.0    # back in service: ask the fresh worker's backend at once
                eventlet.sleep(MIN_STATUS_SPACING)

    # ---- the truth, over HTTP

    def _health_app(self, environ, start_response):
        status = self.status()
        body = json.dumps(status.model_dump()).encode()
        start_response("200 OK" if status.healthy else "503 Service Unavailable",
                       [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                        ("Cache-Control", "no-store")])
        return [body]


def replica_name(settings) -> str:
    return settings.replica_name or f"{socket.gethostname()}-{os.getpid()}"
