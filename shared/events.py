"""The messaging contract: the work queue the generators share, and the job events they publish.

Sender and receiver both import from here, so names and payloads are defined exactly once.

Job events are ordinary nameko events: published by the `generator` service on the topic exchange
`generator.events` with the event name as routing key, JSON-encoded, persistent. Any outside program
can bind its own queue to that exchange (see examples/job_subscriber.py).
"""
from __future__ import annotations

import hashlib
import time
from typing import Optional

from kombu import Exchange, Queue
from pydantic import BaseModel, Field

from shared import broker
from shared.contracts import jobs as jobs_contract
from shared.schemas import GenerationSpec

# --- work queues: the lines jobs wait in ------------------------------------------------------------
# Declared by both the jobs service (publisher) and the generators (consumers), so a job published
# before any generator ever started waits in the queue instead of being dropped by an unbound exchange.
# One shared line (`gaze.generate`: every replica takes from it; GAZE_SCHEDULING=fcfs puts every job there)
# and, with checkpoint-aware scheduling, one line per checkpoint, which a replica takes from while the jobs
# service's scheduler has it serve that checkpoint (services/jobs/scheduling.py). All are quorum queues whose
# delivery limit is GAZE_MAX_ATTEMPTS (shared/broker.py), which is why they are made from it.
WORK_EXCHANGE = Exchange("gaze.work", type="direct", durable=True)
WORK_ROUTING_KEY = "generate"
WORK_QUEUE_NAME = "gaze.generate"
_NAME_BYTES = 200    # AMQP names are at most 255 bytes; longer checkpoint names are hashed


def checkpoint_line(checkpoint: str) -> str:
    """The part of a checkpoint's queue name and routing key that names it: the checkpoint itself, or a
    hash of it when it is too long for an AMQP name."""
    raw = checkpoint.encode("utf-8", "surrogatepass")
    if len(raw) <= _NAME_BYTES and checkpoint.isprintable():
        return checkpoint
    return "sha1-" + hashlib.sha1(raw).hexdigest()


def checkpoint_routing_key(checkpoint: str) -> str:
    return f"checkpoint.{checkpoint_line(checkpoint)}"


def work_queue(max_attempts: int) -> Queue:
    """The shared line."""
    return broker.quorum(Queue(WORK_QUEUE_NAME, exchange=WORK_EXCHANGE, routing_key=WORK_ROUTING_KEY), max_attempts)


def checkpoint_queue_name(checkpoint: str) -> str:
    return f"{WORK_QUEUE_NAME}.{checkpoint_line(checkpoint)}"


def checkpoint_queue(checkpoint: str, max_attempts: int) -> Queue:
    """The line of `checkpoint`'s jobs on the work exchange."""
    return broker.quorum(Queue(checkpoint_queue_name(checkpoint), exchange=WORK_EXCHANGE,
                               routing_key=checkpoint_routing_key(checkpoint)), max_attempts)


class WorkOrder(BaseModel):
    """One job handed to the generators."""

    job_id: str
    spec: GenerationSpec
    created_at: float


# --- job events -------------------------------------------------------------------------------
EVENT_SOURCE = "generator"               # nameko service name that dispatches them
EVENTS_EXCHANGE = f"{EVENT_SOURCE}.events"

JOB_STARTED = "job_started"
JOB_PROGRESS = "job_progress"
JOB_COMPLETED = "job_completed"
JOB_FAILED = "job_failed"
GENERATOR_STATUS = "generator_status"


def _now():
    return time.time()


class JobStarted(BaseModel):
    job_id: str
    replica: str
    attempt: int
    at: float = Field(default_factory=_now)


class JobProgress(BaseModel):
    job_id: str
    value: int
    max: int
    at: float = Field(default_factory=_now)


class JobCompleted(BaseModel):
    job_id: str
    replica: str
    relative_path: str
    seed: int
    width: int
    height: int
    generation_seconds: float
    metadata: dict
    at: float = Field(default_factory=_now)


