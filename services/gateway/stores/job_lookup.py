"""How the gateway answers "what is job X doing": the Redis read model first, the jobs service second.

The read model (shared/contracts/jobs/view.py) answers almost every poll without touching the broker. A miss goes
to the jobs service over RPC (which raises NotFound for an unknown id: never a made-up "pending") and
the answer is written back, versioned, so the next poll is a hit and nothing older can replace it.
"""
from __future__ import annotations

from shared.contracts.jobs.view import JobView
from shared.contracts.jobs import JobsClient


class JobLookup:
    def __init__(self, rpc, view: JobView | None = None):
        self.jobs_service = JobsClient(rpc)
        self.view = view or JobView("")

    def get(self, job_id: str) -> dict:
        doc = self.view.get(job_id)
        if doc is None:
            doc = self.jobs_service.get(job_id)
            self.view.put(doc)
        return doc

    def get_many(self, job_ids: list[str]) -> list[dict]:
        """The known jobs among `job_ids`, in the order asked, unknown ones left out (like jobs.get_many)."""
        found = self.view.get_many(job_ids)
        missing = [job_id for job_id in job_ids if job_id not in found]
        if missing:
            for doc in self.jobs_service.get_many(missing):
                self.view.put(doc)
                found[doc["id"]] = doc
        return [found[job_id] for job_id in dict.fromkeys(job_ids) if job_id in found]
