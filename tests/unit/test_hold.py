"""The asyncio side's pure parts (services/gateway/hold/): the Prefer header, SSE frames, a listener's
de-duplication, and a POST answer's entries."""
import asyncio

import pytest

from services.gateway.hold import prefer, sse
from services.gateway.hold.app import _entry
from services.gateway.hold.changes import Listener
from shared.contracts.jobs.view import parse_change, version


@pytest.mark.parametrize("values, seconds", [
    (["wait=5"], 5),
    (["WAIT=5"], 5),
    (['wait="7"'], 7),
    (["respond-async, wait=10"], 10),
    (["respond-async", "wait=10"], 10),
    (["wait=10; foo=bar"], 10),
    (["  wait = 3 "], 3),
    (["wait=60"], 60),
    (["wait=3600"], prefer.MAX_WAIT_SECONDS),      # more than the limit: the limit
    (["wait=2, wait=9"], 2),                        # the first occurrence wins
    (['foo="a,wait=9", wait=4'], 4),                # a comma inside a quoted string separates nothing
])
def test_a_wait_preference_is_read(values, seconds):
    assert prefer.wait_seconds(values) == seconds


@pytest.mark.parametrize("values", [[], [""], ["respond-async"], ["wait"], ["wait="], ["wait=0"], ["wait=-1"],
                                    ["wait=1.5"], ["wait=abc"], ["wait=５"], [";;==,"], ['wait="']])
def test_a_malformed_or_missing_wait_is_ignored(values):
    assert prefer.wait_seconds(values) is None


def test_preference_applied_says_the_wait_applied():
    assert prefer.applied(12) == "wait=12"


def test_a_status_event_is_one_frame_with_the_version_as_its_id():
    doc = {"id": "j1", "status": "pending", "label": "a\nb", "attempts": 0, "progress": None}
    frame = sse.status_event(doc, version(doc)).decode()
    assert frame == 'event: status\nid: 0\ndata: {"id":"j1","status":"pending","label":"a\\nb","attempts":0,' \
                    '"progress":null}\n\n'
    assert sse.KEEP_ALIVE.startswith(b":") and sse.KEEP_ALIVE.endswith(b"\n\n")


def test_a_change_message_is_parsed():
    assert parse_change(b'{"id":"j","v":"2000000000000","owner":"","line_moved":true,"lines":["A/x.safetensors"]}') == {
        "id": "j", "v": 2_000_000_000_000, "owner": "", "line_moved": True, "lines": ["A/x.safetensors"]}
    # nothing moved: no line to wake (the script leaves "lines" out, as cjson would write an empty list as {})
    assert parse_change('{"id":"j","v":"1","owner":"bob","line_moved":false}')["lines"] == []
    # from a writer before per-checkpoint lines: a line moved, which one is not said (None: every line)
    assert parse_change(b'{"id":"j","v":"1","owner":"","line_moved":true}')["lines"] is None


def test_a_listener_hands_over_each_change_once_and_filters_by_preset():
    async def scenario():
        listener = Listener(owner="alice", preset="p1")
        pending = {"id": "j", "status": "pending", "attempts": 0, "progress": None, "preset": "p1",
                   "queue_position": 3}
        listener.offer(pending)
        listener.offer(dict(pending))                           # the same state again: not handed over
        listener.offer({**pending, "queue_position": 2})         # moved up the line: handed over
        listener.offer({**pending, "id": "k", "preset": "p2"})   # another preset: filtered out
        got = [await listener.next(0.1) for _ in range(3)]
        return got
    first, moved, nothing = asyncio.run(scenario())
    assert (first["queue_position"], moved["queue_position"], nothing) == (3, 2, None)


def test_a_post_entry_carries_the_result_or_the_error_once_ended():
    assert _entry("j", {"status": "processing"}) == {"job_id": "j", "status": "processing"}
    assert _entry("j", {"status": "done", "result": {"u": 1}, "error": None}) == {
        "job_id": "j", "status": "done", "result": {"u": 1}}
    assert _entry("j", {"status": "failed", "result": None, "error": "boom"}) == {
        "job_id": "j", "status": "failed", "error": "boom"}
    assert _entry("j", {"status": "cancelled", "result": None, "error": "cancelled"})["error"] == "cancelled"


def test_a_quiet_stream_sends_keep_alive_comments_and_stops_when_the_client_leaves(monkeypatch):
    from services.gateway.hold import app as hold_app
    monkeypatch.setattr(sse, "KEEP_ALIVE_SECONDS", 0.05)
    sent = []

    async def scenario():
        left = asyncio.Event()

        async def receive():
            await left.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        gateway = hold_app.GatewayApp(lambda environ, start_response: [], changes=None, threads=1,
                                      max_body=lambda path: 1024)
        streaming = asyncio.ensure_future(gateway._stream(send, receive, Listener(["j"]), until_ended=True))
        await asyncio.sleep(0.3)
        left.set()
        await asyncio.wait_for(streaming, 1)

    asyncio.run(scenario())
    assert sent[0]["status"] == 200 and (b"content-type", b"text/event-stream; charset=utf-8") in sent[0]["headers"]
    bodies = [message.get("body") for message in sent[1:]]
    assert bodies[0] == sse.comment("stream open") and bodies.count(sse.KEEP_ALIVE) >= 2


def test_a_stream_ends_after_the_terminal_state():
    from services.gateway.hold import app as hold_app
    sent = []

    async def scenario():
        async def receive():
            await asyncio.Event().wait()

        async def send(message):
            sent.append(message)

        listener = Listener(["j"])
        for status in ("processing", "done"):
            listener.offer({"id": "j", "status": status, "attempts": 1, "progress": None})
        gateway = hold_app.GatewayApp(lambda environ, start_response: [], changes=None, threads=1,
                                      max_body=lambda path: 1024)
        await asyncio.wait_for(gateway._stream(send, receive, listener, until_ended=True), 1)

    asyncio.run(scenario())
    frames = [message["body"] for message in sent[1:]]
    assert frames[1].startswith(b"event: status\nid: 1000001000000\n") and b'"processing"' in frames[1]
    assert b'"done"' in frames[2] and frames[3] == b"" and "more_body" not in sent[-1]