class JobFailed(BaseModel):
    job_id: str
    replica: str
    error: str
    at: float = Field(default_factory=_now)


REPLICA_STATES = ("starting", "idle", "busy", "stuck", "restarting", "stopped")


class GeneratorStatus(BaseModel):
    """Published by every generator replica at start, on every change of its state and periodically:
    which backend it runs, whether it can serve (its worker process is idle or busy and its backend
    works), and which checkpoints it can load (the presets service validates checkpoint overrides against
    these; the jobs service keeps the replica list for health checks). A `stuck` or `restarting` replica
    is never `healthy`."""

    replica: str
    backend: str
    healthy: bool
    detail: str
    checkpoints: Optional[list[str]] = None   # None: this backend takes any configured checkpoint
    state: str = "idle"                       # one of REPLICA_STATES (services/generator/supervisor.py)
    worker_pid: Optional[int] = None
    restarts: int = 0                         # worker processes replaced since the replica started
    # checkpoint-aware scheduling: the model its worker holds (None: none yet, or a fresh worker), the ones
    # the backend keeps in memory (where it can tell), the line it takes work from (None: the shared one),
    # and what its loads cost: a load is a change of the worker's checkpoint, counted since the replica started
    loaded_checkpoint: Optional[str] = None
    resident_checkpoints: Optional[list[str]] = None
    serving: Optional[str] = None
    loads: int = 0
    load_seconds_total: float = 0.0
    mean_load_seconds: Optional[float] = None     # recent loads, averaged (None: none yet)
    mean_job_seconds: Optional[float] = None      # recent jobs' GPU time without their loads (None: none yet)
    at: float = Field(default_factory=_now)


# --- the jobs service's events ------------------------------------------------------------------
# Published by the jobs service (exchange "jobs.events") after it commits a client's cancel. Every
# generator replica hears it (a broadcast handler) and stops the job if it holds it; outside programs may
# bind to it as to the generator's events.
JOBS_SOURCE = jobs_contract.SERVICE
JOB_CANCELLED = "job_cancelled"


class JobCancelled(BaseModel):
    job_id: str
    was: str                                  # the status it had: pending or processing
    at: float = Field(default_factory=_now)


# Published by the jobs service after it commits a transition of a job that has a webhook: it started
# (processing), or ended (done, failed, cancelled). The webhooks service consumes them from its own durable
# queue, declared by the publisher too (as the work queue is), so that no announcement made before the
# webhooks service ever ran is dropped by an exchange without a queue.
JOB_STATUS_CHANGED = "job_status_changed"
JOBS_EVENTS_EXCHANGE = Exchange(f"{JOBS_SOURCE}.events", type="topic", durable=True)   # as nameko declares it
WEBHOOKS_QUEUE_NAME = "gaze.webhooks"


def webhooks_queue(max_attempts: int) -> Queue:
    return broker.quorum(Queue(WEBHOOKS_QUEUE_NAME, exchange=JOBS_EVENTS_EXCHANGE, routing_key=JOB_STATUS_CHANGED),
                         max_attempts)


class JobStatusChanged(BaseModel):
    job: dict                                 # the job document as GET /api/v1/job/<id> shows it
    owner: Optional[str]                      # the API key's name whose secret signs the deliveries
    webhook: str
    webhook_events: list[str]                 # which of shared/contracts/webhooks.py's EVENTS to deliver
    at: float = Field(default_factory=_now)


class ClaimResult(BaseModel):
    """What `jobs.claim` answers a generator: run the job (with this attempt number), skip it, or (`wait`) ask
    again shortly: a redelivered job whose earlier run is still going on a live replica (the broker took the
    message back because that replica's connection went away, not the replica), which either finishes it
    or stops reporting it."""

    run: bool
    attempt: int = 0
    reason: Optional[str] = None
    wait: bool = False
