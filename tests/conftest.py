"""Shared by every level of tests (unit, integration, e2e, faults, browser; see their own conftests).

nameko services run under eventlet; so do their tests. patch() also makes psycopg pick its cooperative
wait function, which must happen before anything imports psycopg (see shared/green.py)."""
import os

from shared.green import patch

# The browser tests run in a pytest process of their own without eventlet: Playwright's sync API
# drives its own greenlets and hangs on shutdown under eventlet's hub (see the Makefile).
if not os.environ.get("GAZE_TESTS_WITHOUT_EVENTLET"):
    patch()


import pytest  # noqa: E402

from tests.stack import running_stack  # noqa: E402


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """The whole stack (`gaze up`) with a database, vhost, port and media directory of its own, for the e2e
    and browser tests of this run."""
    with running_stack(tmp_path_factory.mktemp("stack")) as running:
        yield running
