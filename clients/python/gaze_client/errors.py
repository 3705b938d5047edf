"""Every error the client raises: one class per kind of answer, all under `GazeError`.

The server's error body is `{"error": "...", "field": "..."}` (`field` when one field is to blame); each
exception carries the message, the HTTP status and the field. No httpx exception ever reaches the caller:
a connection that cannot be made (after the retries) is a `ConnectionFailed`, itself a `ServerUnavailable`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:   # pragma: no cover
    from gaze_client.models import Job


class GazeError(Exception):
    """Base of every error of this package."""

    def __init__(self, message: str, *, status_code: Optional[int] = None, field: Optional[str] = None,
                 body: Any = None):
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.field = field
        self.body = body


class AuthenticationError(GazeError):
    """401: no API key was sent (pass api_key= or set GAZE_API_KEY)."""


class PermissionDenied(GazeError):
    """403: the API key is not valid (revoked or regenerated)."""


class ValidationError(GazeError):
    """400 (a bad parameter: `.field` names it), 413 (too large) or 422 (an Idempotency-Key reused with
    another request)."""


class NotFound(GazeError):
    """404: no such preset or job."""


class Conflict(GazeError):
    """409: the request conflicts with the state on the server (e.g. a keyed generate still in progress
    after every retry)."""


class AlreadyEnded(Conflict):
    """409 on cancel: the job had already ended; `.status` is how (done or failed)."""

    def __init__(self, message: str, status: str, **kwargs):
        super().__init__(message, **kwargs)
        self.status = status


class RateLimited(GazeError):
    """429 after every retry: `.retry_after` is the seconds the server asked to wait (None if it did not say)."""

    def __init__(self, message: str, retry_after: Optional[float] = None, **kwargs):
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ServerUnavailable(GazeError):
    """5xx after every retry: the server or a service behind it is down or overloaded."""


class ConnectionFailed(ServerUnavailable):
    """No answer at all after every retry: the connection failed or timed out."""


class JobFailed(GazeError):
    """A job ended `failed` or `cancelled` where a result was needed (`run`, `download`): `.job` is it,
    `.jobs` every job of the request."""

    def __init__(self, job: Job, jobs: Optional[list[Job]] = None):
        reason = job.error or job.status
        super().__init__(f"job {job.id} {job.status}: {reason}")
        self.job = job
        self.jobs = jobs if jobs is not None else [job]


class WaitTimeout(GazeError):
    """`wait(..., timeout=)` ran out: `.jobs` are the jobs as last seen, `.pending` those not ended."""

    def __init__(self, message: str, jobs: list[Job]):
        super().__init__(message)
        self.jobs = jobs
        self.pending = [job for job in jobs if not job.ended]


def retry_after_seconds(value: Optional[str]) -> Optional[float]:
    """A Retry-After header's seconds (the delta-seconds form GAZE sends; an HTTP date is read too)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        from email.utils import parsedate_to_datetime
        from datetime import datetime, timezone
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return max(0.0, (moment - datetime.now(timezone.utc)).total_seconds())


def from_answer(status_code: int, body: Any, retry_after: Optional[str] = None) -> GazeError:
    """The exception for an error answer: its status, its JSON body (anything else: None) and Retry-After."""
    if isinstance(body, dict):
        message = str(body.get("error") or f"HTTP {status_code}")
        field = body.get("field") if isinstance(body.get("field"), str) else None
    else:
        message, field = f"HTTP {status_code}", None
    kwargs = {"status_code": status_code, "field": field, "body": body}
    if status_code == 401:
        return AuthenticationError(message, **kwargs)
    if status_code == 403:
        return PermissionDenied(message, **kwargs)
    if status_code in (400, 413, 422):
        return ValidationError(message, **kwargs)
    if status_code == 404:
        return NotFound(message, **kwargs)
    if status_code == 409:
        ended = body.get("status") if isinstance(body, dict) else None
        if isinstance(ended, str):
            return AlreadyEnded(message, ended, **kwargs)
        return Conflict(message, **kwargs)
    if status_code == 429:
        return RateLimited(message, retry_after_seconds(retry_after), **kwargs)
    if status_code >= 500:
        return ServerUnavailable(message, **kwargs)
    return GazeError(message, **kwargs)
