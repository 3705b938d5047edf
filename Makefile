# make up    — install (first time) and run the whole stack on http://localhost:5782 until Ctrl-C
# make test  — install (first time) and run every test suite against the local RabbitMQ and PostgreSQL
VENV   ?= .venv
PYTHON ?= python3
STAMP  := $(VENV)/.installed

.PHONY: up test test-fast install clean

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

up: $(STAMP)
	$(VENV)/bin/gaze up

test: $(STAMP)
	$(VENV)/bin/pytest

# everything except the slow suites (heartbeat traps, fault injection): for a quick local loop
test-fast: $(STAMP)
	$(VENV)/bin/pytest -m "not slow"

clean:
	rm -rf $(VENV) var
