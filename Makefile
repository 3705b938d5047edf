# make up    — install (first time) and run the whole stack on http://localhost:5782 until Ctrl-C
# make test  — install (first time) and run every test suite against the local RabbitMQ and PostgreSQL
VENV   ?= .venv
PYTHON ?= python3
# `make up` needs only the service; `make test` adds the test tools and the diffusers extra (torch,
# about 1.2 GB) so that backend's tests run too.
STAMP      := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: up test test-fast install browser bench-tools clean

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e .
	touch $(STAMP)

# the Python client (clients/python, its own package) for its tests
$(TEST_STAMP): $(STAMP) clients/python/pyproject.toml
	$(VENV)/bin/pip install --quiet -e ".[test,diffusers]" -e ./clients/python
	touch $(TEST_STAMP)

install: $(STAMP)

up: $(STAMP)
	$(VENV)/bin/gaze up

# The browser tests drive Debian's Chromium through Playwright (Playwright's own browser download
# cannot work here); install it from apt when it is missing.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	    echo "installing Debian's chromium for the browser tests"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; }

# The load generator of bench/gateway_load.py: Debian's wrk, installed from apt when it is missing.
bench-tools:
	@command -v wrk >/dev/null 2>&1 || { \
	    echo "installing Debian's wrk for bench/gateway_load.py"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends wrk; }

# The import contracts (pyproject.toml [tool.importlinter]) first, then three pytest runs: the fault-injection suite restarts the machine's RabbitMQ and PostgreSQL, so it runs
# on its own, after everything else; the browser tests need a process without eventlet
# (see tests/browser/conftest.py).
test: $(TEST_STAMP) browser
	$(VENV)/bin/lint-imports
	$(VENV)/bin/pytest -m "not browser and not faults"
	$(VENV)/bin/pytest -m faults tests/faults
	GAZE_TESTS_WITHOUT_EVENTLET=1 $(VENV)/bin/pytest -m browser tests/browser

# everything except the slow suites (heartbeat traps, browser, fault injection): a quick local loop
test-fast: $(TEST_STAMP)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/pytest -m "not slow and not browser"

clean:
	rm -rf $(VENV) var
