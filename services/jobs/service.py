"""The `jobs` nameko service: creates jobs, hands them to the generators, records their events."""
import base64
import logging
import secrets
import uuid

import psycopg
from nameko.dependency_providers import Config
from nameko.events import EventDispatcher
from nameko.messaging import Publisher
from pydantic import ValidationError

from shared import broker, events
from shared.entrypoints import Consumer, event_handler, rpc
from shared.config import from_nameko
from shared.contracts.jobs import LineAnswer, LineRequest
from shared.contracts.webhooks import EVENT_OF_STATUS, EVENTS as WEBHOOK_EVENTS
from shared.errors import EXPECTED, InvalidField, NotFound
from shared.job_states import STATES, JobState
from services.jobs import scheduling
from services.jobs.read_model import JobViewWriter
from shared.media import MediaStore, MediaStoreError, image_url
from shared.schemas import MAX_COUNT, MAX_SEED, GenerationSpec
from shared.timers import configured_timer
from services.jobs.store import JobStore, parse_job_id

log = logging.getLogger(__name__)

SEED_BITS = 50  # the range ComfyUI's UI draws from; any seed up to 2**63-1 is accepted when given


def new_seed() -> int:
    return secrets.randbits(SEED_BITS)


def job_event(event_type):
    """An event handler whose message goes back to its queue when handling fails (the database is
    restarting, say) instead of being acknowledged and lost: a lost job_completed would leave the job to
    the stuck-job sweep. Applying an event twice is harmless (conditional, forward-only updates). A
    payload that does not validate would fail forever, so `_parse` logs and drops it instead."""
    return event_handler(events.EVENT_SOURCE, event_type, requeue_on_error=True)


class DeclaringPublisher(Publisher):
    """nameko's Publisher, declaring the queues `declare_of(max_attempts)` makes (shared/broker.py: their
    arguments come from the container's config) before its first publish."""

    def __init__(self, declare_of, **kwargs):
        self.declare_of = declare_of
        super().__init__(**kwargs)

    def setup(self):
        self.declare.extend(self.declare_of(from_nameko(self.container.config).max_attempts))
        super().setup()


class DeclaringDispatcher(EventDispatcher, DeclaringPublisher):
    pass


class DeadLetterConsumer(Consumer):
    """The dead-letter queue's consumer: hands the handler the message with where and why it died."""

    def handle_message(self, body, message):
        deaths = broker.deaths(message.headers)
        super().handle_message({"body": body, "queue": deaths[0].get("queue", "") if deaths else "",
                                "reason": deaths[0].get("reason", "") if deaths else ""}, message)


def _parse(model, payload):
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        log.error("dropped a malformed %s event: %s", model.__name__, exc)
        return None


