"""Jinja2 set-up and the helpers templates use."""
from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, quote

import falcon
from jinja2 import Environment, FileSystemLoader, select_autoescape

from shared import job_states
from shared.media import image_url
from services.gateway.errors import ApiError

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
ASSETS_PREFIX = "/assets"
THUMB_SIZES = (256, 512)
# The largest form a UI page may post (login included); a resource can set its own `max_form_bytes`.
MAX_FORM_BYTES = 1024 * 1024
MAX_FORM_FIELDS = 1000
FORM_TYPE = "application/x-www-form-urlencoded"

env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html"]),
                  trim_blocks=True, lstrip_blocks=True)


def thumb_url(relative_path: str, size: int = 512) -> str:
    return f"/thumbs/{size}/{quote(relative_path)}"


# the job state machine, rendered into every page for the scripts (gaze.js reads it): never copied into them
env.globals.update(image_url=image_url, thumb_url=thumb_url, assets=ASSETS_PREFIX,
                   job_states=job_states.client_definition(), terminal_states=job_states.TERMINAL)


def render(req, resp, template: str, status=falcon.HTTP_200, **context) -> None:
    session = getattr(req.context, "session", None)
    context.setdefault("csrf_token", session["csrf_token"] if session else None)
    context.setdefault("current_path", req.path)
    resp.status = status
    resp.content_type = "text/html; charset=utf-8"
    resp.text = env.get_template(template).render(**context)


def error_page(req, resp, exc, message) -> None:
    """An error as the UI's HTML page (errors.register's `render_page`)."""
    render(req, resp, "error.html", status=exc.status, message=message, status_line=exc.status)


def form_values(req, limit: int = MAX_FORM_BYTES) -> dict:
    """An urlencoded form as {name: str} (a field sent twice keeps its last value), read once per request
    and at most `limit` bytes of it, whatever the framing says (413 past it); a body that is not UTF-8 or
    holds too many fields is a 400. Anything else than a form is {} (fetch calls send their CSRF token as
    a header)."""
    if "form" in req.context:
        return req.context.form
    if req.content_length is not None and req.content_length > limit:
        raise ApiError(falcon.HTTP_413, f"body larger than {limit} bytes", "body")
    form = {}
    if (req.content_type or "").split(";")[0].strip().lower() == FORM_TYPE:
        # as validation.read_json_object: a chunked body (no Content-Length) is read from the stream the
        # server ends at the body's end (gunicorn: wsgi.input_terminated), never more than limit + 1 bytes
        stream = (req.stream if req.content_length is None and req.env.get("wsgi.input_terminated")
                  else req.bounded_stream)
        raw = stream.read(limit + 1)
        if len(raw) > limit:
            raise ApiError(falcon.HTTP_413, f"body larger than {limit} bytes", "body")
        try:
            form = dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS,
                                  errors="strict"))
        except UnicodeDecodeError:
            raise ApiError(falcon.HTTP_400, "form: not UTF-8", "body") from None
        except ValueError:
            raise ApiError(falcon.HTTP_400, f"form: more than {MAX_FORM_FIELDS} fields", "body") from None
    req.context.form = form
    return form


def redirect(resp, location: str) -> None:
    """303 to `location`, keeping whatever cookies the responder set (a raised redirect would too, but
    this keeps the flow visible in the responder)."""
    resp.status = falcon.HTTP_303
    resp.location = location
