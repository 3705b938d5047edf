"""The jobs table's CHECK constraint (a migration cannot import Python) lists exactly the defined states."""
import re

from shared.job_states import STATES


def test_the_jobs_tables_check_constraint_is_the_state_machines_states(db):
    definitions = [row["def"] for row in db.execute(
        "SELECT pg_get_constraintdef(oid) AS def FROM pg_constraint"
        " WHERE conrelid = 'jobs.jobs'::regclass AND contype = 'c'").fetchall()]
    [status_check] = [d for d in definitions if "status" in d]
    assert sorted(re.findall(r"'([^']+)'::text", status_check)) == sorted(STATES)
    default = db.execute("SELECT column_default FROM information_schema.columns WHERE table_schema = 'jobs'"
                         " AND table_name = 'jobs' AND column_name = 'status'").fetchone()["column_default"]
    assert default.startswith(f"'{STATES[0]}'")
