"""The unit tests: the project's own logic with no I/O, in milliseconds. The gateway runs over the fakes
of tests/fakes.py, a service's entrypoints under nameko's worker_factory; whatever needs the real
PostgreSQL, Redis, RabbitMQ or S3, or a process of its own, is tested in tests/integration.

`no_io` holds every test here to that (tests/io_guard.py): a network connection, a PostgreSQL connection
or a new process fails the test, even when the code under test caught the error. The session's database
and vhost fixtures are not even visible from here: they live in tests/integration/conftest.py."""
import pytest

from tests.io_guard import IOGuard


@pytest.fixture(autouse=True)
def no_io(monkeypatch):
    guard = IOGuard()
    guard.install(monkeypatch)
    yield guard
    if guard.attempts:
        pytest.fail(guard.report(), pytrace=False)
