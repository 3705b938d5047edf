"""Reading and validating request input; every failure names the field at fault."""
from __future__ import annotations

import json
import math
import re
import uuid

import falcon
from pydantic import ValidationError

from shared.contracts.webhooks import target_problem
from shared.job_states import STATES
from shared.schemas import SLUG_RE, GenerateRequest, first_error
from services.gateway.errors import ApiError


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def _unique_keys(pairs):
    # {"count": 1, "count": 20}: which one counts is up to the parser; refuse instead of guessing
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate key in a JSON object")
    return dict(pairs)


def strict_json_loads(text):
    """json.loads that refuses NaN and Infinity, which are not JSON although Python accepts them, and
    objects that repeat a key."""
    try:
        return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except RecursionError:   # nested deeper than the parser's recursion allows: bad input, not a bug
        raise ValueError("JSON nested too deeply") from None


def read_json_object(req, limit: int) -> dict:
    """The body as a dict. Empty means {}; the Content-Type is not required to be exact because
    `curl -d` sends form encoding by default and a user should not be punished for it."""
    if req.content_length is not None and req.content_length > limit:
        raise ApiError(falcon.HTTP_413, f"body larger than {limit} bytes", "body")
    # No Content-Length (e.g. `Transfer-Encoding: chunked`): Falcon's bounded_stream would read nothing
    # and the body would silently become "preset defaults". Servers that end wsgi.input at the end of
    # the body say so with wsgi.input_terminated (gunicorn does); read that stream, still bounded.
    stream = req.stream if req.content_length is None and req.env.get("wsgi.input_terminated") \
        else req.bounded_stream
    raw = stream.read(limit + 1)
    if len(raw) > limit:
        raise ApiError(falcon.HTTP_413, f"body larger than {limit} bytes", "body")
    if not raw.strip():
        return {}
    try:
        data = strict_json_loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(falcon.HTTP_400, "body: not valid JSON", "body") from None
    if not isinstance(data, dict):
        raise ApiError(falcon.HTTP_400, "body: must be a JSON object", "body")
    return data


def generate_context(settings) -> dict:
    """The operator's limits GenerateRequest's validators read (its validation context)."""
    return {"max_dimension": settings.max_dimension, "max_prompt_chars": settings.max_prompt_chars}


def generate_request(data: dict, settings) -> GenerateRequest:
    try:
        return GenerateRequest.model_validate(data, context=generate_context(settings))
    except ValidationError as exc:
        field, message = first_error(exc)
        raise ApiError(falcon.HTTP_400, f"{field}: {message}", field) from None


def webhook_target(url: str | None, settings) -> str | None:
    """A webhook URL we will deliver to, or a 400 naming `webhook`: the URL's form is the model's check;
    here its host must resolve, and not to a loopback, private, link-local or metadata address (unless
    GAZE_WEBHOOK_ALLOW_PRIVATE). The webhooks service checks again before every attempt."""
    if url is None:
        return None
    problem = target_problem(url, settings.webhook_allow_private)
    if problem is not None:
        raise ApiError(falcon.HTTP_400, f"webhook: {problem}", "webhook")
    return url


def preset_slug(slug: str) -> str:
    if not SLUG_RE.match(slug):
        raise ApiError(falcon.HTTP_404, f"preset not found: {slug}", "slug")
    return slug


IDEMPOTENCY_KEY_RE = re.compile(r"[\x20-\x7e]{1,255}")


def idempotency_key(value: str | None) -> str | None:
    """The Idempotency-Key header: absent → None; else 1-255 printable ASCII characters, or a 400."""
    if value is None:
        return None
    if not IDEMPOTENCY_KEY_RE.fullmatch(value):
        raise ApiError(falcon.HTTP_400, "Idempotency-Key: must be 1 to 255 printable ASCII characters",
                       "Idempotency-Key")
    return value


def job_id(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ApiError(falcon.HTTP_404, f"job not found: {value}", "job_id") from None


JOBS_PAGE_DEFAULT, JOBS_PAGE_MAX = 20, 100
SINCE_LIMIT = 1e11   # Unix seconds (year 5138): beyond it a `since` is a mistake, not a time
CURSOR_RE = re.compile(r"[A-Za-z0-9_-]{1,200}")


def jobs_query(params: dict) -> dict:
    """GET /api/v1/jobs' query (status, preset, since, limit, cursor) as jobs_of's arguments, or a 400
    naming the parameter."""
    def one(name):
        value = params.get(name)
        if isinstance(value, list):
            raise ApiError(falcon.HTTP_400, f"{name}: give it once", name)
        return value if value != "" else None

    status, preset, since, limit, cursor = (one(name) for name in ("status", "preset", "since", "limit", "cursor"))
    if status is not None and status not in STATES:
        raise ApiError(falcon.HTTP_400, f"status: must be one of {', '.join(STATES)}", "status")
    if preset is not None and not SLUG_RE.match(preset):
        raise ApiError(falcon.HTTP_400, "preset: not a preset slug", "preset")
    if since is not None:
        try:
            since = float(since)
        except ValueError:
            raise ApiError(falcon.HTTP_400, "since: must be a Unix time in seconds", "since") from None
        if not math.isfinite(since) or not 0 <= since < SINCE_LIMIT:
            raise ApiError(falcon.HTTP_400, "since: must be a Unix time in seconds", "since")
    if limit is None:
        limit = JOBS_PAGE_DEFAULT
    elif not re.fullmatch(r"[0-9]{1,3}", limit) or not 1 <= int(limit) <= JOBS_PAGE_MAX:
        raise ApiError(falcon.HTTP_400, f"limit: must be an integer from 1 to {JOBS_PAGE_MAX}", "limit")
    else:
        limit = int(limit)
    if cursor is not None and not CURSOR_RE.fullmatch(cursor):
        raise ApiError(falcon.HTTP_400, "cursor: not a cursor this API gave out", "cursor")
    return {"status": status, "preset": preset, "since": since, "limit": limit, "cursor": cursor}
