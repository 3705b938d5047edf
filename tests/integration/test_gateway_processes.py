"""The gateway's side that only shows across processes, each test in processes of its own: the request
counters of several worker processes adding up (prometheus_client's multiprocess mode), gunicorn_conf's
multiprocess directory, and gunicorn's access and error lines through the structured log formatter
(services/gateway/gunicorn_conf.py, shared/logs.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.helpers import LOG_TIMESTAMP, metric_value

ROOT = Path(__file__).resolve().parents[2]
KEY = "gz_" + "S3cr3tK3y-abcdefghijklmnopqrstuvwxyz012345"   # the shape of a real key: gz_ + 43 characters
JOB_ID = "0b6f5c1e-8a53-4b4e-9a43-0a8d1f0c2f11"


# --- several gunicorn workers: the metrics in multiprocess mode -----------------------------------------

WORKER = textwrap.dedent("""
    import sys
    from tests.fakes import AUTH
    from tests.helpers import app_client, gateway_settings

    requests, scrape = int(sys.argv[1]), sys.argv[2] == "scrape"
    client = app_client(gateway_settings(sys.argv[3]))
    for _ in range(requests):
        assert client.simulate_get("/api/v1/presets", headers=AUTH).status_code == 200
    if scrape:
        sys.stdout.write(client.simulate_get("/metrics").text)
""")


def test_request_counters_add_up_across_worker_processes(tmp_path):
    """Like gunicorn's workers: separate processes sharing PROMETHEUS_MULTIPROC_DIR; a scrape answered by
    any one of them counts the requests of all of them, including those of processes that have exited."""
    shared_dir = tmp_path / "prometheus"
    shared_dir.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(shared_dir), "PYTHONPATH": str(ROOT)}

    def worker(requests, scrape=False):
        done = subprocess.run([sys.executable, "-c", WORKER, str(requests), "scrape" if scrape else "-",
                               str(tmp_path / "media")], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    worker(5)
    worker(7)
    text = worker(3, scrape=True)
    assert len(list(shared_dir.glob("counter_*.db"))) == 3
    assert metric_value(text, "gaze_http_requests_total", method="GET", route="/api/v1/presets", status="200") == 15
    assert metric_value(text, "gaze_http_request_duration_seconds_count", method="GET", route="/api/v1/presets") == 15
    # the scrape-time metrics come along in multiprocess mode too
    assert metric_value(text, "gaze_jobs", status="done") == 17


GUNICORN_CONF = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from services.gateway import gunicorn_conf

    directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    print(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "counter_999.db").write_bytes(b"left by an earlier gunicorn")
    gunicorn_conf.on_starting(None)
    assert directory.is_dir() and not list(directory.iterdir()), list(directory.iterdir())

    (directory / "gauge_livesum_4242.db").write_bytes(b"x")
    (directory / "counter_4242.db").write_bytes(b"x")
    gunicorn_conf.child_exit(None, type("Worker", (), {"pid": 4242})())
    assert sorted(p.name for p in directory.iterdir()) == ["counter_4242.db"]  # counters stay summed
""")


def test_gunicorn_conf_puts_the_multiprocess_dir_under_the_run_dir_and_empties_it_at_start(tmp_path):
    # in a process of its own: importing gunicorn_conf sets PROMETHEUS_MULTIPROC_DIR for its process
    env = {key: val for key, val in os.environ.items() if key.upper() != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(GAZE_RUN_DIR=str(tmp_path / "run"), PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", GUNICORN_CONF], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str((tmp_path / "run" / "prometheus").resolve())


# --- gunicorn's log lines --------------------------------------------------------------------------

GUNICORN_ACCESS = textwrap.dedent("""
    import datetime, types
    from gunicorn.config import Config
    from services.gateway import gunicorn_conf

    cfg = Config()
    cfg.set("accesslog", gunicorn_conf.accesslog)
    cfg.set("access_log_format", gunicorn_conf.access_log_format)
    logger = gunicorn_conf.logger_class(cfg)
    logger.info("Booting worker with pid: %s", 4242)
    resp = types.SimpleNamespace(status="200 OK", headers=[("Content-Type", "application/json")], sent=57)
    req = types.SimpleNamespace(headers=[("X-API-KEY", KEY)])
    for path in ("/api/v1/job/JOB", "/api/v1/presets"):
        environ = {"REQUEST_METHOD": "GET", "RAW_URI": path + "?api_key=" + KEY, "SERVER_PROTOCOL": "HTTP/1.1",
                   "PATH_INFO": path, "QUERY_STRING": "api_key=" + KEY, "REMOTE_ADDR": "10.0.0.7"}
        logger.access(resp, req, environ, datetime.timedelta(milliseconds=12))
""")


def test_gunicorn_access_and_error_lines_are_json_without_the_query_string(tmp_path):
    # in a process of its own: importing gunicorn_conf sets PROMETHEUS_MULTIPROC_DIR for its process
    env = {key: val for key, val in os.environ.items() if key.upper() != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(GAZE_RUN_DIR=str(tmp_path / "run"), PYTHONPATH=str(ROOT), GAZE_LOG_FORMAT="json")
    script = GUNICORN_ACCESS.replace("KEY", repr(KEY)).replace("JOB", JOB_ID)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert KEY not in done.stdout + done.stderr and "api_key" not in done.stdout
    [booting] = [json.loads(line) for line in done.stderr.splitlines() if "Booting" in line]
    assert (booting["service"], booting["logger"], booting["level"]) == ("gateway", "gunicorn.error", "INFO")
    job, presets = [json.loads(line) for line in done.stdout.splitlines()]
    assert job["logger"] == "gunicorn.access" and job["service"] == "gateway" and LOG_TIMESTAMP.match(job["ts"])
    assert job["msg"] == f'10.0.0.7 "GET /api/v1/job/{JOB_ID}" 200 57 12ms'
    assert (job["method"], job["path"], job["status"], job["bytes"], job["duration_ms"], job["remote"]) == (
        "GET", f"/api/v1/job/{JOB_ID}", 200, 57, 12, "10.0.0.7")
    assert job["job_id"] == JOB_ID
    assert presets["path"] == "/api/v1/presets" and "job_id" not in presets
