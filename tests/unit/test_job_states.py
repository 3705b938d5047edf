"""The job state machine is defined once (shared/job_states.py); what used to be copies now derive from it."""
import json
import re
from pathlib import Path

import pytest

from services.gateway.api.openapi import document
from shared import config
from shared import job_states
from shared.job_states import ACTIVE, RANK, STATES, TERMINAL, may_move, sql_list
from tests.helpers import make_client

STATIC = Path(__file__).resolve().parents[2] / "services" / "gateway" / "web" / "static"


def test_states_only_move_forward_and_never_out_of_an_end():
    assert may_move("pending", "processing") and may_move("pending", "done") and may_move("processing", "failed")
    assert not may_move("processing", "pending") and not may_move("done", "failed")
    assert not any(may_move(end, state) for end in TERMINAL for state in STATES)
    assert ACTIVE == ("pending", "processing") and set(ACTIVE) | TERMINAL == set(STATES)
    assert all(RANK[a] < RANK[b] for a in ACTIVE for b in TERMINAL)


def test_the_sql_list_only_takes_states():
    assert sql_list(ACTIVE) == "'pending', 'processing'"
    with pytest.raises(ValueError):
        sql_list(["pending'; DROP TABLE jobs.jobs; --"])


def test_the_openapi_enum_is_the_definition():
    assert document(config.Settings())["components"]["schemas"]["Job"]["properties"]["status"]["enum"] == list(STATES)


def test_every_page_carries_the_definition_and_the_scripts_hold_no_copy(tmp_path):
    client, _ = make_client(tmp_path)
    page = client.simulate_get("/login").text
    island = re.search(r'<script id="gaze-job-states" type="application/json">(.*?)</script>', page, re.S)
    assert island, "the login page lacks the job states"
    assert json.loads(island.group(1)) == json.loads(job_states.client_definition())
    for script in STATIC.glob("*.js"):
        text = script.read_text()
        assert not re.search(r'new Set\(\[\s*"(done|failed|pending|processing)"', text), f"{script.name} copies states"
