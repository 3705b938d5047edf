"""The jobs service's RPC contract (services/jobs/service.py is the callee)."""
from __future__ import annotations

from typing import Optional

from pydantic import BaseModel

from shared.contracts import ServiceClient

SERVICE = "jobs"


class LineRequest(BaseModel):
    """A generator replica asks which line to serve: what it serves and holds now, its jobs in hand, the
    checkpoints it can load (None: any) and its recent means (None: not measured yet)."""

    replica: str
    serving: Optional[str] = None
    loaded: Optional[str] = None
    in_flight: int = 0
    can_load: Optional[list[str]] = None
    running: list[str] = []       # ids of the jobs it runs (claimed, not finished): see JobRepository.claim
    mean_job_seconds: Optional[float] = None
    mean_load_seconds: Optional[float] = None


class LineAnswer(BaseModel):
    serve: Optional[str] = None   # the checkpoint whose line to take work from (None: only the shared line)
    reason: str = ""              # which rule of services/jobs/scheduling.py decided


def replica_state(replica: dict, stale_after: float) -> str:
    """A row of `JobsClient.replicas()` as healthy (reported healthy, recently), unhealthy (reported a broken
    backend, recently) or stale (not heard from within `stale_after` seconds, whatever it last said)."""
    if replica["age_seconds"] > stale_after:
        return "stale"
    return "healthy" if replica["healthy"] else "unhealthy"


class JobsClient(ServiceClient):
    service = SERVICE

    def create(self, spec: dict, count: int, request_id: str | None = None, owner: str | None = None,
               webhook: str | None = None, webhook_events: list[str] | None = None) -> list[str]:
        """N pending jobs for one resolved spec, in one transaction; the same request_id twice answers the
        first call's job ids. `owner`: the name of the API key that asked (None: the web UI). `webhook`: a
        URL the webhooks service sends the jobs' `webhook_events` to (shared/contracts/webhooks.py)."""
        return self._call("create", spec, count, request_id, owner, webhook, webhook_events)

    def jobs_of(self, owner: str, status: str | None = None, preset: str | None = None, since: float | None = None,
                limit: int = 20, cursor: str | None = None) -> dict:
        """One page of the owner's jobs, newest first: {"jobs": [...], "next_cursor": str or None}."""
        return self._call("jobs_of", owner, status, preset, since, limit, cursor)

    def cancel(self, job_id: str) -> dict:
        """{"job": the job's document, "cancelled": whether this call cancelled it (False: it had ended)}."""
        return self._call("cancel", job_id)

    def get(self, job_id: str) -> dict:
        return self._call("get", job_id)

    def list(self, limit: int = 50, status: str | None = None) -> list[dict]:
        return self._call("list", limit, status)

    def get_many(self, job_ids: list[str]) -> list[dict]:
        return self._call("get_many", job_ids)

    def images(self, preset_slug: str, limit: int = 60, offset: int = 0) -> list[dict]:
        return self._call("images", preset_slug, limit, offset)

    def random_image_per_preset(self, preset_slugs: list[str]) -> dict:
        return self._call("random_image_per_preset", preset_slugs)

    def claim_async(self, job_id: str, replica: str, redelivered: bool = False):
        """Reserve the job for a generator replica; the reply (a ClaimResult) is fetched later."""
        return self._call_async("claim", job_id, replica, redelivered)

    def assign_line(self, ask: LineRequest) -> LineAnswer:
        """Which checkpoint's line a generator replica takes work from next (services/jobs/scheduling.py)."""
        return LineAnswer.model_validate(self._call("assign_line", ask.model_dump()))

    def replicas(self) -> list[dict]:
        return self._call("replicas")

    def counts_by_status(self) -> dict:
        return self._call("counts_by_status")

    def metrics(self) -> dict:
        return self._call("metrics")
