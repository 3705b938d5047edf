"""/metrics through the real gateway process (gunicorn, uvicorn workers, a2wsgi) bound to every interface, as
`gaze up` and compose's published port run it: without GAZE_METRICS_TOKEN the gateway's own host reads it
over loopback, and a request that arrives on the machine's network address gets a 404, whatever
X-Forwarded-For it claims; a local proxy forwarding an outside client (X-Forwarded-For, which uvicorn trusts
from loopback) is refused too. The rule itself, case by case: tests/unit/test_metrics_access.py."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.helpers import wait_until
from tests.stack import _free_port

GUNICORN = str(Path(sys.executable).parent / "gunicorn")


def network_address():
    """This machine's address on its default route (no packet is sent), or None."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))
        address = probe.getsockname()[0]
        if not address.startswith("127."):
            return address
    return None


def test_only_loopback_reads_metrics_without_a_token(settings, tmp_path):
    address = network_address()
    if address is None:
        pytest.skip("this machine has no address other than loopback")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "GAZE_METRICS_TOKEN"}
    env.update(GAZE_DATABASE_URL=settings.database_url, GAZE_AMQP_URI=settings.amqp_uri,
               GAZE_REDIS_PREFIX=settings.redis_prefix, GAZE_BIND=f"0.0.0.0:{port}", GAZE_GATEWAY_WORKERS="1",
               GAZE_RUN_DIR=str(tmp_path / "run"), GAZE_MEDIA_ROOT=str(tmp_path / "media"))
    gateway = subprocess.Popen([GUNICORN, "--config", "python:services.gateway.gunicorn_conf",
                                "services.gateway.asgi:app"], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)

    def answers():
        with contextlib.suppress(requests.ConnectionError):
            return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).ok

    try:
        wait_until(answers, timeout=60, what="the gateway")
        local = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=30)
        assert local.status_code == 200 and "gaze_http_requests_total" in local.text
        for url, headers in ((f"http://{address}:{port}/metrics", {}),
                             (f"http://{address}:{port}/metrics", {"X-Forwarded-For": "127.0.0.1"}),
                             (f"http://127.0.0.1:{port}/metrics", {"X-Forwarded-For": "203.0.113.9"})):
            refused = requests.get(url, headers=headers, timeout=30)
            assert refused.status_code == 404 and "gaze_" not in refused.text, (url, headers)
    finally:
        os.killpg(gateway.pid, signal.SIGTERM)
        gateway.wait(timeout=30)
