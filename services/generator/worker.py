"""The replica's worker process: runs the backend, and nothing else, in a plain Python interpreter.

`python -m services.generator.worker <fd>`, started by the replica (services/generator/supervisor.py) as a
fresh interpreter (never a fork of the eventlet process: it would carry green locks and a hub along),
talking over the socket `fd` (services/generator/ipc.py). Nothing here imports eventlet: the backend's
code is ordinary blocking Python, and its threads, `logging`, `requests` sessions and queues are real
OS-thread primitives. The backend is built once and keeps its model loaded between jobs: from the shared
Settings the replica sends, and the backend's own settings, which the worker loads from the environment
it inherited from the replica.

Threads: the main thread reads the replica's commands (and answers pings itself: the replica counts a
pong as life only while the worker is idle); jobs run on one job thread, in order, or, for a `pipelined`
backend (ComfyUI queues prompts itself), each on a thread of its own so the engine's queue holds the next
job while one runs. Every message a job thread sends is the backend's own sign of life; "loaded" also tells
the replica which checkpoint the backend holds now, which the replica reports for scheduling.

The worker ends when the replica says stop or when its socket closes (the replica died): it never
outlives its replica.
"""
from __future__ import annotations

import logging
import os
import queue
import socket
import sys
import threading
import time

from services.generator import ipc

log = logging.getLogger("services.generator.worker")
ALIVE_INTERVAL = 1.0    # at most one "alive" message a second per job: the replica needs no more
# a job's error when the backend raised something else than a BackendError (a bug): the traceback is logged
CRASHED = "the image backend failed unexpectedly (the generator's log has the details under this job's id)"


class Link:
    """The worker's end of the socket; `send` may be called from any thread."""

    def __init__(self, sock):
        self.sock = sock
        self._lock = threading.Lock()

    def send(self, *message):
        with self._lock:
            ipc.send(self.sock, message)

    def receive(self):
        return ipc.receive(self.sock)


class WorkerJob:
    """The JobContext (services/generator/backends/base.py) of one job in this worker."""

    def __init__(self, job_id: str, link: Link):
        self.job_id = job_id
        self._link = link
        self._cancel = threading.Event()
        self._started_at = None
        self._last_alive = 0.0

    @property
    def started_at(self):
        return self._started_at

    def started(self):
        if self._started_at is None:
            self._started_at = time.monotonic()
            self._link.send("started", self.job_id)

    def progress(self, value, maximum):
        self._link.send("progress", self.job_id, int(value), int(maximum))

    def alive(self):
        now = time.monotonic()
        if now - self._last_alive >= ALIVE_INTERVAL:
            self._last_alive = now
            self._link.send("alive", self.job_id)

    def submitted(self, handle):
        self._link.send("handle", self.job_id, str(handle))

    def model_loaded(self, checkpoint, seconds, resident=None):
        self._link.send("loaded", self.job_id, str(checkpoint), float(seconds),
                        [str(name) for name in resident] if resident is not None else None)

    def cancel(self):
        self._cancel.set()

    def cancelled(self) -> bool:
        return self._cancel.is_set()


