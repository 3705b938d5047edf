"""The replica's side of its worker process: starts it, feeds it jobs, watches it, replaces it.

Runs in the replica's eventlet process, on green threads only: the worker is another process
(services/generator/worker.py) reached over a green socket (services/generator/ipc.py), so no green lock,
hub or socket is ever touched by an OS thread. What GPU code does to its process (a segfault, an
out-of-memory kill, a hang in CUDA or ComfyUI code) ends the worker, never the replica's AMQP connection.

The replica's truth, published as its state:
- `starting` / `restarting`: no worker ready yet (the first start, or a replacement after a crash or a stall);
- `idle`: a worker is ready and holds no job;
- `busy`: it holds jobs and shows signs of life from them (steps, engine events);
- `stuck`: busy, but no sign of life for GAZE_WORKER_STALL_SECONDS (or an idle worker that did not answer
  a ping as long): it is killed at once and replaced, and its state says `restarting` until a fresh one
  is ready. A stuck or restarting replica is never reported healthy.

A job's outcome when its worker goes away: a job the worker had not started yet is handed to the next
worker unchanged; a started one raises WorkerLost (the service retries it up to GAZE_MAX_ATTEMPTS). A job
running past GAZE_JOB_TIMEOUT_SECONDS (counted from its start) is cancelled; if it has not ended
KILL_GRACE_SECONDS later, its worker is killed. Either way it fails with JobTimedOut. Whatever a killed
worker left on its engine (ComfyUI prompts, queued or running) is removed by the replica itself.

The model the worker holds, as the replica reports it for checkpoint-aware scheduling: the backend says
when a job changed it ("loaded", services/generator/ipc.py), and the supervisor keeps `loaded_checkpoint`
and `resident_checkpoints` (None again once the worker is gone: a fresh worker holds nothing), the loads
since the replica started with their total time, and recent loads' and jobs' mean times (a job's GPU time
without the load inside it), which the scheduler weighs a switch by.

Each of these failures is said twice (services/generator/backends/base.py `Reason`): what the job's client
reads (WORKER_CRASHED, ...: nothing about signals, settings or processes they cannot act on) and the
operator's detail ("the worker process exited unexpectedly (killed by SIGSEGV)"), logged under the job id.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import eventlet
from eventlet.queue import Empty, LightQueue

from services.generator import ipc
from services.generator.backends import BackendError, GeneratedImage, remove_orphans
from services.generator.backends.base import JobError, Reason

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]       # so the worker imports this checkout's packages
PROGRESS_INTERVAL = 0.25      # progress is relayed to the jobs service at most this often per job
WATCH_INTERVAL = 0.5          # how often the watchdog looks at the worker
PING_INTERVAL = 5.0           # an idle worker is pinged this often
KILL_GRACE_SECONDS = 10.0     # a job past its time limit has this long to stop after its cancel
HEALTH_TIMEOUT = 20.0         # the backend's own health probe (ComfyUI's /system_stats ...) gets this long
START_TIMEOUT = 120.0         # a new worker builds its backend and probes it once within this (or the stall limit)
RESTART_BACKOFF = (0.5, 1, 2, 5, 10, 30)
MEAN_WEIGHT = 0.2             # the latest load's (or job's) share in its mean: recent ones count most
STATES = ("starting", "idle", "busy", "stuck", "restarting", "stopped")
SERVING = ("idle", "busy")


# what a job's client reads when its worker went away under it (the reason why is the operator's detail)
WORKER_CRASHED = "the generator's worker process crashed while running the job"
WORKER_STALLED = "the generator's worker process stopped responding while running the job"
WORKER_REPLACED = "the generator's worker process was replaced while running the job"


class WorkerLost(JobError):
    """The worker process died or stalled while running this job: a retry may well succeed (so not a
    BackendError). Its str and `public` are what the job's client reads, `detail` why the worker went."""


class JobTimedOut(BackendError):
    """The job ran past its time limit and was stopped."""


class JobCancelledByClient(Exception):
    """The job's client cancelled it (jobs.cancel, heard as job_cancelled): its work and result are
    dropped, and nothing is reported (the jobs service recorded the cancel)."""


CLIENT_CANCEL = "cancelled by its client"
CANCELS_REMEMBERED = 1000    # the latest clients' cancels a replica remembers (every replica hears every one)


class WorkerStartFailed(Exception):
    """The backend cannot be built at all (a configuration error): the replica must not start."""


