"""The queue page: the newest jobs with their live status; queue.js adds new ones as they are made."""
from __future__ import annotations

from datetime import datetime, timezone

from services.gateway.web.render import render
from shared.contracts.jobs import JobsClient

QUEUE_SIZE = 100


def created(timestamp) -> dict:
    """A job's unix time as ISO 8601 (for <time datetime>; the page shows it in the browser's time
    zone) and as a readable UTC fallback."""
    if timestamp is None:
        return {"iso": "", "text": ""}
    moment = datetime.fromtimestamp(float(timestamp), tz=timezone.utc)
    return {"iso": moment.isoformat(timespec="seconds").replace("+00:00", "Z"),
            "text": moment.strftime("%Y-%m-%d %H:%M:%S UTC")}


class QueueResource:
    login_required = True

    def __init__(self, rpc):
        self.jobs_service = JobsClient(rpc)

    def on_get(self, req, resp):
        jobs = self.jobs_service.list(QUEUE_SIZE)
        render(req, resp, "queue.html", jobs=jobs, queue_size=QUEUE_SIZE, created=created)
