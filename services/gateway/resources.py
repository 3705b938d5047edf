"""One resource per route; each responder validates, makes its RPC calls and shapes the answer."""
from __future__ import annotations

import falcon

from services.gateway import generation, validation


class PresetsResource:
    auth_required = True

    def __init__(self, rpc):
        self.rpc = rpc

    def on_get(self, req, resp):
        presets = self.rpc.call("presets", "list")
        resp.media = {"presets": [{key: p[key] for key in ("preset_id", "slug", "name", "has_cover")}
                                  for p in presets]}


class GenerateResource:
    auth_required = True

    def __init__(self, rpc, settings):
        self.rpc = rpc
        self.settings = settings

    def on_post(self, req, resp, slug):
        body = validation.read_json_object(req, self.settings.max_body_bytes)
        job_ids = generation.submit(self.rpc, self.settings, slug, body)
        resp.status = falcon.HTTP_202
        resp.media = {"jobs": [{"job_id": job_id, "status": "queued"} for job_id in job_ids]}


class JobResource:
    auth_required = True

    def __init__(self, jobs):
        self.jobs = jobs   # JobLookup: the read model, the jobs service behind it

    def on_get(self, req, resp, job_id):
        resp.media = self.jobs.get(validation.job_id(job_id))
