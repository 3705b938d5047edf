"""The `generator` nameko service: one replica per GPU, one job at a time, taking work from the shared line and
the line of the checkpoint the scheduler has it serve (services/generator/lines.py)."""
import logging

import eventlet
from amqp.exceptions import ConnectionError as AmqpConnectionError
from kombu.exceptions import OperationalError
from nameko.dependency_providers import Config
from nameko.events import EventDispatcher
from nameko.extensions import DependencyProvider
from shared import events
from shared.entrypoints import Consumer, RpcProxy
from shared.contracts import NamekoTransport
from shared.contracts import jobs as jobs_contract
from shared.contracts.jobs import JobsClient
from shared.config import from_nameko
from shared.media import MediaStore, image_relative_path
from services.generator.backends import BackendError
from services.generator.backends.base import public_text
from services.generator.lines import LineConsumer, LineSteering
from services.generator.replica import GpuWorker, replica_name
from services.generator.supervisor import JobCancelledByClient, WorkerLost

log = logging.getLogger(__name__)
REQUEUE_PAUSE_SECONDS = 2.0
OWNER_POLL_SECONDS = 1.0     # how often a redelivered job whose earlier run still goes on asks again
# the broker is away (stopped, restarting, a node failing over): no fault of the job's
BROKER_ERRORS = (OperationalError, AmqpConnectionError, ConnectionError)


class WorkConsumer(Consumer):
    """nameko's queue consumer (ack after the handler returns) on the replica's work lines (the shared one and
    the line of the checkpoint it serves: services/generator/lines.py), plus the broker's redelivered flag,
    which tells a job whose first runner died apart from a duplicate of a job running elsewhere."""

    queue_consumer = LineConsumer()

    def handle_message(self, body, message):
        # in the consumer's thread: the arrival number is the delivery order (ArrivalOrder)
        body = dict(body, redelivered=bool(message.delivery_info.get("redelivered")),
                    arrival=self.queue_consumer.arrivals.take())
        super().handle_message(body, message)

    def setup(self):
        self._stopping = False
        super().setup()

    def stop(self):
        self._stopping = True
        super().stop()

    def handle_result(self, message, worker_ctx, result=None, exc_info=None):
        # The handler only raises when it could not talk to the jobs service or the broker (a backend's
        # failure is the job's failure, never an exception here). The job is handled again by this replica
        # after a pause (which keeps it from spinning while the jobs service is down), its message still in
        # hand: returned to the queue, it would count against the queue's delivery limit (shared/broker.py)
        # for what is no fault of the job. Its claim then counts it as a new attempt (redelivered). Where
        # the message's connection is gone, the broker has taken it back already; where the replica is
        # stopping, or its worker process died under the job (WorkerLost: perhaps of this very job, which
        # is what the delivery limit is for), it goes back to the queue (requeue_on_error).
        if (exc_info is not None and not issubclass(exc_info[0], WorkerLost) and not self._stopping
                and _channel_open(message)):
            log.warning("job %s: trying again in %.0f s: %s: %s", message.payload.get("job_id"),
                        REQUEUE_PAUSE_SECONDS, exc_info[0].__name__, exc_info[1],
                        extra={"job_id": message.payload.get("job_id")})
            self.container.spawn_managed_thread(lambda: self._again(message))
            return result, exc_info
        return super().handle_result(message, worker_ctx, result, exc_info)

    def _again(self, message):
        eventlet.sleep(REQUEUE_PAUSE_SECONDS)
        if self._stopping or not _channel_open(message):
            if _channel_open(message):
                self.queue_consumer.requeue_message(message)
            return
        # not through handle_message above: the broker's flag is stale, this is a new attempt of ours
        super().handle_message(dict(message.payload, redelivered=True, arrival=self.queue_consumer.arrivals.take()),
                               message)


def _channel_open(message) -> bool:
    channel = message.channel
    return channel is not None and getattr(channel, "is_open", False) and channel.connection is not None


work_consumer = WorkConsumer.decorator


class ClaimUnanswered(Exception):
    """jobs.claim got no answer in time (its reply lost with the broker, or the jobs service down)."""


