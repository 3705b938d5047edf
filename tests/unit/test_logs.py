"""shared/logs.py: every process's structured log lines (JSON by default, text for developers), the job
id as a field, exceptions as a field, an API key never in a line. (gunicorn's access and error lines
through the same formatter, in a process of their own: tests/integration/test_gateway_processes.py.)"""
from __future__ import annotations

import contextvars
import dataclasses
import io
import json
import logging
import os
import re
import threading

import pytest

from shared import config, logs
from tests.helpers import LOG_TIMESTAMP

KEY = "gz_" + "S3cr3tK3y-abcdefghijklmnopqrstuvwxyz012345"   # the shape of a real key: gz_ + 43 characters
JOB_ID = "0b6f5c1e-8a53-4b4e-9a43-0a8d1f0c2f11"


@pytest.fixture
def capture():
    """configure() on the real root logger, into a buffer; the root's handlers are restored after."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.getLogger("kombu").level)
    buffers = []

    def configure(service="jobs", log_format="json"):
        buffer = io.StringIO()
        logs.configure(service, dataclasses.replace(config.Settings(), log_format=log_format), stream=buffer)
        buffers.append(buffer)
        return buffer

    yield configure
    for handler in [h for h in root.handlers if getattr(h, "_gaze", False)]:
        root.removeHandler(handler)
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    logging.getLogger("kombu").setLevel(saved[2])
    logging.captureWarnings(False)


def lines(buffer):
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_a_record_with_a_job_id_is_one_json_object_with_the_job_id_as_a_field(capture):
    out = capture("generator")
    logging.getLogger("services.generator.service").info(
        "job %s: started on %s (attempt %d)", JOB_ID, "gen-a", 2,
        extra={"job_id": JOB_ID, "replica": "gen-a", "attempt": 2})
    [line] = lines(out)
    assert list(line)[:6] == ["ts", "level", "service", "pid", "logger", "msg"]
    assert LOG_TIMESTAMP.match(line["ts"]), line["ts"]
    assert line["level"] == "INFO"
    assert line["service"] == "generator"
    assert line["pid"] == os.getpid()
    assert line["logger"] == "services.generator.service"
    assert line["msg"] == f"job {JOB_ID}: started on gen-a (attempt 2)"   # the message text is unchanged
    assert (line["job_id"], line["replica"], line["attempt"]) == (JOB_ID, "gen-a", 2)
    assert "exc" not in line


def test_library_loggers_go_through_the_same_formatter_and_kombu_chatter_is_left_out(capture):
    out = capture("jobs")
    logging.getLogger("nameko.containers").warning("worker slow")
    logging.getLogger("amqp").warning("connection reset")
    logging.getLogger("kombu.connection").info("a line per connection")
    logging.getLogger("kombu.connection").warning("broker gone")
    assert [(line["logger"], line["msg"], line["service"]) for line in lines(out)] == [
        ("nameko.containers", "worker slow", "jobs"), ("amqp", "connection reset", "jobs"),
        ("kombu.connection", "broker gone", "jobs")]


def test_configure_twice_keeps_one_handler(capture):
    capture()
    out = capture()
    logging.getLogger("x").info("once")
    assert [line["msg"] for line in lines(out)] == ["once"]
    assert len([h for h in logging.getLogger().handlers if getattr(h, "_gaze", False)]) == 1


def test_an_exception_is_a_field_of_the_same_line(capture):
    out = capture()
    try:
        raise RuntimeError("backend fell over")
    except RuntimeError:
        logging.getLogger("services.generator.service").exception(
            "job %s: backend crashed", JOB_ID, extra={"job_id": JOB_ID})
    [line] = lines(out)   # one line: the traceback is inside it, not on lines of its own
    assert line["level"] == "ERROR"
    assert line["job_id"] == JOB_ID
    assert line["exc"].startswith("Traceback (most recent call last):")
    assert "RuntimeError: backend fell over" in line["exc"]


def test_text_format_is_one_readable_line_with_the_fields_appended(capture):
    out = capture("generator", "text")
    log = logging.getLogger("services.generator.service")
    log.info("job %s: done in %.2fs -> %s", JOB_ID, 1.5, "a/b.png",
             extra={"job_id": JOB_ID, "replica": "gen a", "attempt": 1})
    [line] = out.getvalue().splitlines()
    assert re.match(rf"^\S+Z INFO generator\[{os.getpid()}\] services.generator.service: "
                    rf"job {JOB_ID}: done in 1.50s -> a/b.png  job_id={JOB_ID} replica=\"gen a\" attempt=1$", line), line
    assert LOG_TIMESTAMP.match(line.split()[0])


def test_text_format_puts_the_traceback_after_the_line(capture):
    out = capture("jobs", "text")
    try:
        raise ValueError("bad")
    except ValueError:
        logging.getLogger("jobs").exception("oops", extra={"job_id": JOB_ID})
    first, *rest = out.getvalue().splitlines()
    assert first.endswith(f"oops  job_id={JOB_ID}")
    assert rest[0] == "Traceback (most recent call last):" and rest[-1] == "ValueError: bad"


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_an_api_key_never_appears(capture, log_format):
    out = capture("gateway", log_format)
    log = logging.getLogger("services.gateway.stores.rpc")
    log.warning("GET /api/v1/job/%s?api_key=%s failed", JOB_ID, KEY)
    log.warning("request failed", extra={"api_key": KEY, "url": f"http://h/x?a=1&api_key={KEY}&b=2"})
    try:
        raise PermissionError(f"key {KEY} rejected")
    except PermissionError:
        log.exception("auth: %s", f"X-API-Key: {KEY}")
    with logs.fields(api_key=KEY):
        log.info("bound")
    text = out.getvalue()
    assert KEY not in text and KEY[3:] not in text and "S3cr3tK3y" not in text
    assert text.count("[redacted]") >= 6
    if log_format == "json":
        parsed = lines(out)
        assert parsed[1]["api_key"] == "[redacted]"
        assert parsed[1]["url"] == "http://h/x?a=1&api_key=[redacted]&b=2"


def test_bound_fields_reach_lines_logged_inside_the_block_and_an_os_thread_run_in_its_context(capture):
    out = capture()
    log = logging.getLogger("services.generator.backends.comfyui")
    with logs.fields(job_id=JOB_ID, replica="gen-a", attempt=1):
        log.info("prompt %s: submitted", "p1")
        context = contextvars.copy_context()   # how a backend's own thread keeps the job's fields
        thread = threading.Thread(target=context.run, args=(log.info, "prompt %s: done", "p1"))
        thread.start()
        thread.join()
        log.info("explicit wins", extra={"attempt": 2})
    log.info("after the block")
    parsed = lines(out)
    assert [(p["msg"], p.get("job_id"), p.get("attempt")) for p in parsed] == [
        ("prompt p1: submitted", JOB_ID, 1), ("prompt p1: done", JOB_ID, 1), ("explicit wins", JOB_ID, 2),
        ("after the block", None, None)]


def test_log_format_comes_from_the_environment_once_and_is_checked():
    assert config.load({}).log_format == "json"
    assert config.load({"GAZE_LOG_FORMAT": " Text "}).log_format == "text"
    with pytest.raises(ValueError, match="GAZE_LOG_FORMAT"):
        logs.configure("jobs", dataclasses.replace(config.Settings(), log_format="xml"), stream=io.StringIO())


def test_a_uris_password_is_masked_in_every_address_of_a_failover_list():
    """kombu logs "Cannot connect to amqp://guest:**@a:5701//: ..." masking the first address of a `;`
    list only; the others would show their passwords."""
    line = ("Cannot connect to amqp://guest:**@127.0.0.1:5701//: refused. Trying again: "
            "amqp://gaze:s3cret@rmq-1:5672/;amqp://gaze:an0ther@rmq-2:5672/ postgresql://gaze:pw@db/gaze")
    masked = logs.redact(line)
    assert "s3cret" not in masked and "an0ther" not in masked and ":pw@" not in masked
    assert f"amqp://gaze:{logs.REDACTED}@rmq-1:5672/;amqp://gaze:{logs.REDACTED}@rmq-2:5672/" in masked
    assert f"postgresql://gaze:{logs.REDACTED}@db/gaze" in masked
    assert logs.redact("https://example.com:8443/path and http://host:80/") == "https://example.com:8443/path and http://host:80/"
