"""The queue page over a fake jobs service (FakeRpc), and the login every admin page asks for, through the
real Falcon app. (The settings page and its API keys, over PostgreSQL: tests/integration/test_web_settings.py.)"""
from __future__ import annotations

import html
import re

import pytest

from tests.fakes import FakeRpc
from tests.helpers import admin_get, app_client, gateway_settings

HTML = {"Accept": "text/html"}


# jobs.metrics() as the queue page reads it (its lines and replicas): two checkpoints waiting, one with a
# name that is markup; a replica holding one checkpoint and serving another, one never loaded, one stale
FARM = {
    "jobs_by_status": {"pending": 7}, "durations": {}, "backlog": 7,
    "lines": [{"checkpoint": "SDXL/sd_xl_base_1.0.safetensors", "waiting": 2, "oldest_wait_seconds": 4.25},
              {"checkpoint": "<b>Rare</b>/x&y.safetensors", "waiting": 5, "oldest_wait_seconds": 75.0}],
    "replicas": [
        {"replica": "gpu-b", "backend": "simulated", "healthy": True, "detail": "ok", "age_seconds": 2.0,
         "state": "busy", "worker_pid": 12, "restarts": 0, "loaded_checkpoint": "Illustrious/model.safetensors",
         "resident_checkpoints": ["Illustrious/model.safetensors", "<i>Old</i>.safetensors"],
         "serving": "<b>Rare</b>/x&y.safetensors", "loads": 3, "load_seconds_total": 9.5, "mean_load_seconds": 3.1,
         "mean_job_seconds": 0.5},
        {"replica": "gpu-a", "backend": "simulated", "healthy": False, "detail": "backend <down>", "age_seconds": 1.0,
         "state": "idle", "worker_pid": 11, "restarts": 1, "loaded_checkpoint": None, "resident_checkpoints": None,
         "serving": None, "loads": 0, "load_seconds_total": 0.0, "mean_load_seconds": None, "mean_job_seconds": None},
        {"replica": "gone", "backend": "simulated", "healthy": True, "detail": "ok", "age_seconds": 86400.0,
         "state": "idle", "worker_pid": 9, "restarts": 0, "loaded_checkpoint": "SDXL/sd_xl_base_1.0.safetensors",
         "serving": None, "loads": 40, "load_seconds_total": 120.0},
    ],
}


@pytest.fixture
def rpc():
    return FakeRpc(jobs=(), results={("jobs", "metrics"): FARM})


@pytest.fixture
def client(tmp_path, rpc):
    return app_client(gateway_settings(tmp_path), rpc=rpc)


@pytest.mark.parametrize("path", ["/settings", "/queue", "/settings/api-guide"])
def test_pages_need_a_login(client, path):
    result = client.simulate_get(path, headers=HTML)
    assert result.status_code == 303
    assert result.headers["location"] == f"/login?next=%2F{path[1:].replace('/', '%2F')}"
    result = client.simulate_get(path, headers=HTML, cookies={"gaze_session": "stale"})
    assert result.status_code == 303


def test_api_guide_is_plain_text(client):
    result = admin_get(client, "/settings/api-guide")
    assert result.status_code == 200
    assert result.headers["content-type"].startswith("text/plain")
    assert "REST API Key" in result.text and "X-API-Key" in result.text


JOBS = [
    {"id": "11111111-1111-4111-8111-111111111111", "label": "Preset: Example – preview", "status": "pending",
     "error": None, "result": None, "preset": "example_01", "attempts": 0, "replica": None, "progress": None,
     "created_at": 1773601346.5},
    {"id": "22222222-2222-4222-8222-222222222222", "label": "Preset: Example – preview", "status": "processing",
     "error": None, "result": None, "preset": "example_01", "attempts": 1, "replica": "gpu-a",
     "progress": {"value": 7, "max": 28}, "created_at": 1773601340.0},
    {"id": "33333333-3333-4333-8333-333333333333", "label": "Preset: Second – preview", "status": "done",
     "error": None, "preset": "second", "attempts": 1, "replica": "gpu-b", "progress": {"value": 28, "max": 28},
     "result": {"image_url": "/static/uploads/presets/second/gen_1773601300_33.png",
                "relative_path": "presets/second/gen_1773601300_33.png", "seed": 42},
     "created_at": 1773601300.0},
    {"id": "44444444-4444-4444-8444-444444444444", "label": "Preset: Second – preview", "status": "failed",
     "error": "ComfyUI is unreachable <after 3 attempts>", "result": None, "preset": "second", "attempts": 3,
     "replica": "gpu-a", "progress": None, "created_at": 1773601200.0},
]


