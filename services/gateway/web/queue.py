"""The queue page: the newest jobs with their live status, optionally of one status only (?status=);
queue.js adds new ones as they are made. Above them, the farm: the jobs waiting per checkpoint and, per
generator replica, the checkpoint it holds, the line it serves and what its model loads cost; queue.js
refreshes that part from `?part=farm` (the same HTML, alone)."""
from __future__ import annotations

from datetime import datetime, timezone

import falcon

from shared.config import Settings
from shared.job_states import STATES
from shared.schemas import MAX_COUNT
from services.gateway.web.render import render
from shared.contracts.jobs import JobsClient, replica_state

QUEUE_SIZE = 100
ALL = "all"
FILTERS = (ALL, *STATES)   # the page's status filter, in the job state machine's order
# The jobs of one request (a batch) are created MAX_COUNT microseconds apart at most (the jobs service
# stamps job i with the transaction's time + i µs), so jobs of one preset created closer together than
# this are one batch. Half a microsecond of slack: the times arrive as float seconds.
BATCH_SPAN = (MAX_COUNT - 0.5) * 1e-6


def created(timestamp) -> dict:
    """A job's unix time as ISO 8601 (for <time datetime>; the page shows it in the browser's time
    zone) and as a readable UTC fallback."""
    if timestamp is None:
        return {"iso": "", "text": ""}
    moment = datetime.fromtimestamp(float(timestamp), tz=timezone.utc)
    return {"iso": moment.isoformat(timespec="seconds").replace("+00:00", "Z"),
            "text": moment.strftime("%Y-%m-%d %H:%M:%S UTC")}


def in_batches(jobs: list[dict]) -> list[dict]:
    """`jobs` (newest first, as jobs.list answers) as the queue shows them: the newest batch first, and
    each batch's jobs in the order they were made (job i, with seed + i, before job i + 1), not backwards."""
    batches: list[list[dict]] = []
    latest: dict = {}     # preset -> its newest batch so far (another preset's batch may interleave)
    for job in sorted(jobs, key=lambda j: j.get("created_at") or 0.0):
        current = latest.get(job.get("preset"))
        if (current is not None and job.get("created_at") is not None and current[0].get("created_at") is not None
                and job["created_at"] - current[0]["created_at"] < BATCH_SPAN):
            current.append(job)
        else:
            latest[job.get("preset")] = [job]
            batches.append(latest[job.get("preset")])
    return [job for batch in reversed(batches) for job in batch]


def duration(seconds) -> str:
    """A number of seconds as a person reads it: "0.8 s", "42 s", "3 min 5 s", "2 h 10 min"; "" for none."""
    if seconds is None:
        return ""
    seconds = max(float(seconds), 0.0)
    if seconds == 0:
        return "0 s"
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


def farm(metrics: dict, stale_after: float) -> dict:
    """What the page shows of jobs.metrics(): the lines (checkpoints with waiting jobs, longest wait
    first), the total backlog, the replicas heard from within `stale_after` seconds (by name) and how many
    others there are. A jobs service from before checkpoint-aware scheduling answers without lines and
    without the replicas' checkpoints: those parts are shown empty."""
    lines = sorted(metrics.get("lines") or [], key=lambda line: -(line.get("oldest_wait_seconds") or 0.0))
    replicas = metrics.get("replicas") or []
    fresh = [replica for replica in replicas if replica_state(replica, stale_after) != "stale"]
    backlog = metrics.get("backlog")
    if backlog is None:
        backlog = sum(line.get("waiting") or 0 for line in lines)
    return {"lines": lines, "backlog": backlog,
            "replicas": sorted(fresh, key=lambda replica: replica["replica"]),
            "stale_replicas": len(replicas) - len(fresh), "stale_after": stale_after}


def status_filter(raw) -> tuple[str | None, str | None]:
    """?status= as (the status to list, or None for all; a message when the value is not one)."""
    if raw in (None, "", ALL):
        return None, None
    if raw in STATES:
        return raw, None
    return None, f"There is no job status \u201c{raw[:40]}\u201d: showing every status."


class QueueResource:
    login_required = True

    def __init__(self, rpc, settings: Settings | None = None):
        self.jobs_service = JobsClient(rpc)
        # a replica not heard from for three status intervals is stale (as /readyz and /metrics say)
        self.stale_after = 3 * (settings or Settings).status_interval_seconds

    def on_get(self, req, resp):
        if req.get_param("part") == "farm":   # queue.js's refresh of the farm
            render(req, resp, "queue_farm.html", farm=self.farm(), duration=duration)
            return
        status, problem = status_filter(req.get_param("status"))
        jobs = in_batches(self.jobs_service.list(QUEUE_SIZE, status))
        render(req, resp, "queue.html", status=falcon.HTTP_400 if problem else falcon.HTTP_200, jobs=jobs,
               queue_size=QUEUE_SIZE, created=created, filters=FILTERS, current_filter=status or ALL,
               filter_problem=problem, farm=self.farm(), duration=duration)

    def farm(self) -> dict:
        return farm(self.jobs_service.metrics(), self.stale_after)
