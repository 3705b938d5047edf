"""jobs.create when the database fails after the jobs are committed and their orders published."""
import uuid

import psycopg
from nameko.testing.services import worker_factory

from services.jobs.service import JobsService
from tests.integration.conftest import make_spec


def test_a_failed_dispatch_mark_does_not_turn_created_jobs_into_an_error():
    """Telling the caller "not created" (a 503) about jobs that were committed and published would make
    a client retry and get twice the jobs; the unmarked rows are the outbox sweep's to re-publish."""
    service = worker_factory(JobsService)
    job_id = str(uuid.uuid4())
    service.store.create.side_effect = lambda jobs, request_id: (
        [{**job, "id": job_id, "created_at": 1.0, "status": "pending", "error": None, "result": None,
          "attempts": 0, "replica": None, "progress_value": None, "progress_max": None, "started_at": None,
          "finished_at": None} for job in jobs], True)
    service.store.mark_dispatched.side_effect = psycopg.OperationalError("server closed the connection")

    assert service.create(make_spec(), 1, str(uuid.uuid4())) == [job_id]
    assert service.publish_work.call_count == 1, "the work order went out"
    service.store.mark_dispatched.assert_called_once_with([job_id])