class Worker:
    def __init__(self, backend, link: Link, replica: str = ""):
        self.backend = backend
        self.replica = replica
        self.link = link
        self.jobs: dict[str, WorkerJob] = {}
        self.pipelined = bool(getattr(backend, "pipelined", False))
        self._queue = queue.Queue()
        if not self.pipelined:
            threading.Thread(target=self._run_in_order, name="gaze-job", daemon=True).start()

    def submit(self, job_id, spec_dict):
        from shared.schemas import GenerationSpec

        job = WorkerJob(job_id, self.link)
        self.jobs[job_id] = job
        spec = GenerationSpec.model_validate(spec_dict)
        if self.pipelined:
            threading.Thread(target=self._run, args=(job, spec), name=f"gaze-job-{job_id[:8]}", daemon=True).start()
        else:
            self._queue.put((job, spec))

    def cancel(self, job_id):
        job = self.jobs.get(job_id)
        if job is not None:
            job.cancel()

    def _run_in_order(self):
        while True:
            job, spec = self._queue.get()
            self._run(job, spec)

    def _run(self, job: WorkerJob, spec):
        from services.generator.backends import BackendError, JobCancelled
        from shared import logs

        try:
            with logs.fields(job_id=job.job_id, replica=self.replica):
                if job.cancelled():
                    raise JobCancelled("cancelled before it started")
                if not self.pipelined:
                    job.started()
                image = self.backend.generate(spec, job)
            seconds = time.monotonic() - (job.started_at or time.monotonic())
            self.link.send("done", job.job_id, image.png, image.width, image.height, image.metadata, seconds)
        except BackendError as exc:
            self._send_failed(job, str(exc), crashed=False, detail=getattr(exc, "detail", str(exc)))
        except Exception as exc:  # a bug must still end the job, with a line in the log to fix it from
            log.exception("job %s: the backend crashed", job.job_id, extra={"job_id": job.job_id})
            self._send_failed(job, CRASHED, crashed=True, detail=f"the backend crashed: {type(exc).__name__}: {exc}")
        finally:
            self.jobs.pop(job.job_id, None)

    def _send_failed(self, job, reason, crashed, detail):
        """`reason` is the job's public error (BackendError.public), `detail` the operator's."""
        try:
            self.link.send("failed", job.job_id, reason, crashed, detail)
        except ipc.ChannelClosed:
            pass

    def health(self):
        try:
            healthy, detail = self.backend.health()
            names = self.backend.checkpoints() if healthy else None
            names = list(names) if names is not None else None
        except Exception as exc:  # a broken probe is itself the finding to report
            log.warning("health check failed", exc_info=True)
            healthy, detail, names = False, f"health check failed: {type(exc).__name__}", None
        self.link.send("health", bool(healthy), str(detail), names)


def serve(link: Link) -> int:
    from dataclasses import fields

    from shared import config, logs
    from services.generator.backends import make_backend

    kind, settings_dict, replica = link.receive()
    if kind != "init":
        raise SystemExit(f"expected init, got {kind!r}")
    known = {f.name for f in fields(config.Settings)}
    settings = config.Settings(**{k: v for k, v in settings_dict.items() if k in known})
    logs.configure("generator-worker", settings)
    try:
        # the shared settings come from the replica (above); the backend's own ones (its settings_class:
        # GAZE_COMFYUI_URL, GAZE_MODELS_DIR, ...) from this process's environment, the replica's own
        backend = make_backend(settings, os.environ)
    except Exception as exc:  # a configuration error: the replica reports it and does not start
        log.exception("cannot build the %s backend", settings.backend)
        link.send("fatal", f"cannot start the {settings.backend} backend: {exc}")
        return 2
    # One health check on this thread before any job: it imports what the backend needs (torch, diffusers)
    # once, here, instead of on a job thread and the health thread at the same time (diffusers' lazy
    # module then lost its pipeline classes: "module 'diffusers' has no attribute 'StableDiffusionPipeline'").
    try:
        backend.health()
    except Exception:
        log.warning("the first health check failed", exc_info=True)
    worker = Worker(backend, link, replica)
    link.send("ready", {"backend": backend.name, "pid": os.getpid(), "pipelined": worker.pipelined})
    while True:
        message = link.receive()
        kind = message[0]
        if kind == "job":
            worker.submit(message[1], message[2])
        elif kind == "cancel":
            worker.cancel(message[1])
        elif kind == "ping":
            link.send("pong", message[1])
        elif kind == "health":
            threading.Thread(target=worker.health, name="gaze-health", daemon=True).start()
        elif kind == "stop":
            return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    sock = socket.socket(fileno=int(argv[0]))
    sock.setblocking(True)
    code = 0
    try:
        code = serve(Link(sock))
    except ipc.ChannelClosed:
        pass    # the replica is gone: so is its worker
    finally:
        # daemon job threads may still block in the backend: leave without waiting for them
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    main()