def row(text, job_id):
    match = re.search(rf'<tr class="job-row" data-job-id="{job_id}".*?</tr>', text, re.S)
    assert match, job_id
    return match.group(0)


def test_queue_page_lists_the_recent_jobs(client, rpc):
    rpc.jobs = {job["id"]: job for job in JOBS}   # newest first, as jobs.list answers
    result = admin_get(client, "/queue")
    assert result.status_code == 200
    assert rpc.called("jobs", "list") == [(100, None)]
    text = result.text
    for job in JOBS:
        r = row(text, job["id"])
        assert f'data-status="{job["status"]}"' in r
        assert f'<span class="status status-{job["status"]}">{job["status"]}</span>' in r
        assert html.escape(job["label"]) in r
        assert f'href="/presets/{job["preset"]}"' in r
        assert f'<td data-label="Attempts" class="job-attempts">{job["attempts"]}</td>' in r
        assert 'class="job-error"' in r and 'class="job-progress"' in r
    assert "7/28" in row(text, JOBS[1]["id"])
    assert "gpu-a" in row(text, JOBS[1]["id"])
    done = row(text, JOBS[2]["id"])
    assert 'href="/static/uploads/presets/second/gen_1773601300_33.png"' in done
    assert 'src="/thumbs/256/presets/second/gen_1773601300_33.png"' in done
    assert "28/28" not in done  # progress only while processing
    failed = row(text, JOBS[3]["id"])
    assert "ComfyUI is unreachable &lt;after 3 attempts&gt;" in failed
    assert "/thumbs/" not in failed
    assert '<time class="job-created" datetime="2026-03-15T19:02:26Z">2026-03-15 19:02:26 UTC</time>' in row(
        text, JOBS[0]["id"])
    # newest first, as the service returns them
    positions = [text.index(f'data-job-id="{job["id"]}"') for job in JOBS]
    assert positions == sorted(positions)
    # the live parts: queue.js on this page only, and a row template for new jobs
    assert '/assets/queue.js' in text
    assert '<template id="queue-row-template">' in text
    assert re.search(r"class=\"muted queue-empty\"\s+hidden", text)


def test_queue_page_when_there_are_no_jobs(client, rpc):
    text = admin_get(client, "/queue").text
    assert "No jobs yet" in text
    assert not re.search(r"queue-empty\"\s+hidden", text)
    assert "/assets/queue.js" in text


@pytest.mark.parametrize("target", ["//evil.example/", "/%09/evil.example", "/%5Cevil.example", "/%0A/evil.example",
                                    "https://evil.example/", "/%0D%0A/evil.example", "/%20/evil.example"])
def test_the_login_redirect_never_leaves_the_site(client, target):
    # a logged-in admin opening /login is sent on to `next` at once: what the login form would do too
    result = admin_get(client, "/login", query_string=f"next={target}")
    assert result.status_code == 303 and result.headers["location"] == "/", target


def test_the_login_redirect_keeps_a_path_on_this_site(client):
    result = admin_get(client, "/login", query_string="next=%2Fpresets%2Fexample_01%3Fpage%3D2")
    assert result.status_code == 303 and result.headers["location"] == "/presets/example_01?page=2"


@pytest.mark.parametrize("path", ["/", "/queue", "/login", "/settings", "/api/v1/presets"])
def test_no_page_may_be_framed_by_another_site(client, path):
    result = admin_get(client, path)
    assert result.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in result.headers["content-security-policy"]


def test_every_page_names_its_icon_and_the_icon_is_served(client):
    assert '<link rel="icon" type="image/svg+xml" href="/assets/favicon.svg">' in admin_get(client, "/queue").text
    icon = client.simulate_get("/assets/favicon.svg")
    assert icon.status_code == 200 and icon.text.startswith("<svg")


# --- job ids, the status filter, failed jobs' errors, batches in order ------------------------------

def test_each_row_shows_the_short_job_id_with_the_full_one_to_copy(client, rpc):
    rpc.jobs = {job["id"]: job for job in JOBS}
    text = admin_get(client, "/queue").text
    for job in JOBS:
        r = row(text, job["id"])
        assert f'<code class="job-id" title="{job["id"]}">{job["id"][:8]}</code>' in r
        assert f'data-copy-text="{job["id"]}"' in r


