"""What the sync and the async client share, without any I/O: configuration, the retry policy, request
bodies, answers turned into models or exceptions, and the bookkeeping of a wait."""
from __future__ import annotations

import os
import random
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Optional, Union
from urllib.parse import quote

import httpx

from gaze_client import errors
from gaze_client.models import Job

DEFAULT_URL = "http://localhost:5782"
DEFAULT_TIMEOUT = 30.0          # seconds per HTTP request (connect, read, write)
DEFAULT_MAX_RETRIES = 5
BACKOFF_BASE = 0.5              # first retry after 0.25-0.5 s, doubling, with jitter
DEFAULT_BACKOFF_CAP = 30.0      # never wait longer than this between two tries (Retry-After included)
RETRY_STATUSES = frozenset({429, 502, 503, 504})
RESYNC_SECONDS = 10.0           # a wait reads the jobs again after this long without news of them
USER_AGENT = "gaze-client/{version}"

JobRef = Union[str, Job]
OnUpdate = Optional[Callable[[Job], Any]]


@dataclass(frozen=True)
class Config:
    base_url: str
    api_key: Optional[str]
    timeout: float
    max_retries: int
    backoff_cap: float

    @classmethod
    def resolve(cls, base_url, api_key, timeout, max_retries, backoff_cap) -> Config:
        """Arguments first, then GAZE_URL / GAZE_API_KEY, then the default URL (the key has none: without
        one the server answers 401, raised as AuthenticationError)."""
        base_url = (base_url or os.environ.get("GAZE_URL") or DEFAULT_URL).rstrip("/")
        if not base_url.startswith(("http://", "https://")):
            raise errors.GazeError(f"base_url must start with http:// or https://, not {base_url!r}")
        api_key = api_key or os.environ.get("GAZE_API_KEY") or None
        if max_retries < 0:
            raise errors.GazeError("max_retries must be 0 or more")
        return cls(base_url, api_key, float(timeout), int(max_retries), float(backoff_cap))

    def headers(self, version: str) -> dict:
        headers = {"User-Agent": USER_AGENT.format(version=version), "Accept": "application/json"}
        if self.api_key:
            headers["X-API-Key"] = self.api_key
        return headers


# --- retries ------------------------------------------------------------------------------------------

def should_retry(response: httpx.Response, retry_conflict: bool) -> bool:
    """429, 502, 503, 504; and, for a keyed generate (`retry_conflict`), the 409 that says the first request
    with the same Idempotency-Key is still being processed."""
    if response.status_code in RETRY_STATUSES:
        return True
    if retry_conflict and response.status_code == 409:
        body = json_body(response)
        return isinstance(body, dict) and body.get("field") == "Idempotency-Key"
    return False


def retry_delay(attempt: int, cap: float, response: Optional[httpx.Response] = None) -> float:
    """Seconds before try `attempt` + 1 (0-based): the server's Retry-After when it sent one, else
    exponential backoff with full jitter in its upper half; never more than `cap`."""
    if response is not None:
        asked = errors.retry_after_seconds(response.headers.get("Retry-After"))
        if asked is not None:
            return min(asked, cap)
    return min(cap, BACKOFF_BASE * 2 ** attempt) * random.uniform(0.5, 1.0)


class Attempts:
    """The tries of one request: after each failed one, the pause before the next (so the sync and the async
    client, and a request and a stream, retry alike), or the exception when the retries are spent."""

    def __init__(self, config: Config):
        self.config = config
        self.retried = 0

    def _next(self, response: Optional[httpx.Response] = None) -> float:
        delay = retry_delay(self.retried, self.config.backoff_cap, response)
        self.retried += 1
        return delay

    def pause_after_error(self, exc: httpx.TransportError) -> float:
        """No answer at all: the pause before the next try, or ConnectionFailed when none is left."""
        if self.retried >= self.config.max_retries:
            raise connection_failed(exc, self.retried + 1) from exc
        return self._next()

    def pause_after_answer(self, response: httpx.Response, retry_conflict: bool = False) -> Optional[float]:
        """The pause before trying again after this answer, or None when it is the answer to act on."""
        if self.retried < self.config.max_retries and should_retry(response, retry_conflict):
            return self._next(response)
        return None


def connection_failed(exc: httpx.TransportError, tries: int) -> errors.ConnectionFailed:
    kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
    return errors.ConnectionFailed(f"the connection to the GAZE server {kind} ({type(exc).__name__}) after"
                                   f" {tries} tr{'y' if tries == 1 else 'ies'}")


# --- answers ------------------------------------------------------------------------------------------

def json_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def raise_for(response: httpx.Response) -> None:
    if response.status_code >= 400:
        raise errors.from_answer(response.status_code, json_body(response), response.headers.get("Retry-After"))


def expect_json(response: httpx.Response) -> Any:
    body = json_body(response)
    if body is None:
        raise errors.GazeError(f"the server answered {response.status_code} without JSON",
                               status_code=response.status_code)
    return body


