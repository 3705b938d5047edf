"""The one generation path. The REST API and the web UI's Generate form both call `submit`: same
validation, same preset resolution, same job creation; they differ only in how the body arrives."""
from __future__ import annotations

import threading
import uuid

from services.gateway import validation
from services.gateway.stores.rpc import BROKER_UNREACHABLE, ServiceUnavailable
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
    job_ids = JobsClient(rpc).create(spec, request.count, str(request_id or uuid.uuid4()), owner,
                                     webhook, request.webhook_events() if webhook else None)
    _injected_broker_failure(settings, owner)
    return job_ids


_faults_lock = threading.Lock()   # the gateway's WSGI threads are OS threads (no eventlet in the gateway)
_faults_answered: dict = {}       # API key name -> 503s injected so far, this process


def _injected_broker_failure(settings, owner) -> None:
    """GAZE_FAULT_GENERATE_503_AFTER_CREATE=N (tests only; 0, the default, is off): the first N generate
    requests of each API key name in this process answer 503 as a broker failure does, although their jobs
    were created: the answer a client gets when the broker fails after `jobs.create` committed. A retry
    with the same Idempotency-Key must then get those jobs, not new ones (tests/e2e/test_client.py)."""
    limit = settings.fault_generate_503_after_create
    if limit <= 0:
        return
    with _faults_lock:
        answered = _faults_answered.get(owner, 0)
        if answered >= limit:
            return
        _faults_answered[owner] = answered + 1
    raise ServiceUnavailable(BROKER_UNREACHABLE, "injected by GAZE_FAULT_GENERATE_503_AFTER_CREATE after the"
                                                 " jobs were created")
