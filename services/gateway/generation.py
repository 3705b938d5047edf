"""The one generation path. The REST API and the web UI's Generate form both call `submit`: same
validation, same preset resolution, same job creation; they differ only in how the body arrives."""
from __future__ import annotations

import uuid

from services.gateway import validation
from shared.contracts.jobs import JobsClient
from shared.contracts.presets import PresetsClient


def submit(rpc, settings, slug: str, body: dict, presets=None, request_id=None, owner=None) -> list[str]:
    """Validate `body` (the guide's fields), resolve the preset and queue the jobs; returns job ids.
    `presets` (a PresetLookup) resolves from the presets read model where it can; without it, or where
    it cannot, the presets service resolves. `request_id` (a UUID) lets the jobs service tell a repeated
    delivery of this request from a new one; a fresh one is made when none is given. `owner`: the name of
    the API key that asked (None: the web UI). A `webhook` in the body is checked here (a 400 naming it)
    and stored with the jobs; the webhooks service delivers their events."""
    slug = validation.preset_slug(slug)
    request = validation.generate_request(body, settings)
    webhook = validation.webhook_target(request.webhook, settings)
    if presets is not None:
        spec = presets.resolve(slug, request.overrides())
    else:
        spec = PresetsClient(rpc).resolve(slug, request.overrides())
    return JobsClient(rpc).create(spec, request.count, str(request_id or uuid.uuid4()), owner,
                                  webhook, request.webhook_events() if webhook else None)
