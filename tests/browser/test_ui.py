"""The web UI in a real browser: Debian's headless Chromium driven by Playwright, against the whole
stack (a stack of their own: see conftest.py)."""
import os
import uuid
from pathlib import Path

import pytest
import requests
from playwright.sync_api import expect

from tests.stack import ADMIN_PASSWORD

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

# Set GAZE_SCREENSHOT_DIR=docs to refresh the README's screenshots while the tests run.
SCREENSHOT_DIR = os.environ.get("GAZE_SCREENSHOT_DIR")


def login(page, stack, password=ADMIN_PASSWORD):
    page.goto(stack.url + "/login")
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")


@pytest.fixture
def page(browser, stack):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    login(page, stack)
    expect(page.locator("h1")).to_have_text("Library")
    yield page
    context.close()


def shoot(page, name, full_page=False):
    if SCREENSHOT_DIR:
        page.screenshot(path=str(Path(SCREENSHOT_DIR) / name), full_page=full_page)


def generate_via_api(stack, slug, body=None):
    response = stack.post(f"/api/v1/generate/{slug}", json=body or {})
    assert response.status_code == 202, response.text
    return [stack.wait_job(j["job_id"]) for j in response.json()["jobs"]]


def test_pages_need_login_and_wrong_password_is_refused(browser, stack):
    context = browser.new_context()
    page = context.new_page()
    page.goto(stack.url + "/queue")
    assert page.url.startswith(stack.url + "/login")
    page.fill("input[name=password]", "not the password")
    page.click("button[type=submit]")
    expect(page.locator(".error")).to_contain_text("Wrong password")
    page.fill("input[name=password]", ADMIN_PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Queue")   # back where we were going
    cookie = next(c for c in context.cookies() if c["name"] == "gaze_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    context.close()


def test_state_changing_forms_refuse_a_missing_csrf_token(stack, page):
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    response = requests.post(stack.url + "/settings/api-keys/regenerate", cookies=cookies,
                             allow_redirects=False, timeout=30)
    assert response.status_code == 403
    assert stack.get("/api/v1/presets").status_code == 200      # the key was not rotated


def test_regenerate_in_settings_gives_a_key_that_works_and_kills_the_old_one(stack, page):
    old_key = stack.key
    page.goto(stack.url + "/settings")
    expect(page.locator("h2#api-key-title")).to_have_text("REST API Key")
    asked = []   # it asks first, as Revoke does: declining keeps the key
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    page.click("button:has-text('Regenerate')")
    assert asked and "stops working" in asked[0]
    assert stack.get("/api/v1/presets", headers={"X-API-Key": old_key}).status_code == 200
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("button:has-text('Regenerate')")
    new_key = page.locator("#new-api-key").input_value()
    assert new_key.startswith("gz_") and new_key != old_key
    assert stack.get("/api/v1/presets", headers={"X-API-Key": old_key}).status_code == 403
    assert stack.get("/api/v1/presets", headers={"X-API-Key": new_key}).status_code == 200
    stack.key = new_key
    page.goto(stack.url + "/settings")          # shown once: a fresh load does not show it again
    assert page.locator("#new-api-key").count() == 0
    assert new_key not in page.content()


def test_create_edit_delete_a_preset(stack, page):
    page.goto(stack.url + "/presets/new")
    page.fill("#f-slug", "Bad Slug")
    page.fill("#f-name", "Lighthouses")
    page.click("button:has-text('Create preset')")
    expect(page.locator("[aria-invalid=true]#f-slug")).to_be_visible()      # slug rules enforced
    page.fill("#f-slug", "lighthouses")
    page.fill("#f-prompt", "a lighthouse at dusk, oil painting")
    page.select_option("#f-checkpoint", "Illustrious/model.safetensors")
    page.fill("#f-width", "512")
    page.fill("#f-height", "640")
    page.click("button:has-text('Create preset')")
    expect(page.locator("h1")).to_have_text("Lighthouses")
    assert page.url.endswith("/presets/lighthouses")

    page.goto(stack.url + "/presets/new")                                     # conflicts are explained
    page.fill("#f-slug", "lighthouses")
    page.fill("#f-name", "Again")
    page.select_option("#f-checkpoint", "Illustrious/model.safetensors")
    page.click("button:has-text('Create preset')")
    expect(page.locator("#err-slug")).to_contain_text("already exists")

    page.goto(stack.url + "/presets/lighthouses/edit")
    page.fill("#f-name", "Lighthouses at dusk")
    page.click("button:has-text('Save changes')")
    expect(page.locator("h1")).to_have_text("Lighthouses at dusk")
    names = [p["name"] for p in stack.get("/api/v1/presets").json()["presets"]]
    assert "Lighthouses at dusk" in names

    page.goto(stack.url + "/presets/lighthouses/edit")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("button:has-text('Delete preset')")
    expect(page.locator("h1")).to_have_text("Library")
    assert "lighthouses" not in [p["slug"] for p in stack.get("/api/v1/presets").json()["presets"]]


def test_generate_from_a_preset_page_and_covers_in_the_library(stack, page):
    page.goto(stack.url + "/presets/new")
    page.fill("#f-slug", "harbour")
    page.fill("#f-name", "Harbour")
    page.fill("#f-prompt", "boats in a harbour at dawn")
    page.select_option("#f-checkpoint", "SDXL/sd_xl_base_1.0.safetensors")
    page.fill("#f-width", "512")
    page.fill("#f-height", "512")
    page.click("button:has-text('Create preset')")

    # a preset with no image yet: the library draws a neutral placeholder, never "No Image"
    page.goto(stack.url + "/")
    card = page.locator(".card[data-slug=harbour]")
    expect(card.locator("svg.placeholder")).to_be_visible()
    assert "No Image" not in page.content()

    page.goto(stack.url + "/presets/harbour")
    page.fill("#f-count", "2")
    page.fill("#f-extra_positive", "seagulls")
    page.fill("#f-seed", "77")
    page.click("button:has-text('Generate')")
    expect(page.locator("[data-job-id]")).to_have_count(2)
    # the form keeps what was sent, for the next batch
    expect(page.locator("#f-count")).to_have_value("2")
    expect(page.locator("#f-extra_positive")).to_have_value("seagulls")
    expect(page.locator("#f-seed")).to_have_value("77")
    expect(page.locator("[data-gallery] .gallery-item")).to_have_count(2, timeout=30000)  # appear live
    expect(page.locator("[data-job-id][data-status=done]")).to_have_count(2)
    # ... with the prompt, seed and checkpoint the page shows after a reload (job i has seed + i)
    live = page.locator("[data-gallery] .gallery-item")
    expect(live.locator(".gallery-prompt")).to_have_text(["boats in a harbour at dawn, seagulls"] * 2)
    assert sorted(live.locator('[data-field="seed"]').all_inner_texts()) == ["77", "78"]
    expect(live.first.locator(".facts")).to_contain_text("SDXL/sd_xl_base_1.0.safetensors")
    live_html = [item.inner_html() for item in live.all()]
    page.reload()
    assert [item.inner_html() for item in page.locator("[data-gallery] .gallery-item").all()] == live_html
    page.click("button[data-generate-reset]")                     # and goes back to the defaults on request
    expect(page.locator("#f-extra_positive")).to_have_value("")
    expect(page.locator("#f-count")).to_have_value("1")
    page.wait_for_timeout(500)   # let the live thumbnails finish loading
    shoot(page, "preset-page.png", full_page=True)
    images = [j for j in stack.get("/ui/jobs?recent=10", headers={},
                                   cookies={c["name"]: c["value"] for c in page.context.cookies()}).json()["jobs"]
              if j["preset"] == "harbour"]
    assert all(j["status"] == "done" for j in images) and len(images) == 2

    # no cover: the library shows one of its images, at reduced opacity, with a "no cover" hint
    page.goto(stack.url + "/")
    fallback = page.locator(".card[data-slug=harbour] img.cover")
    expect(fallback).to_have_class("cover fallback")
    assert float(fallback.evaluate("img => getComputedStyle(img).opacity")) < 0.8
    expect(page.locator(".card[data-slug=harbour] .badge")).to_have_text("no cover")
    thumb = stack.get(fallback.get_attribute("src"), headers={})
    assert thumb.status_code == 200 and thumb.headers["Content-Type"].startswith("image/")
    shoot(page, "library.png")

    # set as cover: the library shows it at full opacity, without the hint
    page.goto(stack.url + "/presets/harbour")
    page.locator(".gallery-item").first.locator("button:has-text('Set as cover')").click()
    page.goto(stack.url + "/")
    cover = page.locator(".card[data-slug=harbour] img.cover")
    expect(cover).to_have_class("cover")
    assert float(cover.evaluate("img => getComputedStyle(img).opacity")) == 1.0
    expect(page.locator(".card[data-slug=harbour] .badge")).to_have_count(0)
    assert next(p for p in stack.get("/api/v1/presets").json()["presets"] if p["slug"] == "harbour")["has_cover"]


def test_queue_shows_live_status_and_works_at_phone_width(stack, browser):
    context = browser.new_context(viewport={"width": 375, "height": 800})
    page = context.new_page()
    login(page, stack)
    page.goto(stack.url + "/queue")
    job_id = stack.post("/api/v1/generate/example_01", json={"width": 256, "height": 256}).json()["jobs"][0]["job_id"]
    row = page.locator(f"[data-job-id='{job_id}']")
    expect(row).to_be_visible(timeout=10000)                       # a new job appears without a reload
    expect(row).to_have_attribute("data-status", "done", timeout=30000)
    assert page.evaluate("document.documentElement.scrollWidth") <= 375 + 1   # no sideways scrolling
    context.close()


def test_the_queue_pages_farm_is_refreshed_without_a_reload(stack, page):
    page.goto(stack.url + "/queue")
    expect(page.locator("#farm .replica-row").first).to_be_visible(timeout=10000)   # the stack's replicas
    page.evaluate("document.getElementById('farm').dataset.shown = 'since the page loaded'")
    # queue.js puts the server's current farm in its place (every 5 s)
    expect(page.locator("#farm[data-shown]")).to_have_count(0, timeout=15000)
    expect(page.locator("#farm .replica-row").first).to_be_visible()
    expect(page.locator("#farm h2").first).to_have_text("Checkpoints")


def test_a_waiting_job_is_cancelled_from_the_queue_page(stack, page):
    # 60 large jobs: the last waits behind the others for several seconds on the preview backend
    ids = [job["job_id"] for _ in range(3) for job in stack.post(
        "/api/v1/generate/example_01", json={"count": 20, "width": 1024, "height": 1024}).json()["jobs"]]
    last = ids[-1]
    try:
        page.goto(stack.url + "/queue")
        row = page.locator(f"tr[data-job-id='{last}']")
        expect(row).to_have_attribute("data-status", "pending", timeout=10000)
        expect(row.locator(".job-progress")).to_contain_text("ahead")   # its place in line
        row.locator("[data-cancel]").click()
        expect(row).to_have_attribute("data-status", "cancelled", timeout=10000)
        expect(row.locator("[data-cancel]")).to_be_hidden()
        assert stack.get(f"/api/v1/job/{last}").json()["status"] == "cancelled"
    finally:
        for job_id in ids:
            stack.post(f"/api/v1/job/{job_id}/cancel")


def image_box(img):
    """The rendered size of an <img> once loaded, its image's own size, and whether it lies in its frame."""
    img.evaluate("img => img.complete && img.naturalWidth ? null : new Promise(ok => img.addEventListener('load', ok))")
    return img.evaluate("""img => {
        const box = img.getBoundingClientRect(), frame = img.parentElement.getBoundingClientRect();
        return {width: box.width, height: box.height, natural: img.naturalWidth / img.naturalHeight,
                inside: box.left >= frame.left - 0.5 && box.right <= frame.right + 0.5
                        && box.top >= frame.top - 0.5 && box.bottom <= frame.bottom + 0.5};
    }""")


def assert_shown_whole(img):
    box = image_box(img)
    assert box["natural"] > 1.9, box                                        # a landscape image ...
    assert abs(box["width"] / box["height"] - box["natural"]) < 0.05, box  # ... not cropped to the frame
    assert box["inside"] and box["width"] > 100, box


def test_a_form_names_every_bad_field_at_once_and_landscape_images_are_shown_whole(stack, page):
    page.goto(stack.url + "/presets/new")
    expect(page.locator("label:has(#f-slug) .required-mark")).to_be_visible()        # required, for the eye
    assert page.locator("#f-name").evaluate("el => el.required")                      # ... and the browser
    page.fill("#f-slug", "Wide View")
    page.fill("#f-name", "")
    page.fill("#f-width", "100")
    page.fill("#f-steps", "500")
    page.click("button:has-text('Create preset')")
    summary = page.locator(".error-summary li")
    expect(summary).to_have_text([
        "Slug may use lowercase letters, digits, _ and - only, starting with a letter or digit (e.g. my_preset)",
        "Name is required",
        "Checkpoint is required",
        "Width must be a multiple of 8 between 64 and 8192",
        "Steps must be a whole number from 1 to 200",
    ])
    for field in ("slug", "name", "checkpoint", "width", "steps"):
        expect(page.locator(f"#err-{field}")).to_be_visible()
    expect(page.locator("#f-slug")).to_have_value("Wide View")                         # the input kept

    page.fill("#f-slug", "wide_view")
    page.fill("#f-name", "Wide view")
    page.fill("#f-prompt", "a long beach")
    page.select_option("#f-checkpoint", "Illustrious/model.safetensors")
    page.fill("#f-width", "768")
    page.fill("#f-height", "384")
    page.fill("#f-steps", "20")
    page.click("button:has-text('Create preset')")
    expect(page.locator("h1")).to_have_text("Wide view")
    generate_via_api(stack, "wide_view")
    page.reload()
    assert_shown_whole(page.locator("[data-gallery] .gallery-item img").first)
    page.goto(stack.url + "/")
    assert_shown_whole(page.locator(".card[data-slug=wide_view] img.cover"))


def insert_failed_job(stack, error):
    """A failed job as the jobs service records one (the preview backend of this stack never fails)."""
    import psycopg
    from psycopg.types.json import Jsonb

    job_id = str(uuid.uuid4())
    with psycopg.connect(stack.env["GAZE_DATABASE_URL"], autocommit=True) as conn:
        conn.execute("INSERT INTO jobs.jobs (id, preset_slug, label, spec, seed, status, error, attempts, finished_at)"
                     " VALUES (%s, 'example_01', 'Preset: Example – preview', %s, 1, 'failed', %s, 3, now())",
                     (job_id, Jsonb({"preset_slug": "example_01"}), error))
    return job_id


def test_the_queue_shows_ids_a_status_filter_failed_jobs_errors_and_batches_in_order(stack, page):
    failed = insert_failed_job(stack, "the generator could not reach its image backend; tried 3 times")
    page.goto(stack.url + "/queue")
    row = page.locator(f"tr[data-job-id='{failed}']")
    expect(row.locator(".job-error")).to_have_text("the generator could not reach its image backend; tried 3 times")
    expect(row.locator(".job-id")).to_have_text(failed[:8])
    expect(row.locator(".job-id")).to_have_attribute("title", failed)
    expect(row.locator("[data-copy-text]")).to_have_attribute("data-copy-text", failed)

    # a batch made while the page is open appears in the order it was made (job i before job i + 1)
    made = [job["job_id"] for job in stack.post("/api/v1/generate/example_01",
                                                json={"count": 3, "width": 64, "height": 64}).json()["jobs"]]
    expect(page.locator("tbody tr[data-job-id]").first).to_have_attribute("data-job-id", made[0], timeout=10000)
    shown = page.locator("tbody tr[data-job-id]").evaluate_all("rows => rows.map(r => r.dataset.jobId)")
    assert shown[:3] == made
    page.reload()                                              # and so does the page the server renders
    shown = page.locator("tbody tr[data-job-id]").evaluate_all("rows => rows.map(r => r.dataset.jobId)")
    assert shown[:3] == made

    page.click(".queue-filter a[data-filter=failed]")
    expect(page).to_have_url(stack.url + "/queue?status=failed")
    expect(page.locator(".queue-filter a[aria-current=page]")).to_have_text("failed")
    statuses = page.locator("tbody tr[data-job-id]").evaluate_all("rows => rows.map(r => r.dataset.status)")
    assert statuses and set(statuses) == {"failed"}
    expect(page.locator(f"tr[data-job-id='{failed}'] .job-error")).to_be_visible()
