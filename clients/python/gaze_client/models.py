"""The typed answers of the GAZE REST API (docs/gaze-rest-api-guide.md of the server).

Each model mirrors the schema of the same name in the server's OpenAPI document (GET /api/v1/openapi.json);
the server's test suite checks field by field that they agree. Extra keys the server adds to a job
(attempts, replica, timings, ...) are kept, not refused: `job.model_extra` has them.
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict

Status = Literal["pending", "processing", "done", "failed", "cancelled"]
STATUSES: tuple[str, ...] = ("pending", "processing", "done", "failed", "cancelled")
TERMINAL = frozenset({"done", "failed", "cancelled"})
_RANK = {"pending": 0, "processing": 1, "done": 2, "failed": 2, "cancelled": 2}


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class Preset(_Model):
    """One preset of GET /api/v1/presets."""

    preset_id: str
    slug: str
    name: str
    has_cover: bool


class Result(_Model):
    """A done job's image: `image_url` is a path on the server, fetched without a key (`Client.download`)."""

    image_url: str
    relative_path: str
    seed: int


class Progress(_Model):
    """Steps done of the job's steps."""

    value: int
    max: int


class Job(_Model):
    """GET /api/v1/job/<id>."""

    id: str
    label: str
    status: Status
    error: Optional[str]
    result: Optional[Result]
    queue_position: Optional[int] = None
    progress: Optional[Progress] = None

    @property
    def ended(self) -> bool:
        """done, failed or cancelled: it will not change any more."""
        return self.status in TERMINAL

    @property
    def succeeded(self) -> bool:
        return self.status == "done"

    def _order(self) -> tuple[int, int]:
        """How far along the job is: a document that is less far along is an older one."""
        return _RANK[self.status], self.progress.value if self.progress else -1


class JobPage(_Model):
    """GET /api/v1/jobs: one page of the key's jobs, newest first."""

    jobs: list[Job]
    next_cursor: Optional[str]


class Cancelled(_Model):
    """POST /api/v1/job/<id>/cancel: the job is cancelled (now, or by an earlier call)."""

    id: str
    status: Literal["cancelled"]
