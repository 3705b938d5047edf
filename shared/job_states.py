"""The job state machine, defined once.

    pending ──▶ processing ──▶ done
       │             ├───────▶ failed
       │             └───────▶ cancelled   (only by an explicit cancel: POST /api/v1/job/<id>/cancel)
       └──▶ done | failed | cancelled      (a job can end before its start was recorded: events are not
                                            ordered; a pending job can be cancelled before any GPU starts it)

States only move forward, by rank: the jobs service's conditional UPDATEs (services/jobs/store.py) only
ever apply a transition out of an ACTIVE state, the Redis read model (shared/contracts/jobs/view.py) orders a job's
documents by rank, the OpenAPI document lists STATES, and the web UI's JavaScript reads this definition
from the page (`client_definition`, rendered into every page by services/gateway/web/render.py) instead
of a copy of its own. The jobs table's CHECK constraint (migration 0001) cannot import Python: a test
proves it lists exactly STATES (tests/integration/test_job_states.py).
"""
from __future__ import annotations

import json
from enum import StrEnum


class JobState(StrEnum):
    PENDING = "pending"          # accepted; waiting for (or claimed by) a generator
    PROCESSING = "processing"    # a generator's backend started it
    DONE = "done"                # its image is stored
    FAILED = "failed"            # it ended without an image; `error` says why
    CANCELLED = "cancelled"      # a client cancelled it; time limits and give-ups stay `failed`


STATES = tuple(state.value for state in JobState)
TERMINAL = frozenset({JobState.DONE.value, JobState.FAILED.value, JobState.CANCELLED.value})
ACTIVE = tuple(state for state in STATES if state not in TERMINAL)
RANK = {JobState.PENDING.value: 0, JobState.PROCESSING.value: 1,
        JobState.DONE.value: 2, JobState.FAILED.value: 2, JobState.CANCELLED.value: 2}


def may_move(current: str, new: str) -> bool:
    """Whether a job in `current` may move to `new`: forward only, never out of an end."""
    return current not in TERMINAL and RANK[new] > RANK[current]


def sql_list(states) -> str:
    """States as an SQL list of literals, for the store's guards: "'pending', 'processing'"."""
    return ", ".join(f"'{JobState(state).value}'" for state in states)


def client_definition() -> str:
    """The definition as JSON, for the web UI's scripts (and any other client that wants it)."""
    return json.dumps({"states": list(STATES), "terminal": sorted(TERMINAL), "active": list(ACTIVE), "rank": RANK})
