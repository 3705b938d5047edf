"""Steering jobs end to end (issue 11): cancel (pending and running, racing completion), the calling key's
job list with cursor pagination while jobs are created, and queue_position / progress on the job document.

One stack with ONE generator replica (prefetch 2: one job running, one reserved) whose backend obeys the
prompt (tests/backends.py): "slow:<s>" runs that long in 20 steps and stops when cancelled.
"""
import subprocess
import time
import uuid

import pytest

from tests.stack import ADMIN_PASSWORD, another_api_key, scripted_stack

pytestmark = pytest.mark.e2e
SMALL = {"width": 64, "height": 64}
ENDED = ("done", "failed", "cancelled")


@pytest.fixture(scope="module")
def steer(tmp_path_factory):
    with scripted_stack(tmp_path_factory.mktemp("steer")) as running:
        yield running


@pytest.fixture(scope="module")
def other_key(steer):
    with another_api_key(steer) as key:
        yield key


def submit(stack, count=1, extra="", key=None):
    response = stack.post("/api/v1/generate/example_01", headers=stack.headers(key),
                          json={"count": count, "extra_positive": extra, **SMALL})
    assert response.status_code == 202, response.text
    return [job["job_id"] for job in response.json()["jobs"]]


def job(stack, job_id):
    response = stack.get(f"/api/v1/job/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()


def wait_for(stack, job_id, predicate, timeout=60, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        doc = job(stack, job_id)
        if predicate(doc):
            return doc
        assert time.monotonic() < deadline, f"job {job_id}: no {what} after {timeout} s: {doc}"
        time.sleep(0.1)


def cancel(stack, job_id):
    return stack.post(f"/api/v1/job/{job_id}/cancel")


def drain(stack, ids):
    """Cancel whatever of `ids` still runs, so the next test starts with an idle replica."""
    for job_id in ids:
        cancel(stack, job_id)
    for job_id in ids:
        wait_for(stack, job_id, lambda doc: doc["status"] in ENDED, what="end")


def test_a_running_job_is_stopped_at_once_and_stays_cancelled(steer):
    [running] = submit(steer, extra="slow:60")
    doc = wait_for(steer, running, lambda d: d["status"] == "processing" and d["progress"], what="progress")
    assert doc["queue_position"] is None
    assert set(doc["progress"]) == {"value", "max"} and doc["progress"]["max"] == 20

    answer = cancel(steer, running)
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"id": running, "status": "cancelled"}

    # the replica stops the job and serves the next one long before the cancelled job's 60 s were up
    started = time.monotonic()
    [after] = submit(steer)
    assert wait_for(steer, after, lambda d: d["status"] in ENDED, timeout=30)["status"] == "done"
    assert time.monotonic() - started < 30
    doc = job(steer, running)
    assert doc["status"] == "cancelled" and doc["result"] is None and doc["queue_position"] is None
    assert not list(steer.media_root.rglob(f"*{running}*")), "a cancelled job left an image"

    again = cancel(steer, running)
    assert again.status_code == 409
    assert again.json() == {"error": "the job has already ended (cancelled)", "status": "cancelled"}


def test_pending_jobs_have_queue_positions_and_a_cancelled_one_never_runs(steer):
    ids = submit(steer, count=4, extra="slow:60")
    first, reserved, third, fourth = ids
    wait_for(steer, first, lambda d: d["status"] == "processing", what="start")
    # one runs, one is reserved by the replica (0), the rest wait in line behind it
    wait_for(steer, reserved, lambda d: d["status"] == "pending" and d["queue_position"] == 0, what="reservation")
    assert job(steer, third)["queue_position"] == 0
    assert job(steer, fourth)["queue_position"] == 1

    answer = cancel(steer, third)
    assert answer.status_code == 202 and answer.json()["status"] == "cancelled"
    assert job(steer, fourth)["queue_position"] == 0, "the line moved up"

    drain(steer, [first, reserved])
    # the fourth job now runs; the cancelled third never did
    wait_for(steer, fourth, lambda d: d["status"] == "processing", what="start")
    doc = job(steer, third)
    assert doc["status"] == "cancelled" and doc["started_at"] is None and doc["attempts"] <= 1
    drain(steer, [fourth])


def test_cancel_racing_completion_never_leaves_a_done_cancelled_job_or_its_image(steer):
    outcomes = {}
    for _ in range(12):
        [job_id] = submit(steer)
        time.sleep(0.05 * (len(outcomes) % 4))   # cancel at different moments of the job's short life
        outcomes[job_id] = cancel(steer, job_id).status_code
    assert set(outcomes.values()) <= {202, 409}
    final = {job_id: wait_for(steer, job_id, lambda d: d["status"] in ENDED, what="end") for job_id in outcomes}
    for job_id, code in outcomes.items():
        expected = "cancelled" if code == 202 else "done"
        assert final[job_id]["status"] == expected, (code, final[job_id])
    cancelled = [job_id for job_id, code in outcomes.items() if code == 202]
    assert cancelled, "no cancel won the race: move the cancels earlier"
    # an image that finished before its replica heard of the cancel is deleted by the jobs service
    deadline = time.monotonic() + 30
    while [path for job_id in cancelled for path in steer.media_root.rglob(f"*{job_id}*")]:
        assert time.monotonic() < deadline, "a cancelled job's image was not deleted"
        time.sleep(0.2)
    for job_id in outcomes:
        assert job(steer, job_id)["status"] == final[job_id]["status"], "a job changed after it ended"


def test_cancel_answers_404_for_an_unknown_job_and_needs_a_key(steer):
    assert cancel(steer, str(uuid.uuid4())).status_code == 404
    assert cancel(steer, "not-a-job").status_code == 404
    response = steer.post(f"/api/v1/job/{uuid.uuid4()}/cancel", headers={})
    assert response.status_code == 401


def test_the_list_pages_a_keys_own_jobs_newest_first_without_repeats_while_jobs_arrive(steer, other_key):
    since = time.time()
    mine = []
    for _ in range(5):
        mine += submit(steer, count=5, extra="slow:60")
    theirs = submit(steer, count=2, key=other_key)
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 7, "since": since}
        if cursor:
            params["cursor"] = cursor
        response = steer.get("/api/v1/jobs", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert set(page) == {"jobs", "next_cursor"}
        seen += [doc["id"] for doc in page["jobs"]]
        submit(steer, extra="slow:60")   # new jobs arrive between pages: they sort before every later page
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 4
    assert len(seen) == len(set(seen)) == 25 and set(seen) == set(mine), "none repeated or skipped"
    created = [job(steer, job_id)["created_at"] for job_id in seen]
    assert created == sorted(created, reverse=True), "newest first"
    theirs_listed = steer.get("/api/v1/jobs", headers=steer.headers(other_key)).json()["jobs"]
    assert {doc["id"] for doc in theirs_listed} == set(theirs), "each key sees only its own jobs"

    pending = steer.get("/api/v1/jobs", params={"status": "pending", "limit": 100}).json()["jobs"]
    assert pending and all(doc["status"] == "pending" for doc in pending)
    assert all(isinstance(doc["queue_position"], int) for doc in pending)
    drain(steer, [doc["id"] for doc in steer.get("/api/v1/jobs", params={"limit": 100}).json()["jobs"]])
    assert steer.get("/api/v1/jobs", params={"status": "cancelled", "limit": 1}).json()["jobs"][0]["status"] == "cancelled"
    assert steer.get("/api/v1/jobs", params={"preset": "no_such_preset"}).json() == {"jobs": [], "next_cursor": None}


@pytest.mark.parametrize("query, field", [
    ({"limit": "0"}, "limit"), ({"limit": "101"}, "limit"), ({"limit": "²"}, "limit"),
    ({"status": "queued"}, "status"), ({"since": "yesterday"}, "since"), ({"since": "nan"}, "since"),
    ({"cursor": "!!"}, "cursor"), ({"cursor": "bm90LWEtY3Vyc29y"}, "cursor"), ({"preset": "../x"}, "preset"),
])
def test_bad_list_queries_get_a_400_naming_the_parameter(steer, query, field):
    response = steer.get("/api/v1/jobs", params=query)
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field


def test_a_batch_with_a_seed_gives_job_i_the_seed_plus_i(steer):
    response = steer.post("/api/v1/generate/example_01", json={"count": 3, "seed": 7, **SMALL})
    assert response.status_code == 202, response.text
    ids = [job["job_id"] for job in response.json()["jobs"]]
    done = [wait_for(steer, job_id, lambda d: d["status"] in ENDED, what="end") for job_id in ids]
    assert [doc["result"]["seed"] for doc in done] == [7, 8, 9]
    refused = steer.post("/api/v1/generate/example_01", json={"count": 3, "seed": 2**63 - 2})
    assert refused.status_code == 400 and refused.json()["field"] == "seed"


def test_the_admin_password_is_set_from_stdin_or_generated_never_from_an_argument(steer):
    from services.gateway.stores.admin import AdminStore
    from shared.db import open_pool
    from tests.stack import GAZE

    def gaze(*args, stdin=""):
        return subprocess.run([GAZE, "admin-password", *args], input=stdin, capture_output=True, text=True,
                              env=steer.env, timeout=60)

    pool = open_pool(steer.env["GAZE_DATABASE_URL"], max_size=1, name="test")
    try:
        admin = AdminStore(pool)
        assert gaze("an-argument-password").returncode == 2, "the argv form is gone"
        assert not admin.verify_password("an-argument-password")
        assert gaze("--stdin", stdin="\n").returncode != 0, "an empty password is refused"
        chosen = gaze("--stdin", stdin="from-stdin-password\n")
        assert chosen.returncode == 0 and "from-stdin-password" not in chosen.stdout + chosen.stderr
        assert admin.verify_password("from-stdin-password")
        generated = gaze()
        assert generated.returncode == 0
        printed = generated.stdout.strip().splitlines()[-1]
        assert admin.verify_password(printed) and not admin.verify_password("from-stdin-password")
    finally:
        pool.close()
    set_back = gaze("--stdin", stdin=f"{ADMIN_PASSWORD}\n")
    assert set_back.returncode == 0