# --- requests -----------------------------------------------------------------------------------------

def job_id(job: JobRef) -> str:
    if isinstance(job, Job):
        return job.id
    if isinstance(job, str) and job:
        return job
    raise TypeError(f"a job id or a Job, not {job!r}")


def job_ids(jobs: Union[JobRef, Iterable[JobRef]]) -> tuple[list[str], bool]:
    """(the ids, whether one job was given rather than a collection)."""
    if isinstance(jobs, (str, Job)):
        return [job_id(jobs)], True
    ids = [job_id(job) for job in jobs]
    if not ids:
        raise ValueError("no jobs given")
    return ids, False


def generate_path(slug: str) -> str:
    return f"/api/v1/generate/{quote(slug, safe='')}"


def job_path(job: JobRef, suffix: str = "") -> str:
    return f"/api/v1/job/{quote(job_id(job), safe='')}{suffix}"


def generate_body(count: int = 1, seed: Optional[int] = None, extra_positive: Optional[str] = None,
                  extra_negative: Optional[str] = None, checkpoint: Optional[str] = None,
                  width: Optional[int] = None, height: Optional[int] = None, webhook: Optional[str] = None,
                  webhook_events_filter: Optional[list[str]] = None) -> dict:
    """The JSON body of POST /api/v1/generate/<slug>: the fields given; the preset's settings for the rest."""
    body: dict = {"count": count}
    optional = {"seed": seed, "extra_positive": extra_positive, "extra_negative": extra_negative,
                "checkpoint": checkpoint, "width": width, "height": height, "webhook": webhook,
                "webhook_events_filter": webhook_events_filter}
    body.update((name, value) for name, value in optional.items() if value is not None)
    return body


def new_idempotency_key() -> str:
    return f"gaze-client-{uuid.uuid4()}"


def queued_ids(body: Any) -> list[str]:
    try:
        return [entry["job_id"] for entry in body["jobs"]]
    except (TypeError, KeyError):
        raise errors.GazeError("the server's answer to generate has no jobs", body=body) from None


def jobs_params(status, preset, since, page_size, cursor) -> dict:
    params = {"status": status, "preset": preset, "since": since, "limit": page_size, "cursor": cursor}
    return {name: value for name, value in params.items() if value is not None}


def image_target(job: Job, directory: Union[str, Path]) -> tuple[str, Path]:
    """(the image's URL path, the file it is saved as) for a done job; JobFailed for a failed or cancelled
    one, GazeError for one still running."""
    if job.status != "done":
        if job.ended:
            raise errors.JobFailed(job)
        raise errors.GazeError(f"job {job.id} is {job.status}: wait for it before downloading")
    assert job.result is not None
    name = PurePosixPath(job.result.relative_path).name or f"{job.id}.png"
    return job.result.image_url, Path(directory) / name


# --- waiting ------------------------------------------------------------------------------------------

class Tracker:
    """The latest document of each job a wait follows, fed from reads and from the event stream in any
    order: an older document (less far along) never replaces a newer one."""

    def __init__(self, ids: list[str], on_update: OnUpdate = None):
        self.ids = ids
        self.jobs: dict[str, Job] = {}
        self.on_update = on_update

    def offer(self, doc: Any) -> None:
        job = doc if isinstance(doc, Job) else Job.model_validate(doc)
        if job.id not in self.ids:
            return
        known = self.jobs.get(job.id)
        if known is not None and (known.ended or job._order() < known._order()):
            return
        if known is not None and known.model_dump() == job.model_dump():
            return
        self.jobs[job.id] = job
        if self.on_update is not None:
            self.on_update(job)

    @property
    def unfinished(self) -> list[str]:
        return [i for i in self.ids if i not in self.jobs or not self.jobs[i].ended]

    @property
    def finished(self) -> bool:
        return not self.unfinished

    def result(self) -> list[Job]:
        return [self.jobs[i] for i in self.ids]

    def timeout(self, timeout: float) -> errors.WaitTimeout:
        seen = [self.jobs[i] for i in self.ids if i in self.jobs]
        return errors.WaitTimeout(f"{len(self.unfinished)} of {len(self.ids)} job(s) not ended after {timeout:g} s",
                                  seen)


def read_window(deadline: Optional[float], now: float) -> float:
    """How long one read of the event stream may wait: until the deadline, and at most RESYNC_SECONDS (the
    server's keep-alives come every 15 s, so silence this long means nothing is happening to our jobs
    that the stream tells: the wait reads them again)."""
    if deadline is None:
        return RESYNC_SECONDS
    return max(0.05, min(RESYNC_SECONDS, deadline - now))


FINISHED = "finished"    # a wait's outcomes of one pass over the event stream (besides an exception)
SILENT = "silent"


def pause(attempt: int, cap: float, deadline: Optional[float], now: float) -> float:
    """The backoff before reopening a broken stream, cut short by the deadline."""
    delay = retry_delay(attempt, cap)
    return delay if deadline is None else max(0.0, min(delay, deadline - now))
