"""The job read model's change messages (shared/contracts/jobs/view.py) against the real Redis, and the
gateway's hub that fans them out to waiting requests (services/gateway/hold/changes.py)."""
import asyncio
import time
import uuid

import pytest
import redis

from services.gateway.hold.changes import JobChanges, Listener
from services.gateway.stores.job_lookup import JobLookup
from shared.contracts.jobs.view import SHARED_LINE, JobView, parse_change, version
from tests.fakes import FakeRpc

REDIS_URL = "redis://127.0.0.1:6379/0"


def doc(job_id, status, attempts=0, progress=None, replica=None, created_at=None):
    return {"id": job_id, "status": status, "attempts": attempts, "replica": replica, "preset": "p",
            "created_at": time.time() if created_at is None else created_at,
            "progress": None if progress is None else {"value": progress, "max": 10}}


@pytest.fixture
def view():
    view = JobView(REDIS_URL, prefix=f"test-changes-{uuid.uuid4().hex[:8]}")
    yield view
    for key in view.client.scan_iter(f"{view.prefix}:*"):
        view.client.delete(key)
    view.close()


@pytest.fixture
def messages(view):
    """The change messages published while the test runs, parsed."""
    pubsub = redis.Redis.from_url(REDIS_URL).pubsub()
    pubsub.subscribe(view.changes_channel)
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"

    def read():
        got = []
        while (message := pubsub.get_message(timeout=0.5)) is not None:
            got.append(parse_change(message["data"]))
        return got
    yield read
    pubsub.close()


def test_every_landed_write_is_announced_and_an_older_one_is_not(view, messages):
    job_id = str(uuid.uuid4())
    assert view.put(doc(job_id, "pending"), SHARED_LINE)
    assert view.put(doc(job_id, "processing", 1, replica="r"), SHARED_LINE)
    assert not view.put(doc(job_id, "pending"), SHARED_LINE)   # older: neither written nor announced
    view.put_many([doc(job_id, "processing", 1, progress=3, replica="r")], [SHARED_LINE])
    got = messages()
    assert [(m["id"], m["v"]) for m in got] == [
        (job_id, version(doc(job_id, "pending"))), (job_id, version(doc(job_id, "processing", 1))),
        (job_id, version(doc(job_id, "processing", 1, progress=3)))]
    # joining and leaving the waiting line moves the line; a progress step does not
    assert [(m["line_moved"], m["lines"]) for m in got] == [(True, [SHARED_LINE]), (True, [SHARED_LINE]), (False, [])]
    assert {m["owner"] for m in got} == {""}


def test_a_change_names_the_lines_that_moved(view, messages):
    in_a, in_b, also_a = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    view.put(doc(in_a, "pending", created_at=1.0), "A")
    view.put(doc(in_b, "pending", created_at=2.0), "B")
    view.put(doc(also_a, "pending", created_at=3.0), "A")
    view.put(doc(in_a, "pending", 1, replica="r", created_at=1.0), "A")   # reserved: leaves A's line
    view.put(doc(in_b, "processing", 1, replica="r"), "B")
    assert [(m["id"], m["lines"]) for m in messages()] == [(in_a, ["A"]), (in_b, ["B"]), (also_a, ["A"]),
                                                           (in_a, ["A"]), (in_b, ["B"])]


def test_the_jobs_service_places_a_job_whose_document_a_read_through_wrote_first(view, messages):
    job_id = str(uuid.uuid4())
    assert view.put(doc(job_id, "pending", created_at=1.0))      # the gateway: no line known
    assert view.ranks([job_id]) == {job_id: None}
    assert not view.put(doc(job_id, "pending", created_at=1.0), "B"), "the same version: not written again"
    assert view.places([job_id]) == {job_id: ("B", 0)}
    assert [(m["line_moved"], m["lines"]) for m in messages()] == [(False, []), (True, ["B"])]
    assert not view.put(doc(job_id, "pending", created_at=1.0), "B")
    assert messages() == [], "nothing moved the second time: nothing announced"


