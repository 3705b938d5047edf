"""Following jobs end to end (issue 11): `Prefer: wait=N` on GET /api/v1/job/<id> and on POST
/api/v1/generate/<slug>, and the server-sent event streams GET /api/v1/job/<id>/events and
GET /api/v1/events?preset=, on the real stack (gunicorn's uvicorn workers, the asyncio side in
services/gateway/hold/, the read model's change messages in Redis).

One generator replica whose backend obeys the prompt (tests/backends.py): "slow:<s>" runs that long and
stops when cancelled.
"""
import json
import time
import uuid

import pytest
import requests

from tests.stack import another_api_key, scripted_stack

pytestmark = pytest.mark.e2e
SMALL = {"width": 64, "height": 64}
ENDED = ("done", "failed", "cancelled")
SLACK = 3.0   # seconds a held answer may come after its wait on a loaded 2-core machine


@pytest.fixture(scope="module")
def follow(tmp_path_factory):
    with scripted_stack(tmp_path_factory.mktemp("follow")) as running:
        yield running


@pytest.fixture(scope="module")
def other_key(follow):
    with another_api_key(follow) as key:
        yield key


def submit(stack, extra="", count=1, key=None, preset="example_01", headers=None):
    response = stack.post(f"/api/v1/generate/{preset}", headers={**stack.headers(key), **(headers or {})},
                          json={"count": count, "extra_positive": extra, **SMALL})
    assert response.status_code in (200, 202), response.text
    return response


def ids(response):
    return [entry["job_id"] for entry in response.json()["jobs"]]


def finish(stack, job_ids):
    for job_id in job_ids:
        stack.post(f"/api/v1/job/{job_id}/cancel")
    for job_id in job_ids:
        stack.wait_job(job_id)


class Events:
    """A server-sent events client: reads frames as they come (no buffering of a whole answer)."""

    def __init__(self, stack, path, last_event_id=None, key=None, read_timeout=30):
        headers = {"X-API-Key": key or stack.key, "Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        self.response = requests.get(stack.url + path, headers=headers, stream=True,
                                     timeout=(10, read_timeout))
        assert self.response.status_code == 200, self.response.text
        assert self.response.headers["Content-Type"].startswith("text/event-stream")
        self.lines = self.response.iter_lines(decode_unicode=True)
        self.comments = []

    def next(self):
        """The next event as {"event", "id", "data"}, or None when the server closed the stream."""
        frame = {}
        for line in self.lines:
            if line == "":
                if frame:
                    return frame
                continue
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                continue
            field, _, value = line.partition(": ")
            frame[field] = json.loads(value) if field == "data" else value
        return None

    def until(self, predicate, limit=200):
        for _ in range(limit):
            frame = self.next()
            assert frame is not None, "the stream closed first"
            if predicate(frame["data"]):
                return frame
        raise AssertionError("no such event")

    def close(self):
        self.response.close()


# --- Prefer: wait ------------------------------------------------------------------------------------

def test_a_wait_on_a_job_that_ends_answers_when_it_ends(follow):
    [job_id] = ids(submit(follow, "slow:1.5"))
    started = time.monotonic()
    answer = follow.get(f"/api/v1/job/{job_id}", headers={**follow.headers(), "Prefer": "wait=30"})
    took = time.monotonic() - started
    assert answer.status_code == 200, answer.text
    assert answer.headers["Preference-Applied"] == "wait=30"
    assert answer.json()["status"] == "done" and took < 30
    # the held answer is the document a poll gets now, byte for byte
    assert follow.get(f"/api/v1/job/{job_id}").content == answer.content


def test_a_wait_on_a_job_that_does_not_end_answers_after_the_wait(follow):
    [job_id] = ids(submit(follow, "slow:60"))
    try:
        started = time.monotonic()
        answer = follow.get(f"/api/v1/job/{job_id}", headers={**follow.headers(), "Prefer": "wait=2"})
        took = time.monotonic() - started
        assert answer.status_code == 200, answer.text
        assert answer.headers["Preference-Applied"] == "wait=2"
        assert answer.json()["status"] in ("pending", "processing")
        assert 2 <= took < 2 + SLACK, took
    finally:
        finish(follow, [job_id])


