"""Structured logging for every GAZE process (see README "Observability").

`configure(service)` is called once at start-up by each process: the nameko services (operations/runner.py)
and each gunicorn worker (services/gateway/wsgi.py); gunicorn's own error and access loggers use the
same formatter through `services.gateway.gunicorn_conf.GunicornLogger`. Every record, GAZE's own and
those of nameko, kombu, amqp and the other libraries, goes through one handler on the root logger:

- GAZE_LOG_FORMAT=json (the default): one JSON object per line,
  `{"ts", "level", "service", "pid", "logger", "msg", <structured fields>..., "exc"}`;
- GAZE_LOG_FORMAT=text: one human-readable line with the structured fields appended as key=value
  (a traceback follows on its own lines), for developers.

Structured fields are what a call passes as `extra={"job_id": ..., "replica": ..., "attempt": ...}`,
plus whatever `fields(...)` bound for the code running inside it (in this green thread, and carried
in the worker process by services/generator/worker.py for the job it runs), so a backend's lines carry the job id too.

An API key never reaches the log: `?api_key=...`/`api_key=...` values and anything shaped like a GAZE
key (`gz_...`) are masked in the rendered line, whatever field they were in.
"""
from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
import time

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

FORMATS = ("json", "text")
REDACTED = "[redacted]"
# the key in a query string or key=value text, and a GAZE key anywhere (gz_ + 43 url-safe characters)
_SECRETS = (
    (re.compile(r"(?i)(api[_-]?key=)[^&\s\"'\\,;]+"), r"\1" + REDACTED),
    (re.compile(r"\bgz_[A-Za-z0-9_\-]{16,}"), "gz_" + REDACTED),
    # a URI's password (amqp://user:password@host): kombu names every node of a failover list it tried,
    # masking only the first
    (re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s\"']*:)[^@\s/\"']+@"), r"\1" + REDACTED + "@"),
)
# fields whose value is never shown, whatever it is
_SECRET_FIELDS = frozenset({"api_key", "x_api_key", "x-api-key", "password", "authorization", "token"})
# the record attributes logging itself sets (and ours, rendered as ts/level/...): not structured fields
_NOT_FIELDS = frozenset(RESERVED_ATTRS) | {"taskName", "message", "asctime"}

_bound: contextvars.ContextVar[dict | None] = contextvars.ContextVar("gaze_log_fields", default=None)


@contextlib.contextmanager
def fields(**values):
    """Add these structured fields to every record logged inside the block (this green thread only; an
    OS thread started inside sees them when run with contextvars.copy_context().run)."""
    token = _bound.set({**(_bound.get() or {}), **{k: v for k, v in values.items() if v is not None}})
    try:
        yield
    finally:
        _bound.reset(token)


def redact(text: str) -> str:
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def _iso(created: float) -> str:
    """ISO 8601, UTC, milliseconds: 2025-06-01T12:00:00.123Z."""
    seconds = int(created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int((created - seconds) * 1000):03d}Z"


def _structured(record: logging.LogRecord) -> dict:
    """The record's structured fields: its extras, then the bound ones it does not override."""
    found = {key: value for key, value in record.__dict__.items()
             if key not in _NOT_FIELDS and not key.startswith("_")}
    for key, value in (_bound.get() or {}).items():
        found.setdefault(key, value)
    return {key: (REDACTED if key.lower() in _SECRET_FIELDS else value) for key, value in found.items()}


class JsonLineFormatter(JsonFormatter):
    """python-json-logger's formatter with GAZE's fixed fields first and secrets masked."""

    def __init__(self, service: str):
        super().__init__(reserved_attrs=list(_NOT_FIELDS))
        self.service = service

    def add_fields(self, log_data, record, message_dict):
        log_data["ts"] = _iso(record.created)
        log_data["level"] = record.levelname
        log_data["service"] = self.service
        log_data["pid"] = record.process
        log_data["logger"] = record.name
        log_data["msg"] = record.message
        log_data.update(_structured(record))
        log_data.update({k: v for k, v in message_dict.items() if k not in ("exc_info", "stack_info")})
        exc = message_dict.get("exc_info")
        if exc:
            log_data["exc"] = exc
        if message_dict.get("stack_info"):
            log_data["stack"] = message_dict["stack_info"]

    def serialize_log_record(self, log_data) -> str:
        return redact(super().serialize_log_record(log_data))


def _text_value(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return json.dumps(text) if (not text or re.search(r"[\s=\"]", text)) else text


class TextLineFormatter(logging.Formatter):
    """`<ts> <LEVEL> <service>[<pid>] <logger>: <msg> key=value ...`, traceback on the following lines."""

    def __init__(self, service: str):
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        line = f"{_iso(record.created)} {record.levelname} {self.service}[{record.process}] {record.name}: {message}"
        extra = " ".join(f"{key}={_text_value(value)}" for key, value in _structured(record).items())
        if extra:
            line = f"{line}  {extra}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        elif record.exc_text:
            line = f"{line}\n{record.exc_text}"
        if record.stack_info:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        return redact(line)


def formatter(service: str, log_format: str = "json") -> logging.Formatter:
    if log_format not in FORMATS:
        raise ValueError(f"GAZE_LOG_FORMAT must be one of {', '.join(FORMATS)}, not {log_format!r}")
    return JsonLineFormatter(service) if log_format == "json" else TextLineFormatter(service)


def configure(service: str, settings=None, stream=None, level=logging.INFO) -> logging.Handler:
    """Send every logger's records, as structured lines, to `stream` (default stderr). Idempotent: a
    second call replaces the handler of the first. `settings` defaults to shared.config.load()."""
    if settings is None:
        from shared import config

        settings = config.load()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter(service, settings.log_format))
    handler._gaze = True
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_gaze", False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("kombu").setLevel(logging.WARNING)   # a line per connection and consumer otherwise
    logging.captureWarnings(True)                          # warnings become records too, not bare stderr text
    return handler