class JobsService:
    name = "jobs"

    store = JobStore()
    view = JobViewWriter()   # the read model the gateway answers polls from: written after every commit
    config = Config()
    publish_work = DeclaringPublisher(lambda max_attempts: [events.work_queue(max_attempts)],
                                      exchange=events.WORK_EXCHANGE)
    # job_cancelled, for the generator replicas; job_status_changed, for the webhooks service
    dispatch = DeclaringDispatcher(lambda max_attempts: [events.webhooks_queue(max_attempts)])
    media = MediaStore()           # to delete the image of a job cancelled while it was being stored

    # --- RPC ------------------------------------------------------------------------------------
    @rpc(expected_exceptions=EXPECTED)
    def create(self, spec, count, request_id=None, owner=None, webhook=None, webhook_events=None):
        """Write `count` pending jobs in one transaction, then hand each to the work queue. A `request_id`
        (a UUID from the gateway) makes a repeated delivery of the same request answer with the jobs the
        first one created, instead of creating them again. `owner`: the name of the API key that asked
        (None: the web UI); `jobs_of` lists a key's jobs. `webhook`: a URL (checked by the gateway) that
        the webhooks service sends the jobs' `webhook_events` (see `_announce`)."""
        spec = GenerationSpec.model_validate(spec)
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_COUNT:
            raise InvalidField("count", "out of range")
        jobs = []
        if spec.seed is not None and spec.seed + count - 1 > MAX_SEED:
            raise InvalidField("seed", f"with count {count}, seed + count - 1 must be at most {MAX_SEED}")
        for index in range(count):
            # job i of a batch gets seed + i: a batch with a seed is `count` different, reproducible images
            seed = spec.seed + index if spec.seed is not None else new_seed()
            job_spec = spec.model_copy(update={"seed": seed})
            jobs.append({"id": str(uuid.uuid4()), "preset_slug": spec.preset_slug, "label": spec.label(),
                         "spec": job_spec.model_dump(), "seed": job_spec.seed})
        if request_id is not None:
            try:
                request_id = str(uuid.UUID(str(request_id)))
            except ValueError:
                raise InvalidField("request_id", "not a UUID") from None
        if owner is not None and not isinstance(owner, str):
            raise InvalidField("owner", "not a string")
        if webhook is not None and not isinstance(webhook, str):
            raise InvalidField("webhook", "not a string")
        if webhook_events is not None and (not isinstance(webhook_events, list)
                                           or not set(webhook_events) <= set(WEBHOOK_EVENTS)):
            raise InvalidField("webhook_events", f"must be a list of {', '.join(WEBHOOK_EVENTS)}")
        rows, created = self.store.create(jobs, request_id, owner, webhook,
                                          None if webhook is None else list(webhook_events or ()))
        if not created:   # already handed over (or the outbox sweep will): answer with the same jobs
            log.info("create request %s seen before: answering with its %d job(s)", request_id, len(rows))
            return [row["id"] for row in rows]
        self._dispatch([{"id": row["id"], "spec": job["spec"], "created_at": float(row["created_at"])}
                        for row, job in zip(rows, jobs)],
                       # in the read model before the 202 goes out, so the caller's first poll is answered
                       # there; after the work orders, which are on the critical path. A generator's claim
                       # may already have written a newer version: the read model keeps the newer one.
                       then=lambda: self.view.put_many([_public(row) for row in rows],
                                                       [self.view.line_of(row) for row in rows]))
        return [row["id"] for row in rows]

    @rpc(expected_exceptions=EXPECTED)
    def get(self, job_id):
        return _public(self.store.get(job_id))

    @rpc(expected_exceptions=EXPECTED)
    def list(self, limit=50, status=None):
        """The newest jobs (at most 500), optionally only those with `status`."""
        if status is not None and status not in STATES:
            raise InvalidField("status", f"must be one of {', '.join(STATES)}")
        return [_public(row) for row in self.store.recent(min(int(limit), 500), status)]

    @rpc(expected_exceptions=EXPECTED)
    def jobs_of(self, owner, status=None, preset=None, since=None, limit=20, cursor=None):
        """One page of `owner`'s jobs, newest first: {"jobs": [...], "next_cursor": str or None}. The
        cursor is opaque to callers (the last job's position); a page never repeats or skips a job."""
        if status is not None and status not in STATES:
            raise InvalidField("status", f"must be one of {', '.join(STATES)}")
        if not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
            raise InvalidField("limit", f"must be an integer from 1 to {MAX_PAGE}")
        rows = self.store.owned(owner, limit + 1, status, preset, since, _parse_cursor(cursor))
        more = len(rows) > limit
        rows = rows[:limit]
        return {"jobs": [_public(row) for row in rows],
                "next_cursor": _cursor(rows[-1]) if more else None}

    @rpc(expected_exceptions=EXPECTED)
    def cancel(self, job_id):
        """Cancel a job that has not ended: {"job": its document, "cancelled": True}; for a job that had
        already ended, nothing changes and "cancelled" is False. The replicas hear job_cancelled and stop
        it (a pending job's work order is dropped by its claim)."""
        row, was = self.store.cancel(job_id)
        if was is None:
            return {"job": _public(row), "cancelled": False}
        self._project(row)
        self.dispatch(events.JOB_CANCELLED, events.JobCancelled(job_id=row["id"], was=was).model_dump())
        self._announce(row)
        log.info("job %s: cancelled (was %s)", row["id"], was, extra={"job_id": row["id"]})
        return {"job": _public(row), "cancelled": True}

    @rpc(expected_exceptions=EXPECTED)
    def get_many(self, job_ids):
        return [_public(row) for row in self.store.get_many(job_ids[:200])]

    @rpc
    def images(self, preset_slug, limit=60, offset=0):
        return self.store.images(preset_slug, min(int(limit), 500), max(int(offset), 0))

    @rpc
    def random_image_per_preset(self, preset_slugs):
        return self.store.random_image_per_preset(preset_slugs)

    @rpc(expected_exceptions=EXPECTED)
    def claim(self, job_id, replica, redelivered=False):
        settings = from_nameko(self.config)
        claimed = self.store.claim(job_id, replica, redelivered, settings.max_attempts,
                                   settings.owner_silence_seconds)
        self._project(claimed.row)
        if claimed.row is not None and claimed.row["status"] == JobState.FAILED:   # too many attempts
            self._announce(claimed.row)
        return events.ClaimResult(run=claimed.run, attempt=claimed.attempt, reason=claimed.reason,
                                  wait=claimed.wait).model_dump()

    # --- generator events -------------------------------------------------------------------------
    @job_event(events.JOB_STARTED)
    def on_started(self, payload):
        event = _parse(events.JobStarted, payload)
        if event is None:
            return
        row = self.store.started(event.job_id, event.replica, event.attempt)
        self._project(row)
        self._announce(row)

    @job_event(events.JOB_PROGRESS)
    def on_progress(self, payload):
        event = _parse(events.JobProgress, payload)
        if event is None:
            return
        self._project(self.store.progress(event.job_id, event.value, event.max))

    @job_event(events.JOB_COMPLETED)
    def on_completed(self, payload):
        event = _parse(events.JobCompleted, payload)
        if event is None:
            return
        result = {"image_url": image_url(event.relative_path), "relative_path": event.relative_path,
                  "seed": event.seed, "width": event.width, "height": event.height,
                  "generation_seconds": event.generation_seconds}
        row = self.store.completed(event.job_id, event.replica, result)
        projected = self._project(row)   # first: a receiver that asks for the job finds it ended
        self._announce(row)
        if not projected:
            log.info("job %s: completion ignored, job already finished", event.job_id,
                     extra={"job_id": event.job_id, "replica": event.replica})
            if self._status(event.job_id) == JobState.CANCELLED:
                self._discard(event.job_id, event.relative_path)

    @job_event(events.JOB_FAILED)
    def on_failed(self, payload):
        event = _parse(events.JobFailed, payload)
        if event is None:
            return
        row = self.store.failed(event.job_id, event.replica, event.error)
        projected = self._project(row)   # first: a receiver that asks for the job finds it ended
        self._announce(row)
        if not projected:
            log.info("job %s: failure ignored, job already finished", event.job_id,
                     extra={"job_id": event.job_id, "replica": event.replica})

    @job_event(events.GENERATOR_STATUS)
    def on_generator_status(self, payload):
        status = _parse(events.GeneratorStatus, payload)
        if status is not None:
            self.store.record_replica(status)

    @DeadLetterConsumer.decorator(queue_of=lambda max_attempts: broker.DEAD_LETTER_QUEUE, requeue_on_error=True)
    def on_dead_letter(self, letter):
        """A message the broker gave up on (its queue's delivery limit: its consumers died or lost their
        connection with it each time). Recorded; a work order's job fails with a readable error (if it has
        not ended meanwhile), so that no job waits forever for a message that is gone."""
        body, queue, reason = letter["body"], letter["queue"], letter["reason"]
        job_id = body.get("job_id") if isinstance(body, dict) and queue.startswith(events.WORK_QUEUE_NAME) else None
        try:
            job_id = job_id and parse_job_id(job_id)
        except NotFound:
            job_id = None
        self.store.record_dead_letter(queue, reason, job_id, body)
        log.error("a message of %s was dead-lettered (%s)%s", queue, reason, f": job {job_id}" if job_id else "",
                  extra={"job_id": job_id} if job_id else {})
        if job_id is None:
            return
        deliveries = from_nameko(self.config).max_attempts + 1
        row = self.store.failed(job_id, None, f"gave up after {deliveries} deliveries: the generators that took this"
                                              " job stopped each time before finishing it")
        self._project(row)
        self._announce(row)

    @rpc
    def assign_line(self, ask):
        """The line (checkpoint) a generator replica should take its work from (services/jobs/scheduling.py);
        with GAZE_SCHEDULING=fcfs none: every job is on the shared line."""
        ask = LineRequest.model_validate(ask)
        settings = from_nameko(self.config)
        if settings.scheduling != "checkpoint":
            self.store.replica_runs(ask.replica, ask.running)
            return LineAnswer(serve=None, reason="fcfs").model_dump()

        def decide(me, others, lines):
            return scheduling.choose_line(
                _scheduled(me), [_scheduled(row) for row in others],
                [scheduling.Line(row["checkpoint"], row["waiting"], row["oldest_wait_seconds"]) for row in lines],
                settings.scheduler_max_wait_seconds, settings.scheduler_tick_seconds)

        decision = self.store.assign_line(ask.model_dump(), decide,
                                          live_seconds=LIVE_TICKS * settings.scheduler_tick_seconds + 5)
        if decision.serve != ask.serving:
            log.info("replica %s: from line %s to %s (%s)", ask.replica, ask.serving, decision.serve, decision.reason,
                     extra={"replica": ask.replica})
        return LineAnswer(serve=decision.serve, reason=decision.reason).model_dump()

    @rpc
    def replicas(self):
        """Every generator replica heard from, with its backend's health and how long ago it reported."""
        return self.store.replicas()

    # --- metrics ----------------------------------------------------------------------------------
    @rpc
    def counts_by_status(self):
        """{"pending": n, "processing": n, "done": n, "failed": n}."""
        return self.store.counts_by_status()

    @rpc
    def metrics(self):
        """Everything the gateway's /metrics needs from this service in one round trip, so a scrape costs
        one RPC with one time limit: jobs by status, the job duration histograms (recorded as jobs finish,
        see JobRepository._finish) and the generator replicas."""
        lines = self.store.lines()
        return {"jobs_by_status": self.store.counts_by_status(), "durations": self.store.durations(),
                "replicas": self.store.replicas(), "lines": lines,
                "backlog": sum(line["waiting"] for line in lines), "dead_letters": self.store.dead_letters()}

    # --- outbox sweep -----------------------------------------------------------------------------
    @configured_timer("dispatch_sweep_seconds")
    def redispatch(self):
        """Hand over jobs that were written but never published (the process died in between)."""
        grace = from_nameko(self.config).dispatch_sweep_seconds
        stranded = self.store.undispatched(older_than_seconds=grace)
        if stranded:
            log.warning("re-dispatching %d job(s) that were never handed to the generators", len(stranded))
            self._dispatch(stranded)

    # --- stuck-job sweep --------------------------------------------------------------------------
    @configured_timer("stuck_sweep_seconds")
    def sweep_stuck(self):
        """Take back jobs whose replica fell silent (see JobRepository.sweep_stuck): a generator that hangs,
        or vanished without the broker noticing, holds its work message unacked forever. Requeued jobs get
        their work order published again (their next claim is accepted as a new attempt); those that had
        GAZE_MAX_ATTEMPTS runs are failed. Both are written to the read model."""
        settings = from_nameko(self.config)
        swept = self.store.sweep_stuck(settings.stuck_job_seconds, settings.max_attempts)
        for row in swept:
            self._project(row)
            if row["requeued"]:
                log.warning("job %s: no sign of life from its generator for %g s: back to the work queue"
                            " (attempt %d done)", row["id"], settings.stuck_job_seconds, row["attempts"],
                            extra={"job_id": row["id"]})
                self._send(events.WorkOrder(job_id=row["id"], spec=row["spec"], created_at=float(row["created_at"])))
            else:
                log.warning("job %s: failed: %s (replica %s; GAZE_STUCK_JOB_SECONDS=%g)", row["id"], row["error"],
                            row.get("replica") or "unknown", settings.stuck_job_seconds,
                            extra={"job_id": row["id"], "replica": row.get("replica")})
                self._announce(row)

    # --- webhooks ---------------------------------------------------------------------------------
    def _announce(self, row):
        """Tell the webhooks service (job_status_changed, on its durable queue) that a job with a webhook
        started or ended, after the transition is committed; then note it as announced. A process that
        dies in between leaves it unannounced: `reannounce` sends it later (an announcement may so arrive
        twice; the webhooks service keeps one delivery per job and event)."""
        if row is None or row["webhook"] is None or row["status"] not in EVENT_OF_STATUS:
            return
        self.dispatch(events.JOB_STATUS_CHANGED, events.JobStatusChanged(
            job=_public(row), owner=row["owner"], webhook=row["webhook"],
            webhook_events=row["webhook_events"] or []).model_dump())
        try:
            self.store.mark_announced(row["id"], row["status"])
        except psycopg.Error as exc:
            log.warning("job %s: announced %s but could not note it (database: %s); it may be announced again",
                        row["id"], row["status"], exc, extra={"job_id": row["id"]})

    @configured_timer("dispatch_sweep_seconds")
    def reannounce(self):
        """Announce the transitions committed but never announced (see `_announce`)."""
        grace = from_nameko(self.config).dispatch_sweep_seconds
        for row in self.store.unannounced(older_than_seconds=grace):
            log.warning("job %s: announcing %s to the webhooks service again", row["id"], row["status"],
                        extra={"job_id": row["id"]})
            self._announce(row)

    def _status(self, job_id):
        try:
            return self.store.get(job_id)["status"]
        except NotFound:
            return None

    def _discard(self, job_id, relative_path):
        """A cancelled job's image that was finished before its replica heard of the cancel: delete it."""
        try:
            self.media.delete(relative_path)
        except MediaStoreError as exc:
            log.warning("job %s: cancelled, but its image %s could not be deleted: %s", job_id, relative_path,
                        exc, extra={"job_id": job_id})
        else:
            log.info("job %s: cancelled; deleted the image that raced the cancel", job_id, extra={"job_id": job_id})

    @configured_timer("stuck_sweep_seconds")
    def tidy_waiting_line(self):
        """Drop from the read model's waiting lines (queue_position; every line) the jobs that no longer wait:
        normally each transition moves the line with the document; this repairs writes lost while Redis was away."""
        ids = self.view.waiting_ids()
        if ids:
            self.view.forget_waiting(self.store.not_waiting(ids))

    def _project(self, row):
        """Copy a committed transition into the read model; returns whether there was one."""
        if row is None:
            return False
        self.view.put(_public(row), self.view.line_of(row))   # (its line: where queue_position counts)
        return True

    def _send(self, order: events.WorkOrder):
        """Put a work order in its line: its checkpoint's queue (declared with the first order sent to it, so
        none is dropped by an exchange without a queue), or with GAZE_SCHEDULING=fcfs the shared one."""
        if from_nameko(self.config).scheduling == "checkpoint":
            line = events.checkpoint_queue(order.spec.checkpoint, from_nameko(self.config).max_attempts)
            self.publish_work(order.model_dump(), routing_key=line.routing_key, declare=[line])
        else:
            self.publish_work(order.model_dump(), routing_key=events.WORK_ROUTING_KEY)

    def _dispatch(self, jobs, then=lambda: None):
        for job in jobs:
            self._send(events.WorkOrder(job_id=job["id"], spec=job["spec"], created_at=job["created_at"]))
            log.info("job %s: queued", job["id"], extra={"job_id": job["id"]})
        then()
        try:
            self.store.mark_dispatched([job["id"] for job in jobs])
        except psycopg.Error as exc:
            # The jobs are committed and their orders published: failing now would tell the caller
            # "not created" (a 503) about jobs that will run. Unmarked, the outbox sweep publishes them
            # again later; the copy is harmless (a claim takes a job once; the copy is skipped).
            log.warning("%d job(s) queued but not marked dispatched (database: %s); the sweep will"
                        " re-publish them", len(jobs), exc)


