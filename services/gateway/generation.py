"""The one generation path. The REST API and the web UI's Generate form both call `submit`: same
validation, same preset resolution, same job creation; they differ only in how the body arrives."""
from __future__ import annotations

from services.gateway import validation


def submit(rpc, settings, slug: str, body: dict) -> list[str]:
    """Validate `body` (the guide's fields), resolve the preset and queue the jobs; returns job ids."""
    slug = validation.preset_slug(slug)
    request = validation.generate_request(body, settings)
    spec = rpc.call("presets", "resolve", slug, request.overrides())
    return rpc.call("jobs", "create", spec, request.count)
