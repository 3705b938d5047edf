"""The jobs service's handle on the job read model (shared/contracts/jobs/view.py): the jobs service owns
job state, so it writes each job's document there after every transition it commits."""
from __future__ import annotations

from nameko.extensions import DependencyProvider

from shared.config import from_nameko
from shared.contracts.jobs.view import JobView


class JobViewWriter(DependencyProvider):
    """The jobs service's handle on the read model (one Redis connection pool per container)."""

    def setup(self):
        settings = from_nameko(self.container.config)
        self.view = JobView(settings.redis_url, settings.redis_prefix)

    def stop(self):
        self.view.close()

    def get_dependency(self, worker_ctx):
        return self.view
