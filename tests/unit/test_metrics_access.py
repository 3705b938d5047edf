"""Who may read /metrics (services/gateway/ops/auth.py: metrics_allowed). Without GAZE_METRICS_TOKEN only the
gateway's own host (loopback) gets it, and a caller from anywhere else a 404 without reading any source: a
gateway published to a network (compose's port, `gaze up` on 0.0.0.0) shows none of it there, and an
anonymous caller cannot make it call the jobs service or the broker. With a token, its bearer is required
from everywhere, loopback included."""
from __future__ import annotations

import pytest

from tests.fakes import FakeProbes
from tests.helpers import app_client, gateway_settings

TOKEN = "a-metrics-token"
LOOPBACK = ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"]
ELSEWHERE = ["203.0.113.5", "172.18.0.1", "10.0.0.7", "192.168.1.20", "::ffff:203.0.113.5", "2001:db8::1"]


def client(tmp_path, token=""):
    probes = FakeProbes()
    env = {"GAZE_METRICS_TOKEN": token} if token else {}
    return app_client(gateway_settings(tmp_path, env), probes=probes), probes


@pytest.mark.parametrize("address", LOOPBACK)
def test_without_a_token_the_gateways_own_host_reads_it(tmp_path, address):
    test_client, probes = client(tmp_path)
    result = test_client.simulate_get("/metrics", remote_addr=address)
    assert result.status_code == 200
    assert "gaze_jobs" in result.text and probes.calls


@pytest.mark.parametrize("address", ELSEWHERE)
def test_without_a_token_any_other_caller_gets_a_404_that_reads_nothing(tmp_path, address):
    test_client, probes = client(tmp_path)
    for headers in ({}, {"X-Forwarded-For": "127.0.0.1"}, {"Forwarded": "for=127.0.0.1"},
                    {"Authorization": "Bearer anything"}):
        result = test_client.simulate_get("/metrics", remote_addr=address, headers=headers)
        assert result.status_code == 404, (address, headers)
        assert "gaze_" not in result.text and result.json == {"error": "404 Not Found"}
    assert probes.calls == []      # no RPC, no broker connection for a refused caller


@pytest.mark.parametrize("address", [*LOOPBACK[:1], *ELSEWHERE[:2]])
def test_with_a_token_every_caller_needs_it(tmp_path, address):
    test_client, probes = client(tmp_path, TOKEN)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        refused = test_client.simulate_get("/metrics", remote_addr=address, headers=headers)
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
        assert "gaze_" not in refused.text
    assert probes.calls == []
    allowed = test_client.simulate_get("/metrics", remote_addr=address, headers={"Authorization": f"Bearer {TOKEN}"})
    assert allowed.status_code == 200 and "gaze_jobs" in allowed.text
