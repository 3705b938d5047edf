"""The gateway's access lines, one wording for gunicorn's logger and the asyncio side: the path without
its query string (a key given as ?api_key= must never reach a log), and the job id of a job's routes."""
from __future__ import annotations

import logging
import re

LOGGER = "gunicorn.access"
_JOB_PATH = re.compile(r"^/api/v1/job/([^/]+)(?:/[a-z]+)?/?$")


def fields(method: str, path: str, status, nbytes, duration_ms: int, remote: str) -> dict:
    """The structured fields of one access line (shared/logs.py prints them in GAZE_LOG_FORMAT=json)."""
    status = str(status)
    line = {"method": method, "path": path, "status": int(status) if status.isdigit() else status,
            "bytes": nbytes, "duration_ms": duration_ms, "remote": remote}
    match = _JOB_PATH.match(path)
    if match:
        line["job_id"] = match.group(1)
    return line


def log(method: str, path: str, status, nbytes, duration_ms: int, remote: str) -> None:
    """One access line as gunicorn's access_log_format words it: `remote "METHOD path" status bytes Nms`."""
    logging.getLogger(LOGGER).info('%s "%s %s" %s %s %sms', remote, method, path, status, nbytes, duration_ms,
                                   extra=fields(method, path, status, nbytes, duration_ms, remote))
