"""Browser tests: Debian's headless Chromium driven by Playwright's sync API against the whole stack.

They run in a pytest process of their own, without eventlet (`make test` runs
`GAZE_TESTS_WITHOUT_EVENTLET=1 pytest -m browser`): Playwright's sync API hangs on shutdown under
eventlet's hub, which the nameko tests need. The stack they drive is tests/conftest.py's `stack` fixture,
as the e2e tests'."""
from pathlib import Path

import pytest
from eventlet import patcher
from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="session")
def browser():
    if patcher.is_monkey_patched("socket"):
        pytest.fail("browser tests must run without eventlet: GAZE_TESTS_WITHOUT_EVENTLET=1 pytest -m browser")
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed: `make test` installs it (apt-get install chromium)")
    with sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield launched
        launched.close()