def test_a_post_with_wait_answers_200_with_each_jobs_own_status_once_all_ended(follow):
    answer = submit(follow, "quick", count=2, headers={"Prefer": "respond-async, wait=30"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["Preference-Applied"] == "wait=30"
    jobs = answer.json()["jobs"]
    assert [set(entry) for entry in jobs] == [{"job_id", "status", "result"}] * 2
    assert all(entry["status"] == "done" and entry["result"] for entry in jobs), jobs


def test_a_post_with_wait_answers_202_when_a_job_has_not_ended(follow):
    started = time.monotonic()
    answer = submit(follow, "slow:60", headers={"Prefer": "wait=1"})
    try:
        assert answer.status_code == 202 and time.monotonic() - started < 1 + SLACK
        assert answer.headers["Preference-Applied"] == "wait=1"
        [entry] = answer.json()["jobs"]
        assert set(entry) == {"job_id", "status"} and entry["status"] in ("pending", "processing")
    finally:
        finish(follow, ids(answer))


def test_a_cancelled_job_ends_a_wait_with_its_error(follow):
    [job_id] = ids(submit(follow, "slow:60"))
    follow.post(f"/api/v1/job/{job_id}/cancel")
    answer = follow.get(f"/api/v1/job/{job_id}", headers={**follow.headers(), "Prefer": "wait=10"})
    assert answer.json()["status"] == "cancelled"


@pytest.mark.parametrize("prefer", ["wait=abc", "wait=", "wait=-1", "wait=0", "wait", "wait=1.5", ";;==,"])
def test_a_malformed_prefer_is_ignored(follow, prefer):
    [job_id] = ids(submit(follow, "quick"))
    follow.wait_job(job_id)
    plain = follow.get(f"/api/v1/job/{job_id}")
    answer = follow.get(f"/api/v1/job/{job_id}", headers={**follow.headers(), "Prefer": prefer})
    assert answer.status_code == 200 and "Preference-Applied" not in answer.headers
    assert answer.content == plain.content
    posted = submit(follow, "quick", headers={"Prefer": prefer})
    assert posted.status_code == 202 and "Preference-Applied" not in posted.headers
    assert [entry["status"] for entry in posted.json()["jobs"]] == ["queued"]


def test_without_prefer_the_answers_are_the_guides(follow):
    posted = submit(follow, "quick")
    [job_id] = ids(posted)
    assert posted.status_code == 202 and "Preference-Applied" not in posted.headers
    assert posted.content == json.dumps({"jobs": [{"job_id": job_id, "status": "queued"}]}).encode()
    doc = follow.wait_job(job_id)
    answer = follow.get(f"/api/v1/job/{job_id}")
    assert answer.content == json.dumps(doc, ensure_ascii=False).encode()
    assert "Preference-Applied" not in answer.headers
    unknown = follow.get(f"/api/v1/job/{uuid.uuid4()}", headers={**follow.headers(), "Prefer": "wait=5"})
    assert unknown.status_code == 404 and "Preference-Applied" not in unknown.headers


# --- server-sent events ------------------------------------------------------------------------------

def test_a_job_stream_follows_the_job_resumes_with_the_current_state_and_closes_at_its_end(follow):
    [job_id] = ids(submit(follow, "slow:4"))
    stream = Events(follow, f"/api/v1/job/{job_id}/events")
    first = stream.next()
    assert first["event"] == "status" and first["data"]["id"] == job_id and "queue_position" in first["data"]
    progressed = stream.until(lambda doc: doc["status"] == "processing" and doc["progress"])
    assert int(progressed["id"]) > int(first["id"])
    stream.close()   # disconnect mid-job, and come back

    again = Events(follow, f"/api/v1/job/{job_id}/events", last_event_id=progressed["id"])
    current = again.next()   # at once: the current state, no replay of what came before
    assert current["data"]["status"] in ("processing", "done") and int(current["id"]) >= int(progressed["id"])
    assert current["data"] == {**follow.get(f"/api/v1/job/{job_id}").json(), **current["data"]}
    last = current if current["data"]["status"] == "done" else again.until(lambda doc: doc["status"] in ENDED)
    assert last["data"]["status"] == "done"
    assert again.next() is None   # the server closed the stream after the terminal state
    # an ended job's stream: its final state, then the end
    ended = Events(follow, f"/api/v1/job/{job_id}/events")
    assert ended.next()["data"]["status"] == "done" and ended.next() is None


def test_a_job_stream_shows_its_queue_position_move_when_a_job_ahead_leaves_the_line(follow):
    settle(follow)
    [running] = ids(submit(follow, "slow:60"))
    # the replica runs one job and reserves the next (prefetch 2); the last two wait in line
    [reserved, ahead, behind] = ids(submit(follow, "slow:60", count=3))
    try:
        deadline = time.monotonic() + 30
        while not follow.get(f"/api/v1/job/{reserved}").json()["replica"]:   # reserved by the replica
            assert time.monotonic() < deadline, "the replica reserved no second job"
            time.sleep(0.05)
        stream = Events(follow, f"/api/v1/job/{behind}/events")
        first = stream.next()["data"]
        assert (first["status"], first["queue_position"]) == ("pending", 1), first
        follow.post(f"/api/v1/job/{ahead}/cancel")   # only the line moved: `behind` itself did not change
        moved = stream.next()["data"]
        assert (moved["status"], moved["queue_position"]) == ("pending", 0), moved
        stream.close()
    finally:
        finish(follow, [running, reserved, ahead, behind])


def settle(stack):
    """Wait until every job of the stack's key has ended (earlier tests may leave some running)."""
    for doc in stack.get("/api/v1/jobs?limit=100").json()["jobs"]:
        if doc["status"] not in ENDED:
            stack.wait_job(doc["id"])


def test_the_key_stream_carries_the_keys_jobs_of_the_preset_asked_for(follow, other_key):
    settle(follow)
    stream = Events(follow, "/api/v1/events?preset=example_01")
    everything = Events(follow, "/api/v1/events")
    elsewhere = Events(follow, "/api/v1/events?preset=no_such_preset", read_timeout=3)
    theirs = ids(submit(follow, "quick", key=other_key))
    follow.wait_job(theirs[0])
    mine = ids(submit(follow, "quick"))
    follow.wait_job(mine[0])
    for events in (stream, everything):
        seen = []
        while not seen or seen[-1]["status"] != "done":
            seen.append(events.next()["data"])
        # its first event after the other key's job ended is mine: the other key's job never came
        assert {doc["id"] for doc in seen} == set(mine), seen
        assert [doc["status"] for doc in seen][-1] == "done" and all(doc["preset"] == "example_01" for doc in seen)
        events.close()
    # a preset none of the key's jobs has: the stream stays quiet (only its opening comment came)
    with pytest.raises(requests.exceptions.ConnectionError):
        elsewhere.next()
    assert elsewhere.comments == ["stream open"]


def test_streams_answer_the_api_errors(follow):
    assert requests.get(f"{follow.url}/api/v1/events", timeout=10).status_code == 401
    assert follow.get(f"/api/v1/job/{uuid.uuid4()}/events").status_code == 404
    assert follow.get("/api/v1/events?preset=..").status_code == 400
