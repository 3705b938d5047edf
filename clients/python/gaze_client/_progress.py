"""The command line's live view of jobs: one line per job, redrawn in place on a terminal; on anything else
(a pipe, a log file), a plain line each time a job changes status or place in line, or passes a quarter of
its steps."""
from __future__ import annotations

import sys
from typing import Optional, TextIO

from gaze_client.models import Job

BAR_WIDTH = 20
UP, CLEAR = "\x1b[{n}A", "\r\x1b[2K"


def describe(job: Job, bar: bool = True) -> str:
    """One job as a line: its short id, status and what it is doing."""
    head = f"{job.id[:8]}  {job.status:<10}"
    if job.status == "pending":
        if job.queue_position is None:
            return f"{head} waiting"
        ahead = job.queue_position
        return f"{head} {'next in line' if ahead == 0 else f'{ahead} ahead in line'}"
    if job.status == "processing":
        if not job.progress or not job.progress.max:
            return f"{head} starting"
        value, total = job.progress.value, job.progress.max
        text = f"step {value}/{total}"
        if bar:
            filled = round(BAR_WIDTH * value / total)
            text = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {text}"
        return f"{head} {text}"
    if job.status == "done":
        return f"{head} {job.result.image_url if job.result else ''}".rstrip()
    if job.status == "failed":
        return f"{head} {job.error or ''}".rstrip()
    return head.rstrip()


def _milestone(job: Job) -> tuple:
    """What a plain line is printed for: status, place in line, quarter of the steps."""
    quarter = None
    if job.status == "processing" and job.progress and job.progress.max:
        quarter = 4 * job.progress.value // job.progress.max
    return job.status, job.queue_position, quarter


class Display:
    """Feed it every job state seen (`update`); `close()` when done."""

    def __init__(self, ids: list[str], stream: Optional[TextIO] = None, tty: Optional[bool] = None):
        self.ids = list(ids)
        stream = self.stream = stream if stream is not None else sys.stderr
        self.tty = stream.isatty() if tty is None else tty
        self.jobs: dict[str, Job] = {}
        self.printed: dict[str, tuple] = {}
        self.drawn = 0

    def update(self, job: Job) -> None:
        if job.id not in self.ids:
            self.ids.append(job.id)
        self.jobs[job.id] = job
        if self.tty:
            self._redraw()
        elif self.printed.get(job.id) != _milestone(job):
            self.printed[job.id] = _milestone(job)
            self.stream.write(describe(job, bar=False) + "\n")
            self.stream.flush()

    def _redraw(self) -> None:
        out = [UP.format(n=self.drawn)] if self.drawn else []
        for job_id in self.ids:
            job = self.jobs.get(job_id)
            out.append(CLEAR + (describe(job) if job else f"{job_id[:8]}  ...") + "\n")
        self.drawn = len(self.ids)
        self.stream.write("".join(out))
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()