@pytest.mark.parametrize("status", ["pending", "processing", "done", "failed", "cancelled"])
def test_the_status_filter_is_asked_of_the_jobs_service(client, rpc, status):
    rpc.jobs = {job["id"]: job for job in JOBS}
    result = admin_get(client, "/queue", query_string=f"status={status}")
    assert result.status_code == 200
    assert rpc.called("jobs", "list") == [(100, status)]
    shown = re.findall(r'<tr class="job-row" data-job-id="[^"]+" data-status="(\w+)"', result.text)
    assert shown == [job["status"] for job in JOBS if job["status"] == status]
    assert re.search(rf'<a href="/queue\?status={status}" data-filter="{status}" aria-current="page">', result.text)
    assert f'data-status="{status}">' in result.text        # queue.js polls with the same filter


def test_all_and_no_filter_are_the_same(client, rpc):
    for query in ("", "status=all", "status="):
        rpc.calls.clear()
        result = admin_get(client, "/queue", query_string=query)
        assert result.status_code == 200 and rpc.called("jobs", "list") == [(100, None)]
        assert '<a href="/queue" data-filter="all" aria-current="page">' in result.text


@pytest.mark.parametrize("status", ["bogus", "DONE", "<script>", "x" * 5000])
def test_an_unknown_status_is_a_400_page_that_shows_every_job(client, rpc, status):
    rpc.jobs = {job["id"]: job for job in JOBS}
    result = admin_get(client, "/queue", query_string=f"status={status}")
    assert result.status_code == 400
    assert result.headers["content-type"].startswith("text/html")
    assert "There is no job status" in result.text and "showing every status" in result.text
    assert "<script>" not in result.text.split("<body>")[1]
    assert rpc.called("jobs", "list") == [(100, None)]
    assert len(re.findall(r'<tr class="job-row" data-job-id="[^"]', result.text)) == len(JOBS)


def test_the_live_poll_filters_and_refuses_an_unknown_status(client, rpc):
    rpc.jobs = {job["id"]: job for job in JOBS}
    result = admin_get(client, "/ui/jobs", query_string="recent=10&status=failed")
    assert result.status_code == 200
    assert [job["id"] for job in result.json["jobs"]] == [JOBS[3]["id"]]
    assert rpc.calls[-1] == ("jobs", "list", (10, "failed"))
    result = admin_get(client, "/ui/jobs", query_string="recent=10&status=bogus")
    assert result.status_code == 400 and result.json["field"] == "status"


def test_a_failed_jobs_error_is_shown_in_its_row(client, rpc):
    rpc.jobs = {JOBS[3]["id"]: JOBS[3]}
    r = row(admin_get(client, "/queue", query_string="status=failed").text, JOBS[3]["id"])
    assert '<span class="job-error">ComfyUI is unreachable &lt;after 3 attempts&gt;</span>' in r


def batch(preset, start, count, first_seed=0):
    """A request's jobs as jobs.list answers them (newest first): job i made at start + i µs."""
    tag = f"{preset[:3]}{round(start * 1e6) % 1000:03d}"
    return [{**JOBS[0], "id": f"{tag}{i:02d}-1111-4111-8111-111111111111", "preset": preset,
             "created_at": start + i * 1e-6, "label": f"seed {first_seed + i}"} for i in reversed(range(count))]


def test_batches_are_shown_newest_first_each_in_the_order_it_was_made(client, rpc):
    older, newer = batch("alpha", 1773601000.000001, 3), batch("alpha", 1773601000.000030, 20)
    single = batch("beta", 1773601000.000031, 1)   # another preset's request, made meanwhile: its own batch
    rpc.jobs = {job["id"]: job for job in single + newer + older}
    text = admin_get(client, "/queue").text
    shown = re.findall(r'<tr class="job-row" data-job-id="([^"]+)"', text)
    expected = [j["id"] for j in single] + [j["id"] for j in reversed(newer)] + [j["id"] for j in reversed(older)]
    assert shown == expected
    # the live poll answers in the same order, so new rows keep it
    assert [j["id"] for j in admin_get(client, "/ui/jobs", query_string="recent=50").json["jobs"]] == expected


