"""The gateway's side of the Python client: GET /client and /client/<wheel> (services/gateway/web/client_wheel.py,
the wheel already built: building it runs pip, see tests/e2e/test_client.py), the Settings page's quick
start, and the fault hook the client's retry test relies on (GAZE_FAULT_GENERATE_503_AFTER_CREATE)."""
import pytest

from services.gateway import generation
from services.gateway.web import client_wheel
from tests.fakes import FakeKeys, FakeRpc
from tests.helpers import admin_get, app_client, assert_json_error, gateway_settings, make_client, post_generate

WHEEL = client_wheel.wheel_name()


@pytest.fixture
def built(tmp_path):
    """The wheel where the gateway would have built it (<run dir>/client-wheel/<hash of the sources>/)."""
    wheel = client_wheel.ClientWheel(client_wheel.SOURCE, tmp_path / "run" / "client-wheel")
    path = wheel.cache_root / wheel.digest / wheel.name
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PK\x03\x04 a wheel")
    return path


@pytest.fixture
def client(tmp_path):
    return app_client(gateway_settings(tmp_path / "media", {"GAZE_RUN_DIR": str(tmp_path / "run")}))


def test_the_wheel_is_named_after_the_package_version():
    assert WHEEL == "gaze_client-0.1.0-py3-none-any.whl"


def test_the_index_links_the_wheel_without_a_key(client):
    result = client.simulate_get("/client/")
    assert result.status_code == 200 and result.headers["content-type"].startswith("text/html")
    assert f'<a href="/client/{WHEEL}">{WHEEL}</a>' in result.text
    assert f"pip install http://localhost:5782/client/{WHEEL}" in result.text


def test_the_wheel_is_served_once_built(client, built):
    result = client.simulate_get(f"/client/{WHEEL}")
    assert result.status_code == 200, result.text
    assert result.content == built.read_bytes()
    assert result.headers["content-type"] == "application/zip"
    assert WHEEL in result.headers["content-disposition"]
    assert result.headers["etag"] == f'"{built.parent.name}"'


def test_another_file_name_is_a_json_404(client, built):
    result = client.simulate_get("/client/gaze_client-0.0.1-py3-none-any.whl")
    assert_json_error(result, 404, "name")
    assert_json_error(client.simulate_get("/client/..%2f..%2fpyproject.toml"), 404)


def test_without_the_client_sources_there_is_nothing_to_serve(tmp_path, monkeypatch):
    monkeypatch.setattr(client_wheel, "SOURCE", tmp_path / "nowhere")
    client = app_client(gateway_settings(tmp_path / "media"))
    assert_json_error(client.simulate_get("/client"), 404)
    assert_json_error(client.simulate_get(f"/client/{WHEEL}"), 404)


class NoKeys(FakeKeys):
    def list(self):
        return []


def test_the_settings_page_shows_the_two_line_quick_start(tmp_path):
    rpc = FakeRpc(results={("webhooks", "deliveries"): []})
    client = app_client(gateway_settings(tmp_path), rpc=rpc, keys=NoKeys())
    result = admin_get(client, "/settings")
    assert result.status_code == 200
    assert f"pip install http://localhost:5782/client/{WHEEL}\n" in result.text
    assert ("GAZE_URL=http://localhost:5782 GAZE_API_KEY=your-key-here gaze-client generate example_01"
            " --wait --out images") in result.text


def test_the_fault_hook_answers_503_after_the_jobs_were_created_then_lets_requests_through(tmp_path, monkeypatch):
    monkeypatch.setattr(generation, "_faults_answered", {})
    client, rpc = make_client(tmp_path, env={"GAZE_FAULT_GENERATE_503_AFTER_CREATE": "2"})
    statuses = [post_generate(client, {}).status_code for _ in range(3)]
    assert statuses == [503, 503, 202]
    assert [method for _, method, _ in rpc.calls].count("create") == 3   # the jobs were created every time


def test_the_fault_hook_is_off_by_default(tmp_path):
    client, rpc = make_client(tmp_path)
    assert post_generate(client, {}).status_code == 202
    assert gateway_settings(tmp_path).fault_generate_503_after_create == 0
