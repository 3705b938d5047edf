"""Jinja2 set-up and the helpers templates use."""
from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import falcon
from jinja2 import Environment, FileSystemLoader, select_autoescape

from shared import job_states
from shared.media import image_url

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
ASSETS_PREFIX = "/assets"
THUMB_SIZES = (256, 512)

env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html"]),
                  trim_blocks=True, lstrip_blocks=True)


def thumb_url(relative_path: str, size: int = 512) -> str:
    return f"/thumbs/{size}/{quote(relative_path)}"


# the job state machine, rendered into every page for the scripts (gaze.js reads it): never copied into them
env.globals.update(image_url=image_url, thumb_url=thumb_url, assets=ASSETS_PREFIX,
                   job_states=job_states.client_definition())


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


def form_values(req) -> dict:
    """An urlencoded form as {name: str}; fields sent twice keep their last value."""
    media = req.get_media(default_when_empty={})
    if not isinstance(media, dict):
        return {}
    return {key: (value[-1] if isinstance(value, list) else value) for key, value in media.items()}


def redirect(resp, location: str) -> None:
    """303 to `location`, keeping whatever cookies the responder set (a raised redirect would too, but
    this keeps the flow visible in the responder)."""
    resp.status = falcon.HTTP_303
    resp.location = location