# --- the farm: jobs waiting per checkpoint, and each replica's model, line and loads ---------------------

def farm_rows(text, kind):
    """{name: the row's HTML} of the farm's checkpoint or replica table."""
    return {html.unescape(name): row for row, name in re.findall(
        rf'(<tr class="{kind}-row" data-{kind}="([^"]*)">.*?</tr>)', text, re.S)}


def test_the_queue_page_shows_the_backlog_of_each_checkpoint_escaped(client, rpc):
    text = admin_get(client, "/queue").text
    assert rpc.called("jobs", "metrics") == [()]
    farm = text.split('<section class="farm" id="farm"')[1].split("</section>")[0]
    assert '<span class="farm-backlog-count">7</span> jobs waiting for a generator' in farm
    lines = farm_rows(farm, "checkpoint")
    # longest wait first; a checkpoint name is text, never markup
    assert list(lines) == ["<b>Rare</b>/x&y.safetensors", "SDXL/sd_xl_base_1.0.safetensors"]
    rare = lines["<b>Rare</b>/x&y.safetensors"]
    assert '<code class="checkpoint-name">&lt;b&gt;Rare&lt;/b&gt;/x&amp;y.safetensors</code>' in rare
    assert '<td data-label="Waiting" class="farm-number checkpoint-waiting">5</td>' in rare
    assert '<td data-label="Oldest wait" class="farm-number checkpoint-oldest">1 min 15 s</td>' in rare
    assert ">4.2 s</td>" in lines["SDXL/sd_xl_base_1.0.safetensors"]
    assert "<b>" not in farm and "<i>" not in farm


def test_the_queue_page_shows_each_replicas_model_line_and_loads(client, rpc):
    text = admin_get(client, "/queue").text
    replicas = farm_rows(text, "replica")
    assert list(replicas) == ["gpu-a", "gpu-b"], "by name; the stale one is left out"
    busy = replicas["gpu-b"]
    assert re.search(r'class="replica-loaded"><code class="checkpoint-name">Illustrious/model.safetensors</code>', busy)
    assert "also in memory: <code class=\"checkpoint-name\">&lt;i&gt;Old&lt;/i&gt;.safetensors</code>" in busy
    assert ('class="replica-serving"><code class="checkpoint-name">&lt;b&gt;Rare&lt;/b&gt;/x&amp;y.safetensors</code>'
            in busy)
    assert '<td data-label="Loads" class="farm-number replica-loads">3</td>' in busy
    assert ">9.5 s <span class=\"muted\">(recently 3.1 s each)</span></td>" in busy
    idle = replicas["gpu-a"]
    assert '<span class="muted">none</span>' in idle and "shared line only" in idle
    assert '<span class="replica-detail">backend &lt;down&gt;</span>' in idle
    assert '<td data-label="Loads" class="farm-number replica-loads">0</td>' in idle and "recently" not in idle
    assert "1 more not heard from within 1 min 30 s." in text


def test_the_farm_alone_is_what_queue_js_refreshes(client, rpc):
    result = admin_get(client, "/queue", query_string="part=farm")
    assert result.status_code == 200 and result.headers["content-type"].startswith("text/html")
    assert result.text.lstrip().startswith('<section class="farm" id="farm"')
    assert set(farm_rows(result.text, "replica")) == {"gpu-a", "gpu-b"}
    assert rpc.called("jobs", "list") == [], "no job list for the farm alone"
    assert "/queue?part=farm" in client.simulate_get("/assets/queue.js").text


def test_a_jobs_service_without_lines_still_shows_the_page(client, rpc):
    """Before checkpoint-aware scheduling jobs.metrics() had no lines, backlog nor replica checkpoints."""
    rpc.results[("jobs", "metrics")] = {"jobs_by_status": {}, "durations": {}, "replicas": [
        {"replica": "old", "backend": "preview", "healthy": True, "detail": "ok", "age_seconds": 1.0, "state": "idle",
         "worker_pid": 1, "restarts": 0}]}
    result = admin_get(client, "/queue")
    assert result.status_code == 200
    assert '<span class="farm-backlog-count">0</span> jobs waiting' in result.text
    assert farm_rows(result.text, "checkpoint") == {}
    old = farm_rows(result.text, "replica")["old"]
    assert '<td data-label="Loads" class="farm-number replica-loads">0</td>' in old and "shared line only" in old
