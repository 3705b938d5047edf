"""One resource per route; each responder validates, makes its RPC calls and shapes the answer."""
from __future__ import annotations

import json

import falcon

from services.gateway import generation, validation

from services.gateway.stores import idempotency


def _presets_answer(presets) -> dict:
    return {"presets": [{key: p[key] for key in ("preset_id", "slug", "name", "has_cover")} for p in presets]}


class PresetsResource:
    auth_required = True

    def __init__(self, presets):
        self.presets = presets   # PresetLookup: the read model, the presets service behind it

    def on_get(self, req, resp):
        snapshot = self.presets.snapshot()
        if snapshot is None:
            resp.media = _presets_answer(self.presets.presets_service.list())   # no read model: as before
            return
        # Rendered once per revision: the same bytes Falcon's JSON handler makes of resp.media.
        resp.data = snapshot.memo("api.presets", lambda: json.dumps(
            _presets_answer(snapshot.summaries()), ensure_ascii=False).encode())
        resp.content_type = falcon.MEDIA_JSON


class GenerateResource:
    auth_required = True

    def __init__(self, rpc, settings, presets=None, idempotency_store=None, jobs=None):
        self.rpc = rpc
        self.settings = settings
        self.presets = presets   # PresetLookup (None: resolve through the presets service)
        self.idempotency = idempotency_store   # IdempotencyStore (None: the header is validated, not honoured)
        self.jobs = jobs   # JobLookup: records the jobs' owner for the key's event stream (None: not recorded)

    def on_post(self, req, resp, slug):
        key = validation.idempotency_key(req.get_header("Idempotency-Key"))
        body = validation.read_json_object(req, self.settings.max_body_bytes)

        owner = req.context.get("api_key_name")
        if key is None or self.idempotency is None:
            job_ids = generation.submit(self.rpc, self.settings, slug, body, self.presets, owner=owner)
        else:
            # the API key the auth middleware accepted, from the same places: keys are scoped per API key
            api_key = req.get_header("X-API-Key") or req.get_param("api_key")
            request_fingerprint = idempotency.fingerprint(slug, body)
            # the same key and body always make the same create request id, so a retry after a 503 whose
            # jobs were created after all gets those jobs back from the jobs service, not new ones
            request_id = idempotency.request_id(api_key, key, request_fingerprint)

            def submit():
                return generation.submit(self.rpc, self.settings, slug, body, self.presets, request_id, owner)

            job_ids, replayed = self.idempotency.submit(api_key, key, request_fingerprint, submit)
            if replayed:
                resp.set_header("Idempotent-Replayed", "true")
        if self.jobs is not None and owner:
            self.jobs.own(job_ids, owner)
        resp.status = falcon.HTTP_202
        resp.media = {"jobs": [{"job_id": job_id, "status": "queued"} for job_id in job_ids]}


class JobResource:
    auth_required = True

    def __init__(self, jobs):
        self.jobs = jobs   # JobLookup: the read model, the jobs service behind it

    def on_get(self, req, resp, job_id):
        resp.media = self.jobs.get(validation.job_id(job_id))


class JobEventsResource:
    """GET /api/v1/job/<id>/events opens here: the key check, then the job's current document, the
    stream's first event. The gateway's asyncio side (services/gateway/hold/app.py) streams the rest."""

    auth_required = True

    def __init__(self, jobs):
        self.jobs = jobs   # JobLookup

    def on_get(self, req, resp, job_id):
        resp.media = self.jobs.get(validation.job_id(job_id))


class KeyEventsResource:
    """GET /api/v1/events?preset= opens here: the key check and the filter; answers whose jobs the stream
    follows ({"owner": the key's name, "preset": slug or null}) to the asyncio side, which streams them."""

    auth_required = True

    def on_get(self, req, resp):
        preset = validation.jobs_query({"preset": req.params.get("preset")})["preset"]   # GET /api/v1/jobs' rule
        resp.media = {"owner": req.context.get("api_key_name"), "preset": preset}


class JobCancelResource:
    """POST /api/v1/job/<id>/cancel: 202 when this call cancelled it, 409 with its status when it had ended."""

    auth_required = True

    def __init__(self, jobs):
        self.jobs = jobs   # JobLookup

    def on_post(self, req, resp, job_id):
        answer = self.jobs.cancel(validation.job_id(job_id))
        job = answer["job"]
        if not answer["cancelled"]:
            resp.status = falcon.HTTP_409
            resp.media = {"error": f"the job has already ended ({job['status']})", "status": job["status"]}
            return
        resp.status = falcon.HTTP_202
        resp.media = {"id": job["id"], "status": job["status"]}


class JobsResource:
    """GET /api/v1/jobs: the calling API key's jobs, newest first, a page at a time."""

    auth_required = True

    def __init__(self, jobs):
        self.jobs = jobs   # JobLookup

    def on_get(self, req, resp):
        query = validation.jobs_query(req.params)
        resp.media = self.jobs.jobs_of(req.context.get("api_key_name"), **query)
