"""One resource per route; each responder validates, makes its RPC calls and shapes the answer."""
from __future__ import annotations

import json

import falcon

from services.gateway import generation, validation


def _presets_answer(presets) -> dict:
    return {"presets": [{key: p[key] for key in ("preset_id", "slug", "name", "has_cover")} for p in presets]}


class PresetsResource:
    auth_required = True

    def __init__(self, presets):
        self.presets = presets   # PresetLookup: the read model, the presets service behind it

    def on_get(self, req, resp):
        snapshot = self.presets.snapshot()
        if snapshot is None:
            resp.media = _presets_answer(self.presets.rpc.call("presets", "list"))   # no read model: as before
            return
        # Rendered once per revision: the same bytes Falcon's JSON handler makes of resp.media.
        resp.data = snapshot.memo("api.presets", lambda: json.dumps(
            _presets_answer(snapshot.summaries()), ensure_ascii=False).encode())
        resp.content_type = falcon.MEDIA_JSON


class GenerateResource:
    auth_required = True

    def __init__(self, rpc, settings, presets=None):
        self.rpc = rpc
        self.settings = settings
        self.presets = presets   # PresetLookup (None: resolve through the presets service)

    def on_post(self, req, resp, slug):
        body = validation.read_json_object(req, self.settings.max_body_bytes)
        job_ids = generation.submit(self.rpc, self.settings, slug, body, self.presets)
        resp.status = falcon.HTTP_202
        resp.media = {"jobs": [{"job_id": job_id, "status": "queued"} for job_id in job_ids]}


class JobResource:
    auth_required = True

    def __init__(self, jobs):
        self.jobs = jobs   # JobLookup: the read model, the jobs service behind it

    def on_get(self, req, resp, job_id):
        resp.media = self.jobs.get(validation.job_id(job_id))