def test_an_owner_recorded_by_the_gateway_is_announced_and_carried_by_later_changes(view, messages):
    job_id, unwritten = str(uuid.uuid4()), str(uuid.uuid4())
    view.put(doc(job_id, "pending"))
    view.own([job_id, unwritten], "alice")
    view.put(doc(job_id, "done", 1))
    got = messages()
    assert [(m["id"], m["owner"]) for m in got] == [(job_id, ""), (job_id, "alice"), (job_id, "alice")]
    # a job not written yet is not announced, and its owner entry expires like an active document
    assert 0 < view.client.ttl(view.key(unwritten)) <= 15 * 60


def test_the_hub_hands_each_change_to_the_listeners_of_the_job_and_of_its_owner(view):
    jobs = JobLookup(FakeRpc(), view)

    async def scenario():
        changes = JobChanges(REDIS_URL, view.changes_channel, jobs)
        assert changes.start()
        await asyncio.wait_for(changes.subscribed.wait(), 5)
        job_id, other = str(uuid.uuid4()), str(uuid.uuid4())
        by_job, by_owner, unrelated = Listener([job_id]), Listener(owner="alice"), Listener([other])
        for listener in (by_job, by_owner, unrelated):
            changes.add(listener)
        await asyncio.to_thread(view.put, doc(job_id, "pending"), SHARED_LINE)
        await asyncio.to_thread(view.own, [job_id], "alice")
        owned = [await by_owner.next(5)]   # (the hub hands over the current document, so wait for it first)
        await asyncio.to_thread(view.put, doc(job_id, "done", 1), SHARED_LINE)
        owned.append(await by_owner.next(5))
        first = await by_job.next(5)
        last = await by_job.next(5)
        nothing = await unrelated.next(0.3)
        await changes.stop()
        return first, last, owned, nothing

    first, last, owned, nothing = asyncio.run(scenario())
    assert (first["status"], first["queue_position"]) == ("pending", 0)
    assert last["status"] == "done" and last["queue_position"] is None
    assert [d["status"] for d in owned] == ["pending", "done"]
    assert nothing is None


def test_a_line_that_moved_re_reads_the_places_in_that_line_only(view):
    jobs = JobLookup(FakeRpc(), view)
    first_a, waiting_a, first_b, waiting_b = (str(uuid.uuid4()) for _ in range(4))
    for at, (job_id, line) in enumerate(((first_a, "A"), (waiting_a, "A"), (first_b, "B"), (waiting_b, "B"))):
        view.put(doc(job_id, "pending", created_at=at), line)
    asked = []   # the ids of each re-read of places after a line moved

    async def scenario():
        changes = JobChanges(REDIS_URL, view.changes_channel, jobs)
        assert changes.start()
        await asyncio.wait_for(changes.subscribed.wait(), 5)
        in_a, in_b = Listener([waiting_a]), Listener([waiting_b])
        for listener, job_id in ((in_a, waiting_a), (in_b, waiting_b)):
            changes.add(listener)
            changes.opened(listener, await changes.read([job_id]))
        opened = [(await in_a.next(5))["queue_position"], (await in_b.next(5))["queue_position"]]
        real = view.places
        view.places = lambda ids: asked.append(sorted(ids)) or real(ids)
        await asyncio.to_thread(view.put, doc(first_a, "pending", 1, replica="r", created_at=0), "A")  # A's line moves
        moved_a = (await in_a.next(5))["queue_position"]
        await asyncio.to_thread(view.put, doc(first_b, "pending", 1, replica="r", created_at=2), "B")  # then B's
        moved_b = (await in_b.next(5))["queue_position"]
        nothing = await in_a.next(0.3)
        await changes.stop()
        return opened, moved_a, moved_b, nothing

    opened, moved_a, moved_b, nothing = asyncio.run(scenario())
    assert opened == [1, 1] and (moved_a, moved_b, nothing) == (0, 0, None)
    # the first move re-reads both (the hub learns their lines from it); the second only B's waiting job
    assert asked == [sorted([waiting_a, waiting_b]), [waiting_b]]
