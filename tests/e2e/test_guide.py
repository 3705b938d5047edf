"""The user's API guide, walked end to end through HTTP with every service running.

The guide's own code blocks are executed verbatim; only the placeholder key and the host (the test
stack runs on its own port) are substituted, exactly as a user would edit them."""
import http.client
import io
import json
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from PIL import Image, ImageChops

pytestmark = pytest.mark.e2e

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "gaze-rest-api-guide.md"


def guide_blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", GUIDE.read_text(), flags=re.S)


def run_bash(script, stack, timeout=120):
    env = dict(stack.env, API_KEY=stack.key, HOST=stack.url)
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return done.stdout


def fetch_image(stack, image_url):
    response = stack.get(image_url, headers={})   # image files need no key
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/png"
    return Image.open(io.BytesIO(response.content))


def same_pixels(a, b):
    return a.size == b.size and ImageChops.difference(a.convert("RGB"), b.convert("RGB")).getbbox() is None


def test_guide_is_the_users_copy():
    """The user's guide verbatim, then our additions (documented after it, never changing it)."""
    shipped = Path(__file__).resolve().parents[3] / "shared" / "reference" / "gaze-rest-api-guide.md"
    if shipped.exists():
        assert GUIDE.read_text().startswith(shipped.read_text())
        assert "\n## Additions (beyond the guide above)\n" in GUIDE.read_text()[len(shipped.read_text()):]
    assert len(guide_blocks("bash")) == 3 and len(guide_blocks("python")) == 1


def test_list_presets(stack):
    body = stack.get("/api/v1/presets").json()
    example = next(p for p in body["presets"] if p["slug"] == "example_01")
    assert example == {"preset_id": "example_01", "slug": "example_01", "name": "Example Preset",
                       "has_cover": False}


def test_guide_single_image_curl_loop(stack):
    script = guide_blocks("bash")[0]
    script = script.replace('API_KEY="your-key-here"', f'API_KEY="{stack.key}"')
    script = script.replace('HOST="http://localhost:5782"', f'HOST="{stack.url}"')
    out = run_bash(script, stack)
    assert "Status: done" in out
    job = json.loads(out[out.index("{"):])
    assert set(job) >= {"id", "label", "status", "error", "result"}
    assert job["label"] == "Preset: Example Preset – preview"
    assert job["error"] is None
    assert job["result"]["image_url"] == "/static/uploads/" + job["result"]["relative_path"]
    assert re.fullmatch(r"presets/example_01/gen_\d+_[0-9a-f]{32}\.png", job["result"]["relative_path"])
    image = fetch_image(stack, job["result"]["image_url"])
    assert image.size == (832, 1216)
    assert image.text["seed"] == str(job["result"]["seed"])


def test_guide_three_images_with_extra_prompts(stack):
    out = run_bash(guide_blocks("bash")[1], stack)
    jobs = json.loads(out)["jobs"]
    assert len(jobs) == 3 and all(j["status"] == "queued" for j in jobs)
    paths = set()
    for queued in jobs:
        job = stack.wait_job(queued["job_id"])
        assert job["status"] == "done", job
        image = fetch_image(stack, job["result"]["image_url"])
        assert image.size == (832, 1216)
        assert image.text["prompt"].endswith(", smiling, outdoors")
        assert image.text["negative_prompt"].endswith(", blurry")
        paths.add(job["result"]["relative_path"])
    assert len(paths) == 3


def test_guide_reproduce_a_specific_image(stack):
    script = guide_blocks("bash")[2]
    first, second = (json.loads(run_bash(script, stack))["jobs"][0]["job_id"] for _ in range(2))
    a, b = stack.wait_job(first), stack.wait_job(second)
    assert a["result"]["seed"] == b["result"]["seed"] == 927640517599332
    assert a["result"]["relative_path"] != b["result"]["relative_path"]
    assert same_pixels(fetch_image(stack, a["result"]["image_url"]), fetch_image(stack, b["result"]["image_url"]))