@dataclass
class Ticket:
    """One job handed to the worker, as the replica follows it."""

    job_id: str
    spec: dict
    inbox: LightQueue = field(default_factory=LightQueue)
    worker: "Incarnation | None" = None
    started_at: float | None = None
    handles: list = field(default_factory=list)
    cancel_reason: str | None = None
    cancelled_at: float | None = None
    load_seconds: float = 0.0       # of the backend's seconds for this job, those it spent loading its model


@dataclass
class Incarnation:
    """One worker process, from its start to its end."""

    number: int
    process: subprocess.Popen
    sock: object
    ready: bool = False
    info: dict = field(default_factory=dict)
    last_life: float = field(default_factory=time.monotonic)
    ping_sent: float | None = None
    pings: int = 0
    kill_reason: str | None = None      # the operator's words (the replica's state detail, the log)
    kill_public: str = WORKER_CRASHED   # what a job that was running in it says
    kill_state: str = "restarting"


class WorkerSupervisor:
    def __init__(self, settings, replica: str, on_state=lambda state, detail: None, on_model=lambda: None):
        self.settings = settings
        self.replica = replica
        self.on_state = on_state
        self.on_model = on_model     # called when the model the worker holds changes (loaded_checkpoint)
        self.state, self.detail = "starting", "starting the worker process"
        self.tickets: dict[str, Ticket] = {}
        self.cancelled_by_client: dict[str, None] = {}   # the latest clients' cancels, oldest first
        self.waiting: list[Ticket] = []        # accepted while no worker was ready
        self.current: Incarnation | None = None
        self.incarnations = 0
        self.restarts = 0
        self.loaded_checkpoint: str | None = None
        self.resident_checkpoints: list[str] | None = None
        self.loads = 0
        self.load_seconds_total = 0.0
        self.mean_load_seconds: float | None = None
        self.mean_job_seconds: float | None = None
        self._health_answers = LightQueue()
        self._stopping = False
        self._threads = []

    # ---- life cycle

    @property
    def start_timeout(self) -> float:
        return max(START_TIMEOUT, self.settings.worker_stall_seconds)

    def start(self):
        """Start the first worker and wait until its backend is built: a configuration error stops the
        replica here (WorkerStartFailed) instead of failing every job later."""
        self._launch(first=True)
        self._threads.append(eventlet.spawn(self._watch))

    def stop(self):
        self._stopping = True
        for thread in self._threads:
            thread.kill()
        worker = self.current
        if worker is not None:
            try:
                ipc.send(worker.sock, ("stop",))
            except ipc.ChannelClosed:
                pass
            try:
                with eventlet.Timeout(5):
                    worker.process.wait()
            except eventlet.Timeout:
                worker.process.kill()
            worker.sock.close()
        self._set_state("stopped", "the replica is stopping")

    def _launch(self, first=False):
        delay_index = 0
        while not self._stopping:
            try:
                self._spawn()
                return
            except WorkerStartFailed:
                if first:
                    raise
                log.error("the worker process cannot start; retrying", exc_info=True,
                          extra={"replica": self.replica})
            except (ipc.ChannelClosed, eventlet.Timeout, OSError) as exc:
                if first and isinstance(exc, eventlet.Timeout):
                    raise WorkerStartFailed(f"the worker process did not get ready within "
                                            f"{self.start_timeout:g} s") from None
                log.error("the worker process did not start (%s); retrying", exc, extra={"replica": self.replica})
            eventlet.sleep(RESTART_BACKOFF[min(delay_index, len(RESTART_BACKOFF) - 1)])
            delay_index += 1

    def _spawn(self):
        parent_end, child_end = socket.socketpair()
        env = dict(os.environ)      # the worker reads its backend's own settings from it (backends/__init__.py)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        # A fresh interpreter (fork + exec), in its own session: a Ctrl-C meant for the replica's terminal
        # must not kill a job half-way; the worker leaves by itself when its socket closes.
        process = subprocess.Popen([sys.executable, "-m", "services.generator.worker", str(child_end.fileno())],
                                   pass_fds=(child_end.fileno(),), env=env, start_new_session=True)
        child_end.close()
        self.incarnations += 1
        worker = Incarnation(self.incarnations, process, parent_end)
        try:
            ipc.send(parent_end, ("init", asdict(self.settings), self.replica))
            with eventlet.Timeout(self.start_timeout):
                kind, *fields = ipc.receive(parent_end)
        except BaseException:
            process.kill()
            parent_end.close()
            raise
        if kind == "fatal":
            process.wait()
            parent_end.close()
            raise WorkerStartFailed(fields[0])
        worker.ready, worker.info, worker.last_life = True, fields[0], time.monotonic()
        self.current = worker
        self._threads.append(eventlet.spawn(self._read, worker))
        log.info("worker process %d ready (%s backend)", process.pid, worker.info.get("backend"),
                 extra={"replica": self.replica, "worker_pid": process.pid})
        for ticket in self.waiting:
            self._send_job(worker, ticket)
        self.waiting = []
        self._update_state()

    # ---- jobs

    def run(self, job_id: str, spec, publish_progress, on_started=lambda: True):
        """Hand the job to the worker and follow it to its end. Calls on_started() when the backend
        starts it (the job turns `processing` then, not when it is queued) and publish_progress(value,
        max) at most every PROGRESS_INTERVAL, both from this green thread; when on_started() answers
        False or raises, the job is cancelled in the worker and its result discarded. Returns (image,
        backend seconds); raises BackendError (the job's failure), JobTimedOut, WorkerLost or
        JobCancelledByClient (also at once, for a job whose client's cancel was heard just before)."""
        if job_id in self.cancelled_by_client:
            raise JobCancelledByClient(job_id)
        ticket = Ticket(job_id, spec.model_dump())
        self.tickets[job_id] = ticket
        if self.current is not None and self.current.ready and self.current.kill_reason is None:
            self._send_job(self.current, ticket)
        else:
            self.waiting.append(ticket)
        self._update_state()
        failure, latest, relayed, next_relay = None, None, None, 0.0
        try:
            while True:
                # a step not relayed yet goes out when its PROGRESS_INTERVAL comes, not with the next message
                pending = latest is not None and latest != relayed
                wait = max(next_relay - time.monotonic(), 0.001) if pending else PROGRESS_INTERVAL
                try:
                    kind, *fields = ticket.inbox.get(timeout=wait)
                except Empty:
                    kind = None
                if kind == "started":
                    try:
                        if on_started() is False:
                            publish_progress = _ignore
                            self.cancel(job_id, "its claim said not to run it")
                    except Exception as exc:   # e.g. no claim answer: stop the job, then report
                        failure, publish_progress = exc, _ignore
                        self.cancel(job_id, "its claim could not be checked")
                elif kind == "progress":
                    latest = tuple(fields)
                # every step relayed would be one event per step per replica (28 a second on a fast GPU),
                # which the jobs service and the broker pay for: the latest value, at most every interval, and
                # the last one when the job is done (a follower sees it reach its maximum)
                if latest is not None and latest != relayed and (time.monotonic() >= next_relay or kind == "done"):
                    publish_progress(*latest)
                    relayed, next_relay = latest, time.monotonic() + PROGRESS_INTERVAL
                if kind in ("done", "failed", "lost"):
                    break
            if failure is not None:
                raise failure
            if ticket.cancel_reason == CLIENT_CANCEL:
                raise JobCancelledByClient(job_id)   # even when it finished meanwhile: its image is dropped
            if ticket.cancel_reason == "timeout" and kind != "done":
                raise JobTimedOut(*self.timed_out())
            if kind == "lost":
                raise WorkerLost(*fields[:2])
            if kind == "failed":    # (public, crashed[, detail])
                raise BackendError(fields[0], fields[2] if len(fields) > 2 else None)
            png, width, height, metadata, seconds = fields
            return GeneratedImage(png, width, height, metadata), seconds
        finally:
            self.tickets.pop(job_id, None)
            if ticket in self.waiting:
                self.waiting.remove(ticket)
            self._update_state()

    def cancel(self, job_id: str, reason: str):
        if reason == CLIENT_CANCEL:
            # remembered for a while: the cancel may come between the job's claim and this replica's
            # run(), and the job must not then take the GPU for its whole length
            self.cancelled_by_client[job_id] = None
            while len(self.cancelled_by_client) > CANCELS_REMEMBERED:
                self.cancelled_by_client.pop(next(iter(self.cancelled_by_client)))
        ticket = self.tickets.get(job_id)
        if ticket is None or ticket.cancel_reason is not None:
            return
        ticket.cancel_reason, ticket.cancelled_at = reason, time.monotonic()
        if ticket in self.waiting:
            self.waiting.remove(ticket)
            ticket.inbox.put(("failed", f"cancelled: {reason}", False))
        elif ticket.worker is not None:
            self._send(ticket.worker, ("cancel", job_id))

    def timed_out(self) -> Reason:
        limit = f"the job exceeded its time limit of {self.settings.job_timeout_seconds:g} s"
        return Reason(f"{limit} and was stopped", f"{limit} (GAZE_JOB_TIMEOUT_SECONDS) and was stopped")

    def _send_job(self, worker, ticket):
        if not any(t.worker is worker for t in self.tickets.values()):
            worker.last_life = time.monotonic()   # an idle worker's stall clock starts with its first job
        ticket.worker = worker
        self._send(worker, ("job", ticket.job_id, ticket.spec))

    def _send(self, worker, message):
        try:
            ipc.send(worker.sock, message)
        except ipc.ChannelClosed:
            pass    # the reader sees the worker's end and hands its jobs on

    # ---- what the worker says

    def _read(self, worker):
        try:
            while True:
                self._on_message(worker, ipc.receive(worker.sock))
        except ipc.ChannelClosed:
            pass
        except Exception:   # a message we cannot read: the stream cannot be trusted any more
            log.exception("unreadable message from the worker process", extra={"replica": self.replica})
            if worker.kill_reason is None:
                worker.kill_reason = "the worker process sent an unreadable message"
        self._worker_gone(worker)

    def _on_message(self, worker, message):
        kind, *fields = message
        if kind == "pong":
            worker.ping_sent = None
            return
        if kind == "health":
            self._health_answers.put(tuple(fields))
            return
        worker.last_life = time.monotonic()     # every job message is the backend's own sign of life
        ticket = self.tickets.get(fields[0])
        if kind == "loaded":
            self._model_loaded(worker, ticket, *fields[1:])
            return
        if ticket is None:
            return      # a job given up on meanwhile
        if kind == "done":
            self._job_done(ticket, fields[5])
        if kind == "started":
            ticket.started_at = time.monotonic()
        elif kind == "handle":
            ticket.handles.append(fields[1])
            return
        elif kind == "alive":
            return
        ticket.inbox.put((kind, *fields[1:]))

    def _model_loaded(self, worker, ticket, checkpoint, seconds, resident):
        """The worker's backend changed its model, for `ticket`'s job (None: a job given up on meanwhile: the
        model changed all the same)."""
        if worker is not self.current:
            return      # a worker on its way out: what it holds goes with it
        if ticket is not None:
            ticket.load_seconds += seconds
        self.loads += 1
        self.load_seconds_total += seconds
        self.mean_load_seconds = _mean(self.mean_load_seconds, seconds)
        self.loaded_checkpoint, self.resident_checkpoints = checkpoint, resident
        log.debug("worker holds %s now (loaded in %.2f s)", checkpoint, seconds,
                  extra={"replica": self.replica, "checkpoint": checkpoint})
        self.on_model()

    def _job_done(self, ticket, seconds):
        self.mean_job_seconds = _mean(self.mean_job_seconds, max(0.0, seconds - ticket.load_seconds))

    def _forget_model(self):
        """The worker is gone, and with it the model it held; the counts and means are the replica's."""
        if self.loaded_checkpoint is None and self.resident_checkpoints is None:
            return
        self.loaded_checkpoint = self.resident_checkpoints = None
        self.on_model()

    def _worker_gone(self, worker):
        if self._stopping:
            return
        if worker.process.poll() is None:
            worker.process.kill()
        with eventlet.Timeout(10, False):
            worker.process.wait()
        code = worker.process.returncode
        worker.sock.close()
        reason = worker.kill_reason or f"the worker process exited unexpectedly ({_describe_exit(code)})"
        log.error("worker process %d gone: %s", worker.process.pid, reason,
                  extra={"replica": self.replica, "worker_pid": worker.process.pid})
        if self.current is worker:
            self.current = None
            self.restarts += 1
            self._forget_model()
        handed = [t for t in self.tickets.values() if t.worker is worker]
        handles = [h for t in handed for h in t.handles]
        if handles:
            eventlet.spawn(self._remove_orphans, handles)
        for ticket in handed:
            ticket.worker = None
            if ticket.cancel_reason == "timeout":
                public, detail = self.timed_out()
                ticket.inbox.put(("failed", public, False, detail))
            elif ticket.started_at is not None:
                ticket.inbox.put(("lost", worker.kill_public, reason))
            elif ticket.cancel_reason is not None:
                ticket.inbox.put(("failed", f"cancelled: {ticket.cancel_reason}", False))
            else:
                ticket.handles = []
                self.waiting.append(ticket)     # never started: the next worker runs it
        self._set_state("restarting", reason)
        eventlet.spawn(self._launch)

    def _remove_orphans(self, handles):
        try:
            outcome = remove_orphans(self.settings, handles)
        except Exception as exc:
            outcome = f"could not remove them: {type(exc).__name__}: {exc}"
        log.warning("work the killed worker left on its engine (%s): %s", ", ".join(handles), outcome,
                    extra={"replica": self.replica})

    # ---- the watchdog

    def _watch(self):
        while True:
            eventlet.sleep(WATCH_INTERVAL)
            worker = self.current
            if worker is None or worker.kill_reason is not None:
                continue
            now = time.monotonic()
            stall = self.settings.worker_stall_seconds
            held = [t for t in self.tickets.values() if t.worker is worker]
            for ticket in held:
                if (ticket.started_at is not None and ticket.cancel_reason is None
                        and now - ticket.started_at > self.settings.job_timeout_seconds):
                    log.warning("job %s: past its time limit of %g s; stopping it", ticket.job_id,
                                self.settings.job_timeout_seconds, extra={"job_id": ticket.job_id,
                                                                          "replica": self.replica})
                    self.cancel(ticket.job_id, "timeout")
                elif (ticket.cancel_reason is not None and ticket.cancelled_at is not None
                      and now - ticket.cancelled_at > KILL_GRACE_SECONDS):
                    self._kill(worker, "restarting", f"job {ticket.job_id} did not stop within "
                                                     f"{KILL_GRACE_SECONDS:g} s of its cancel", WORKER_REPLACED)
                    break
            else:
                if held and now - worker.last_life > stall:
                    self._kill(worker, "stuck", f"the worker showed no sign of life for {now - worker.last_life:.0f} s "
                                                f"while running a job (GAZE_WORKER_STALL_SECONDS={stall:g})",
                               WORKER_STALLED)
                elif not held:
                    if worker.ping_sent is not None and now - worker.ping_sent > stall:
                        self._kill(worker, "stuck", f"the idle worker did not answer a ping for {stall:g} s",
                                   WORKER_STALLED)
                    elif worker.ping_sent is None and now - worker.last_life > PING_INTERVAL:
                        worker.ping_sent, worker.last_life = now, now
                        worker.pings += 1
                        self._send(worker, ("ping", worker.pings))

    def _kill(self, worker, state, reason, public):
        """Kill the worker (SIGKILL: a stuck process may ignore anything else); the reader then sees its
        end and hands its jobs on. `reason` is the operator's, `public` what a job running in it says."""
        worker.kill_reason, worker.kill_public = reason, public
        log.error("killing worker process %d: %s", worker.process.pid, reason,
                  extra={"replica": self.replica, "worker_pid": worker.process.pid})
        self._set_state(state, reason)
        try:
            worker.process.send_signal(signal.SIGKILL)
        except ProcessLookupError:
            pass

    # ---- state and health

    def _update_state(self):
        worker = self.current
        if self._stopping or worker is None or worker.kill_reason is not None:
            return
        held = sum(1 for t in self.tickets.values() if t.worker is worker)
        if held:
            self._set_state("busy", f"{held} job(s) in the worker process")
        else:
            self._set_state("idle", "waiting for work")

    def _set_state(self, state, detail):
        if (state, detail) == (self.state, self.detail):
            return
        changed = state != self.state
        self.state, self.detail = state, detail
        if changed:
            self.on_state(state, detail)

    @property
    def serving(self) -> bool:
        return self.state in SERVING

    @property
    def state_text(self) -> str:
        """The state and its reason, as health details say it: "worker restarting: <why>"."""
        return f"worker {self.state}: {self.detail}"

    @property
    def worker_pid(self):
        return self.current.process.pid if self.current is not None else None

    def health(self) -> tuple[bool, str, list | None]:
        """(ok, detail, checkpoints) from the worker's backend; never ok while the worker is not serving."""
        worker = self.current
        if worker is None or not self.serving:
            return False, self.state_text, None
        while True:     # drop answers to probes that timed out earlier
            try:
                self._health_answers.get_nowait()
            except Empty:
                break
        self._send(worker, ("health",))
        try:
            healthy, detail, checkpoints = self._health_answers.get(timeout=HEALTH_TIMEOUT)
        except Empty:
            return False, f"the backend's health check did not answer within {HEALTH_TIMEOUT:g} s", None
        if not self.serving:
            return False, self.state_text, None
        return healthy, detail, checkpoints


def _ignore(*args):
    pass


def _mean(mean, value):
    """`mean` moved towards `value` (an exponentially weighted moving average); the first value as it is."""
    return value if mean is None else mean + MEAN_WEIGHT * (value - mean)


def _describe_exit(code) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
