"""The jobs service's handle on the job read model (shared/contracts/jobs/view.py): the jobs service owns
job state, so it writes each job's document there after every transition it commits, with the line the job
waits in (queue_position counts within it)."""
from __future__ import annotations

from nameko.extensions import DependencyProvider

from shared.config import from_nameko
from shared.contracts.jobs.view import SHARED_LINE, JobView


class JobWriter(JobView):
    """The read model as the jobs service writes it: it knows which line each job waits in."""

    def __init__(self, url: str, prefix: str, scheduling: str):
        super().__init__(url, prefix)
        self.per_checkpoint = scheduling == "checkpoint"

    def line_of(self, row) -> str:
        """The name of the line the job in `row` (a JobRepository row, with its spec) waits in: the line of its
        checkpoint with checkpoint-aware scheduling (GAZE_SCHEDULING=checkpoint), else the shared line: the
        lines its work order is published to."""
        if not self.per_checkpoint:
            return SHARED_LINE
        return (row.get("spec") or {}).get("checkpoint") or SHARED_LINE


class JobViewWriter(DependencyProvider):
    """The jobs service's handle on the read model (one Redis connection pool per container)."""

    def setup(self):
        settings = from_nameko(self.container.config)
        self.view = JobWriter(settings.redis_url, settings.redis_prefix, settings.scheduling)

    def stop(self):
        self.view.close()

    def get_dependency(self, worker_ctx):
        return self.view
