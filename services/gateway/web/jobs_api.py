"""JSON for the UI's live status polling, behind the admin session (the REST API needs a key)."""
from __future__ import annotations

import falcon

from services.gateway import validation
from services.gateway.errors import ApiError
from services.gateway.web.queue import FILTERS, in_batches, status_filter
from shared.contracts.jobs import JobsClient

MAX_IDS = 100


class UiJobsResource:
    login_required = True
    json_api = True

    def __init__(self, rpc, jobs):
        self.jobs_service = JobsClient(rpc)
        self.jobs = jobs   # JobLookup: read model first

    def on_get(self, req, resp):
        # ?ids=a,b,c (what gaze.js sends) or ?ids=a&ids=b: Falcon 4 does not split commas by itself.
        ids = [part for item in req.get_param_as_list("ids") or [] for part in item.split(",") if part]
        if ids:
            if len(ids) > MAX_IDS:
                raise ApiError(falcon.HTTP_400, f"ids: at most {MAX_IDS}", "ids")
            jobs = self.jobs.get_many([validation.job_id(i) for i in ids])
        else:
            # the queue page's poll: its newest jobs (of its ?status= filter), in the order the page shows them
            recent = req.get_param_as_int("recent", min_value=1, max_value=500, default=50)
            status, problem = status_filter(req.get_param("status"))
            if problem:
                raise ApiError(falcon.HTTP_400, f"status: must be one of {', '.join(FILTERS)}", "status")
            jobs = in_batches(self.jobs_service.list(recent, status))
        resp.media = {"jobs": self.jobs.with_positions(jobs)}


class UiJobCancelResource:
    """POST /ui/jobs/<id>/cancel (session and CSRF header, from gaze.js): the API's cancel for the UI."""

    login_required = True
    json_api = True

    def __init__(self, jobs):
        self.jobs = jobs   # JobLookup

    def on_post(self, req, resp, job_id):
        answer = self.jobs.cancel(validation.job_id(job_id))
        resp.status = falcon.HTTP_202 if answer["cancelled"] else falcon.HTTP_409
        resp.media = {"job": answer["job"], "cancelled": answer["cancelled"]}
