"""How the gateway answers "what is job X doing": the Redis read model first, the jobs service second.

The read model (shared/contracts/jobs/view.py) answers almost every poll without touching the broker. A miss goes
to the jobs service over RPC (which raises NotFound for an unknown id: never a made-up "pending") and
the answer is written back, versioned, so the next poll is a hit and nothing older can replace it. A
pending job's queue_position is its place in its own line (its checkpoint's, with checkpoint-aware
scheduling), read with the document in the same round trip.
"""
from __future__ import annotations

from shared.contracts.jobs.view import JobView, queue_position
from shared.job_states import JobState
from shared.contracts.jobs import JobsClient


class JobLookup:
    def __init__(self, rpc, view: JobView | None = None):
        self.jobs_service = JobsClient(rpc)
        self.view = view or JobView("")

    def get(self, job_id: str) -> dict:
        """The job's document with its `queue_position`: one Redis round trip for a hit."""
        doc, rank = self.view.lookup(job_id)
        if doc is None:
            doc = self.jobs_service.get(job_id)
            self.view.put(doc)   # no line: the gateway does not know it; the lines stay as the jobs service wrote them
            rank = self.view.ranks([job_id]).get(job_id)
        return {**doc, "queue_position": queue_position(doc, rank)}

    def own(self, job_ids: list[str], owner: str) -> None:
        """Record the API key name that created `job_ids` beside their documents (their key's event stream)."""
        self.view.own(job_ids, owner)

    def cancel(self, job_id: str) -> dict:
        """jobs.cancel: {"job": its document (with queue_position), "cancelled": bool}."""
        answer = self.jobs_service.cancel(job_id)
        return {**answer, "job": {**answer["job"], "queue_position": None}}

    def jobs_of(self, owner: str, **query) -> dict:
        """A page of `owner`'s jobs, each with its queue_position (one Redis round trip for the page)."""
        page = self.jobs_service.jobs_of(owner, **query)
        return {**page, "jobs": self.with_positions(page["jobs"])}

    def with_positions(self, docs: list[dict]) -> list[dict]:
        ranks = self.view.ranks([doc["id"] for doc in docs if doc["status"] == JobState.PENDING])
        return [{**doc, "queue_position": queue_position(doc, ranks.get(doc["id"]))} for doc in docs]

    def get_many(self, job_ids: list[str]) -> list[dict]:
        """The known jobs among `job_ids`, in the order asked, unknown ones left out (like jobs.get_many)."""
        found = self.view.get_many(job_ids)
        missing = [job_id for job_id in job_ids if job_id not in found]
        if missing:
            for doc in self.jobs_service.get_many(missing):
                self.view.put(doc)
                found[doc["id"]] = doc
        return [found[job_id] for job_id in dict.fromkeys(job_ids) if job_id in found]