def test_random_seed_is_reported_and_reproduces_the_image(stack):
    original = stack.wait_job(stack.post("/api/v1/generate/example_01", json={}).json()["jobs"][0]["job_id"])
    seed = original["result"]["seed"]
    again = stack.wait_job(stack.post("/api/v1/generate/example_01", json={"seed": seed}).json()["jobs"][0]["job_id"])
    other = stack.wait_job(
        stack.post("/api/v1/generate/example_01", json={"seed": seed + 1}).json()["jobs"][0]["job_id"])
    image = fetch_image(stack, original["result"]["image_url"])
    assert same_pixels(image, fetch_image(stack, again["result"]["image_url"]))
    assert not same_pixels(image, fetch_image(stack, other["result"]["image_url"]))


def test_guide_python_example(stack, tmp_path):
    code = guide_blocks("python")[0]
    code = code.replace('HOST = "http://localhost:5782"', f'HOST = "{stack.url}"')
    code = code.replace('API_KEY = "your-key-here"', f'API_KEY = "{stack.key}"')
    script = tmp_path / "example.py"
    script.write_text(code)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Available presets: [" in done.stdout and "'Example Preset'" in done.stdout
    image_url = re.search(r"Image: (\S+)", done.stdout).group(1)
    assert re.search(r"Seed: \d+", done.stdout)
    fetch_image(stack, image_url[len(stack.url):])


def test_twenty_jobs_in_one_request_get_twenty_files(stack):
    response = stack.post("/api/v1/generate/example_01", json={"count": 20, "width": 256, "height": 256})
    assert response.status_code == 202
    jobs = [stack.wait_job(j["job_id"], timeout=120) for j in response.json()["jobs"]]
    assert all(j["status"] == "done" for j in jobs)
    paths = {j["result"]["relative_path"] for j in jobs}
    assert len(paths) == 20
    assert all((stack.media_root / p).is_file() for p in paths)
    # each ran on a replica of the stack; which ones is the scheduler's call (README "Scheduling": a short
    # burst on one checkpoint may stay with the replica serving it, as seen in CI), not the guide's
    replicas = {j["replica"] for j in jobs}
    assert 1 <= len(replicas) <= 2 and all(replicas), replicas


@pytest.mark.parametrize("method, path, kwargs, status, field", [
    ("post", "/api/v1/generate/example_01", {"json": {"count": 21}}, 400, "count"),
    ("post", "/api/v1/generate/example_01", {"json": {"width": 512}}, 400, "height"),
    ("post", "/api/v1/generate/example_01", {"json": {"checkpoint": "Nope/x.safetensors"}}, 400, "checkpoint"),
    ("post", "/api/v1/generate/example_01", {"data": "not json"}, 400, "body"),
    ("post", "/api/v1/generate/example_01", {"data": "x" * 70000}, 413, "body"),
    ("post", "/api/v1/generate/no_such_preset", {"json": {}}, 404, None),
    ("get", "/api/v1/job/783f0268-ba85-4426-8ca2-6393c844c887", {}, 404, None),
    ("get", "/api/v1/job/not-a-uuid", {}, 404, "job_id"),
])
def test_bad_input_gets_a_json_4xx(stack, method, path, kwargs, status, field):
    response = getattr(stack, method)(path, **kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]
    if field:
        assert body["field"] == field


def raw_get(stack, raw_path):
    """GET `raw_path` exactly as written: `requests` (urllib3) would resolve the dot segments before
    sending, so the gateway would never see them."""
    url = urlsplit(stack.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        conn.putrequest("GET", raw_path, skip_accept_encoding=True)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read()
    finally:
        conn.close()


@pytest.mark.parametrize("template", [
    "/static/uploads/../{name}",
    "/static/uploads/presets/../../{name}",
    "/static/uploads/./../{name}",
    "/static/uploads/%2e%2e/{name}",
    "/static/uploads/%2E%2E%2F{name}",
    "/static/uploads/..%2f{name}",
    "/static/uploads/..%5c{name}",
    "/static/uploads/..\\{name}",
    "/static/uploads/%2fetc%2fpasswd",
    "/static/uploads//etc/passwd",
])
def test_a_path_out_of_the_media_directory_is_a_404_without_the_file(stack, template):
    """A file beside the media directory (the stack's own work directory holds its log and run files)
    is never served, however the way out is spelled: the request reaches the static route with its dot
    segments and encodings intact (sent raw), and is answered 4xx JSON without the file's content."""
    secret = f"not-for-clients-{uuid.uuid4().hex}"
    name = f"outside-{uuid.uuid4().hex[:8]}.txt"
    outside = stack.media_root.parent / name
    outside.write_text(secret)
    try:
        status, content_type, body = raw_get(stack, template.format(name=name))
    finally:
        outside.unlink()
    assert status in (400, 404), (status, body[:200])
    assert secret.encode() not in body and b"root:" not in body
    assert content_type.startswith("application/json") and json.loads(body)["error"]


def test_a_file_in_the_media_directory_is_served_through_the_same_raw_request(stack):
    """The raw request of the test above does reach files: the refusals are the route's, not the client's."""
    name = f"inside-{uuid.uuid4().hex[:8]}.txt"
    (stack.media_root / name).write_text("served")
    try:
        status, _, body = raw_get(stack, f"/static/uploads/{name}")
    finally:
        (stack.media_root / name).unlink()
    assert (status, body) == (200, b"served")


def test_auth_on_every_api_route(stack):
    routes = [("get", "/api/v1/presets"), ("post", "/api/v1/generate/example_01"),
              ("get", "/api/v1/job/783f0268-ba85-4426-8ca2-6393c844c887")]
    for method, path in routes:
        assert getattr(stack, method)(path, headers={}).status_code == 401
        assert getattr(stack, method)(path, headers={"X-API-Key": "gz_wrong"}).status_code == 403
    assert stack.get(f"/api/v1/presets?api_key={stack.key}", headers={}).status_code == 200


def test_health_readiness_and_metrics_across_gunicorn_workers(stack):
    """No key on the operations endpoints; /readyz turns ready once the generators have reported (they do
    at start); /metrics counts by route template, summed over the gateway's gunicorn workers."""
    health = requests.get(stack.url + "/healthz", timeout=10)
    assert (health.status_code, health.json()) == (200, {"status": "ok"})

    deadline = time.monotonic() + 40
    while True:
        ready = requests.get(stack.url + "/readyz", timeout=10)
        if ready.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"broker": {"ok": True}, "database": {"ok": True}, "generators": {"ok": True}}

    def scrape_presets_count():
        text = requests.get(stack.url + "/metrics", timeout=10).text
        match = re.search(r'^gaze_http_requests_total\{[^}]*route="/api/v1/presets",status="200"\} (\S+)$',
                          text, flags=re.M)
        return text, float(match.group(1)) if match else 0.0

    # both replicas are seen healthy (each reports at start, then again after 1, 2, 4 ... seconds)
    deadline = time.monotonic() + 40
    while not re.search(r'^gaze_generator_replicas\{state="healthy"\} 2\.0$', scrape_presets_count()[0], flags=re.M):
        assert time.monotonic() < deadline, scrape_presets_count()[0]
        time.sleep(0.5)

    _, before = scrape_presets_count()
    for _ in range(20):  # a new connection each: gunicorn hands them to whichever worker accepts first
        assert requests.get(stack.url + "/api/v1/presets", headers=stack.headers(), timeout=10).status_code == 200
    text, after = scrape_presets_count()
    assert 'gaze_http_requests_total{method="GET",route="/api/v1/presets",status="200"}' in text
    assert after - before == 20, "every worker's requests are counted, whichever worker answers the scrape"
    assert re.search(r'^gaze_scrape_source_up\{source="jobs"\} 1\.0$', text, flags=re.M)
    assert 'gaze_jobs{status="done"}' in text and 'gaze_queue_messages_ready{queue="gaze.generate"}' in text


def test_cli_regenerate_replaces_the_key(stack):
    """Runs last in this module: it replaces the stack's key."""
    done = subprocess.run([str(Path(sys.executable).parent / "gaze"), "api-key", "regenerate"],
                          capture_output=True, text=True, env=stack.env, timeout=60)
    assert done.returncode == 0, done.stderr
    new_key = done.stdout.strip().splitlines()[-1]
    assert new_key.startswith("gz_") and new_key != stack.key
    assert stack.get("/api/v1/presets").status_code == 403
    stack.key = new_key
    assert stack.get("/api/v1/presets").status_code == 200
