"""Issue 13, "internals stay inside", through the whole stack: a job that fails because the generator cannot
reach its ComfyUI tells its client so in words they can act on, without the server's URL, host or port or
the connection error's text; the generator's log has all of it, under the job id."""
import json

import pytest

from tests.helpers import wait_until
from tests.stack import _free_port, running_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def unreachable_comfyui(tmp_path_factory):
    port = _free_port()     # nothing listens there
    with running_stack(tmp_path_factory.mktemp("job-error-words"), generators=1, GAZE_BACKEND="comfyui",
                       GAZE_COMFYUI_URL=f"http://127.0.0.1:{port}/comfy",
                       GAZE_COMFYUI_RETRY_SECONDS="1") as stack:
        yield stack, port


def log_records(stack):
    for line in stack.log.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line[line.index("{"):]) if "{" in line else None
        except ValueError:
            continue
        if isinstance(record, dict):
            yield record


def test_an_unreachable_comfyui_fails_the_job_with_words_and_logs_the_details_under_its_id(unreachable_comfyui):
    stack, port = unreachable_comfyui
    response = stack.post("/api/v1/generate/example_01", json={"width": 64, "height": 64})
    assert response.status_code == 202, response.text
    job_id = response.json()["jobs"][0]["job_id"]

    job = stack.wait_job(job_id, timeout=60)
    assert job["status"] == "failed", job
    error = job["error"]
    assert error.startswith("the generator could not reach its image backend (ComfyUI); tried "), error
    leaked = [internal for internal in ("127.0.0.1", str(port), "http", "/comfy", "refused", "Errno")
              if internal in error]
    assert not leaked, f"the job's error {error!r} carries {leaked}"

    def detail_logged():
        return [record for record in log_records(stack)
                if record.get("job_id") == job_id and record.get("msg", "").startswith(f"job {job_id}: failed: ")]

    [record] = wait_until(detail_logged, timeout=10, what="the replica's line about the failure")
    assert f"ComfyUI at http://127.0.0.1:{port}/comfy is unreachable: Connection refused" in record["msg"], record
    assert record["error"] == error     # the operator's line says what the client read, too
