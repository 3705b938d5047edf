"""Stand-ins for the generator's worker process and for a job's context, shared by the supervisor, model-reporting
and backend tests: a process the supervisor can poll, signal and kill, its socket, the worker's link to the
replica, a job held by a worker, and a JobContext that records the model loads its backend reports."""
from __future__ import annotations

import signal
import time

from services.generator import supervisor as sup
from services.generator.backends.base import CallbackContext


class FakeProcess:
    pid = 4242

    def __init__(self, returncode=None):
        self.returncode = returncode
        self.signals = []

    def poll(self):
        return self.returncode

    def kill(self):
        self.returncode = -signal.SIGKILL

    def wait(self):
        return self.returncode

    def send_signal(self, number):
        self.signals.append(number)
        self.returncode = -number


class FakeSock:
    def close(self):
        pass


class Link:
    """The worker's end of the socket, keeping what it sent."""

    def __init__(self):
        self.sent = []

    def send(self, *message):
        self.sent.append(message)


def running_job(supervising, worker, job_id="job-1"):
    """A job the supervisor handed to `worker` (now its current one), started just now."""
    supervising.current = worker
    ticket = sup.Ticket(job_id, {})
    ticket.worker, ticket.started_at = worker, time.monotonic()
    supervising.tickets[job_id] = ticket
    return ticket


class LoadRecorder(CallbackContext):
    """A job's context that keeps what the backend reported about model loads."""

    def __init__(self):
        super().__init__()
        self.loads = []

    def model_loaded(self, checkpoint, seconds, resident=None):
        self.loads.append((checkpoint, seconds, resident))
