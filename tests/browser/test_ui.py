"""The web UI in a real browser: Debian's headless Chromium driven by Playwright, against the whole
stack (a stack of their own: see conftest.py)."""
import os
from pathlib import Path

import pytest
import requests
from playwright.sync_api import expect

from tests.browser.conftest import login
from tests.e2e.conftest import ADMIN_PASSWORD

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

# Set GAZE_SCREENSHOT_DIR=docs to refresh the README's screenshots while the tests run.
SCREENSHOT_DIR = os.environ.get("GAZE_SCREENSHOT_DIR")


@pytest.fixture
def page(browser, stack):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    login(page, stack)
    expect(page.locator("h1")).to_have_text("Library")
    yield page
    context.close()


def shoot(page, name):
    if SCREENSHOT_DIR:
        page.screenshot(path=str(Path(SCREENSHOT_DIR) / name), full_page=False)


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
