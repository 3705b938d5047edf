"""The `generator` nameko service: one replica per GPU, one job at a time, sharing one work queue."""
import logging

from nameko.dependency_providers import Config
from nameko.events import EventDispatcher
from nameko.extensions import DependencyProvider
from nameko.messaging import Consumer
from nameko.rpc import RpcProxy

from shared import events, logs
from shared.config import from_nameko
from shared.media import MediaStore, image_relative_path
from services.generator.backends import BackendError
from services.generator.runner import Backend, replica_name

log = logging.getLogger(__name__)


class WorkConsumer(Consumer):
    """nameko's queue consumer (ack after the handler returns), plus the broker's redelivered flag, which
    tells a job whose first runner died apart from a duplicate of a job running elsewhere."""

    def handle_message(self, body, message):
        body = dict(body, redelivered=bool(message.delivery_info.get("redelivered")))
        super().handle_message(body, message)


work_consumer = WorkConsumer.decorator


class ReplicaName(DependencyProvider):
    def setup(self):
        self.name = replica_name(from_nameko(self.container.config))

    def get_dependency(self, worker_ctx):
        return self.name


class GeneratorService:
    name = events.EVENT_SOURCE

    backend = Backend()
    media = MediaStore()
    replica = ReplicaName()
    jobs = RpcProxy("jobs")
    dispatch = EventDispatcher()
    config = Config()

    @work_consumer(events.WORK_QUEUE)
    def generate(self, payload):
        """Claim, generate, store, announce; the work message is acked only after this returns.

        A replica runs `generator_prefetch` of these at once: each claims its job right away, then they
        take turns on the GPU (BackendRunner.run), and one job's storing and announcing overlaps the next
        job's generation."""
        order = events.WorkOrder.model_validate(payload)
        claim = events.ClaimResult.model_validate(
            self.jobs.claim(order.job_id, self.replica, payload.get("redelivered", False)))
        if not claim.run:
            log.info("job %s: skipped (%s)", order.job_id, claim.reason,
                     extra={"job_id": order.job_id, "replica": self.replica, "attempt": claim.attempt})
            return
        try:
            completed = self._generate(order, claim.attempt)
        except BackendError as exc:
            self._fail(order.job_id, str(exc))
        except Exception as exc:  # a bug must still end the job, with a line in the log to fix it from
            log.exception("job %s: backend crashed", order.job_id,
                          extra={"job_id": order.job_id, "replica": self.replica, "attempt": claim.attempt})
            self._fail(order.job_id, f"internal generator error: {type(exc).__name__}: {exc}")
        else:
            self.dispatch(events.JOB_COMPLETED, completed.model_dump())
            log.info("job %s: done in %.2fs -> %s", order.job_id, completed.generation_seconds,
                     completed.relative_path, extra={"job_id": order.job_id, "replica": self.replica,
                                                     "attempt": claim.attempt,
                                                     "generation_seconds": completed.generation_seconds})

    def _generate(self, order, attempt):
        spec = order.spec

        def started():
            self.dispatch(events.JOB_STARTED,
                          events.JobStarted(job_id=order.job_id, replica=self.replica, attempt=attempt).model_dump())
            log.info("job %s: started on %s (attempt %d)", order.job_id, self.replica, attempt,
                     extra={"job_id": order.job_id, "replica": self.replica, "attempt": attempt})

        def progress(value, maximum):
            self.dispatch(events.JOB_PROGRESS,
                          events.JobProgress(job_id=order.job_id, value=value, max=maximum).model_dump())

        with logs.fields(job_id=order.job_id, replica=self.replica, attempt=attempt):  # the backend's lines too
            image, seconds = self.backend.run(spec, progress, started)
        relative_path = image_relative_path(spec.preset_slug, order.job_id, order.created_at)
        self.media.save(relative_path, image.png)
        return events.JobCompleted(job_id=order.job_id, replica=self.replica, relative_path=relative_path,
                                   seed=spec.seed, width=image.width, height=image.height,
                                   generation_seconds=round(seconds, 4), metadata=image.metadata)

    def _fail(self, job_id, error):
        log.warning("job %s: failed: %s", job_id, error, extra={"job_id": job_id, "replica": self.replica})
        self.dispatch(events.JOB_FAILED, events.JobFailed(job_id=job_id, replica=self.replica, error=error).model_dump())