MAX_PAGE = 100
LIVE_TICKS = 4   # a replica that has not asked for its line for this many ticks (+5 s) no longer counts as serving it


def _scheduled(row) -> scheduling.Replica:
    """A replica row (store.assign_line) as the scheduler sees it."""
    return scheduling.Replica(row["replica"], row["serving"], row["in_flight"] or 0,
                              frozenset(row["can_load"]) if row["can_load"] is not None else None,
                              row["mean_job_seconds"], row["mean_load_seconds"])


def _cursor(row) -> str:
    """The position after `row` in newest-first order, as an opaque URL-safe string."""
    return base64.urlsafe_b64encode(f"{row['created_us']}:{row['id']}".encode()).decode().rstrip("=")


def _parse_cursor(cursor):
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(str(cursor) + "=" * (-len(str(cursor)) % 4)).decode()
        created_us, job_id = raw.split(":", 1)
        return int(created_us), str(uuid.UUID(job_id))
    except (ValueError, UnicodeDecodeError):
        raise InvalidField("cursor", "not a cursor this API gave out") from None


def _public(row):
    """The job as the API shows it: the guide's fields first, our extra bookkeeping beside them."""
    done = row["status"] == "done"
    return {
        "id": row["id"],
        "label": row["label"],
        "status": row["status"],
        "error": row["error"],
        "result": row["result"] if done else None,
        "preset": row["preset_slug"],
        "attempts": row["attempts"],
        "replica": row["replica"],
        "progress": ({"value": row["progress_value"], "max": row["progress_max"]}
                     if row["progress_max"] else None),
        "created_at": _float(row["created_at"]),
        "started_at": _float(row["started_at"]),
        "finished_at": _float(row["finished_at"]),
    }


def _float(value):
    return None if value is None else float(value)