class Claim:
    """A jobs.claim request in flight; its answer is fetched once, when first needed, and waited for at
    most `timeout` seconds: nameko's RPC proxy itself would wait forever for a lost reply, with this
    replica's GPU held."""

    def __init__(self, reply, timeout: float):
        self._reply = reply
        self._timeout = timeout
        self._result = None
        self._failure = None

    def result(self) -> events.ClaimResult:
        if self._failure is not None:
            raise self._failure
        if self._result is None:
            try:
                with eventlet.Timeout(self._timeout):
                    self._result = events.ClaimResult.model_validate(self._reply.result())
            except eventlet.Timeout:
                self._failure = ClaimUnanswered(f"no answer from jobs.claim within {self._timeout:.0f} s")
                raise self._failure from None
            except Exception as exc:
                self._failure = exc
                raise
        return self._result

    @property
    def attempt(self):
        return self._result.attempt if self._result is not None else None


class ReplicaName(DependencyProvider):
    def setup(self):
        self.name = replica_name(from_nameko(self.container.config))

    def get_dependency(self, worker_ctx):
        return self.name


class GeneratorService:
    name = events.EVENT_SOURCE

    worker = GpuWorker()
    lines = LineSteering()       # which checkpoint's line the work entrypoint takes from (the scheduler says)
    media = MediaStore()
    replica = ReplicaName()
    jobs = RpcProxy(jobs_contract.SERVICE)
    dispatch = EventDispatcher()
    config = Config()

    @work_consumer(queue_of=events.work_queue, requeue_on_error=True)
    def generate(self, payload):
        """Claim, generate, store, announce; the work message is acked only after this returns.

        A replica runs `generator_prefetch` of these at once: each claims its job right away and hands it
        to the replica's worker process, which runs them in turn (or, for ComfyUI, keeps the next one in
        ComfyUI's own queue), so one job's storing and announcing overlaps the next job's generation.

        A first delivery starts on the GPU without waiting for the claim's answer: the claim request is
        already sent (so the attempt is counted even if this run dies), and its answer is awaited while
        the GPU works. The answer is almost always "run"; when it is not (a duplicate of a job taken
        elsewhere, a job already finished), the result is thrown away unseen: no file, no event. A
        redelivered job waits for the answer first: its last run died, perhaps of this very job, and the
        claim is what fails it after GAZE_MAX_ATTEMPTS."""
        redelivered = payload.get("redelivered", False)
        arrival = payload.get("arrival")
        if redelivered:
            self.lines.arrivals.passed(arrival)
        try:
            order = events.WorkOrder.model_validate(payload)
            claim = self._claim(order, redelivered)
            if redelivered:
                claim = self._after_earlier_run(order, claim)
                if not self._may_run(order, claim):
                    return
            self._run_claimed(order, claim, arrival)
        finally:
            self.lines.arrivals.passed(arrival)

    def _run_claimed(self, order, claim, arrival):
        # what this replica runs, told to the jobs service with each line request: a redelivered copy of
        # one of these waits instead of running twice (ClaimResult.wait)
        self.lines.started(order.job_id)
        try:
            self._run(order, claim, arrival)
        except BaseException:
            self.lines.ended(order.job_id)
            raise
        self.lines.ended(order.job_id, announced=True)

    def _claim(self, order, redelivered: bool) -> "Claim":
        return Claim(JobsClient(NamekoTransport(self.jobs)).claim_async(order.job_id, self.replica, redelivered),
                     timeout=from_nameko(self.config).rpc_timeout)

    def _after_earlier_run(self, order, claim) -> "Claim":
        """The claim of a redelivered job, once no earlier run of it is still going on a live replica: the
        broker takes a message back whenever its consumer's connection goes (a broker node stopped, say),
        while the replica holding it may well go on and finish it."""
        told = False
        while claim.result().wait:
            if not told:
                log.info("job %s: redelivered while %s; waiting for that run", order.job_id, claim.result().reason,
                         extra={"job_id": order.job_id, "replica": self.replica})
                told = True
            eventlet.sleep(OWNER_POLL_SECONDS)
            claim = self._claim(order, redelivered=True)
        return claim

    def _run(self, order, claim, arrival=None):
        try:
            completed = self._generate(order, claim, arrival)
        except (ClaimUnanswered, *BROKER_ERRORS):
            # handled again (WorkConsumer.handle_result), or redelivered by the broker if this connection is
            # gone: the claim decides, not us. (A job_started that could not be announced, say, is no reason
            # to fail the job: seen in the fault suite's RabbitMQ restart.)
            raise
        except JobCancelledByClient:
            log.info("job %s: stopped, its client cancelled it", order.job_id,
                     extra={"job_id": order.job_id, "replica": self.replica})
        except WorkerLost as exc:
            # the worker process died or stalled under this job: another run may well succeed, up to
            # GAZE_MAX_ATTEMPTS (the claim of the redelivered message counts the attempt)
            if not self._may_run(order, claim):
                return
            max_attempts = from_nameko(self.config).max_attempts
            if claim.attempt >= max_attempts:
                gave_up = f"; gave up after {claim.attempt} attempts"
                self._fail(order.job_id, exc.public + gave_up, exc.detail + gave_up)
                return
            raise
        except BackendError as exc:
            if self._may_run(order, claim):
                self._fail(order.job_id, exc.public, exc.detail)
        except Exception:  # a bug must still end the job, with a line in the log to fix it from
            if self._may_run(order, claim):
                log.exception("job %s: backend crashed", order.job_id,
                              extra={"job_id": order.job_id, "replica": self.replica, "attempt": claim.attempt})
                self._fail(order.job_id, "internal generator error (the generator's log has the details under "
                                         "this job's id)")
        else:
            if completed is None:
                return
            self.dispatch(events.JOB_COMPLETED, completed.model_dump())
            log.info("job %s: done in %.2fs -> %s", order.job_id, completed.generation_seconds,
                     completed.relative_path, extra={"job_id": order.job_id, "replica": self.replica,
                                                     "attempt": claim.attempt,
                                                     "generation_seconds": completed.generation_seconds})

    def _may_run(self, order, claim) -> bool:
        """The claim's answer (waits for it); logs a skip."""
        if not claim.result().run:
            log.info("job %s: skipped (%s)", order.job_id, claim.result().reason,
                     extra={"job_id": order.job_id, "replica": self.replica, "attempt": claim.attempt})
            return False
        return True

    def _generate(self, order, claim, arrival=None):
        """The image as a JobCompleted event, or None when the claim said not to run it."""
        spec = order.spec

        def started():
            # the GPU is already working on this job; now is the time to wait for the claim's answer
            if not self._may_run(order, claim):
                return False
            self.dispatch(events.JOB_STARTED, events.JobStarted(
                job_id=order.job_id, replica=self.replica, attempt=claim.attempt).model_dump())
            log.info("job %s: started on %s (attempt %d)", order.job_id, self.replica, claim.attempt,
                     extra={"job_id": order.job_id, "replica": self.replica, "attempt": claim.attempt})
            return True

        def progress(value, maximum):
            # a step is news, not state: one lost with the broker (it is down or restarting) must not fail
            # the job; the next step, or its completion, says more
            try:
                self.dispatch(events.JOB_PROGRESS,
                              events.JobProgress(job_id=order.job_id, value=value, max=maximum).model_dump())
            except (OperationalError, OSError) as exc:
                log.warning("job %s: a progress event was lost with the broker: %s", order.job_id, exc,
                            extra={"job_id": order.job_id, "replica": self.replica})

        self.lines.arrivals.wait_turn(arrival)
        # its turn passes once the worker has the job: run() registers it before its first wait
        eventlet.spawn_n(self.lines.arrivals.passed, arrival)
        image, seconds = self.worker.run(order.job_id, spec, progress, started)
        if not self._may_run(order, claim):
            return None
        relative_path = image_relative_path(spec.preset_slug, order.job_id, order.created_at)
        self.media.save(relative_path, image.png)
        return events.JobCompleted(job_id=order.job_id, replica=self.replica, relative_path=relative_path,
                                   seed=spec.seed, width=image.width, height=image.height,
                                   generation_seconds=round(seconds, 4), metadata=image.metadata)

    def _fail(self, job_id, error, detail=None):
        """The job failed: its client reads `error` (nothing internal: URLs, paths and host:port pairs a
        plugged-in backend's words might carry are masked here, the last step), the log has `detail`, the
        operator's words (the server, the cause, the file), under the job id."""
        error = public_text(error)
        log.warning("job %s: failed: %s", job_id, detail or error,
                    extra={"job_id": job_id, "replica": self.replica, "error": error})
        self.dispatch(events.JOB_FAILED, events.JobFailed(job_id=job_id, replica=self.replica, error=error).model_dump())
