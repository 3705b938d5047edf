"""Fault injection against the real stack: the scenarios are tests/faults/test_faults.py, their harness
(processes, faults, healing, the job stream, the invariants) tests/faults/harness.py."""
import json

import pytest

from tests.faults.harness import RESULTS_FILE


@pytest.fixture(scope="session")
def fault_results(tmp_path_factory):
    """Per-scenario figures, printed and written to <pytest tmp>/fault_results.json."""
    results = {}
    path = tmp_path_factory.getbasetemp() / RESULTS_FILE
    yield results
    path.write_text(json.dumps(results, indent=2))
    print(f"\n[faults] figures written to {path}")
