"""The body reader in front of the gateway's app (services/gateway/hold/framing.py whole_body), case by
case with ASGI messages; against the real server, with raw sockets: tests/integration/test_http_framing.py."""
from __future__ import annotations

import asyncio
import json

from services.gateway.hold.framing import whole_body


def _run(headers, messages, limit=100):
    """whole_body over `messages` (then a disconnect forever); (its result, what it sent, what the app then
    receives: the first two messages)."""
    queue = list(messages)
    sent = []

    async def receive():
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    async def scenario():
        result = await whole_body({"type": "http", "headers": headers}, receive, send, limit)
        if result is None:
            return None, sent, None
        scope, app_receive = result
        return scope, sent, [await app_receive(), await app_receive()]

    return asyncio.run(scenario())


def _body(data, more=False):
    return {"type": "http.request", "body": data, "more_body": more}


def test_a_chunked_body_reaches_the_app_whole_with_its_length():
    headers = [(b"host", b"gaze"), (b"transfer-encoding", b"chunked")]
    scope, sent, received = _run(headers, [_body(b'{"cou', True), _body(b'nt": 2}', True), _body(b"")])
    assert sent == []
    assert scope["headers"] == [(b"host", b"gaze"), (b"content-length", b"12")]
    assert received == [_body(b'{"count": 2}'), {"type": "http.disconnect"}]   # then the real receive


def test_a_body_cut_short_never_reaches_the_app():
    for headers in ([(b"content-length", b"50")], [(b"transfer-encoding", b"chunked")]):
        scope, sent, _ = _run(headers, [_body(b'{"count": 2}', True), {"type": "http.disconnect"}])
        assert scope is None and sent == []


def test_a_body_past_the_limit_is_a_413_naming_body():
    for headers, messages in (([(b"content-length", b"101")], []),     # refused before reading
                              ([(b"transfer-encoding", b"chunked")], [_body(b"x" * 60, True), _body(b"x" * 41, True)])):
        scope, sent, _ = _run(headers, messages)
        assert scope is None and sent[0]["status"] == 413
        assert json.loads(sent[1]["body"]) == {"error": "body larger than 100 bytes", "field": "body"}


def test_a_request_without_a_body_passes_untouched():
    for headers in ([], [(b"content-length", b"0")]):
        queue = []

        async def receive():
            queue.append("called")
            return {"type": "http.disconnect"}

        async def scenario():
            scope = {"type": "http", "headers": headers}
            result = await whole_body(scope, receive, None, 100)
            assert result == (scope, receive)

        asyncio.run(scenario())
        assert queue == []   # nothing read: a held request's receive still waits for the disconnect


def test_a_body_that_stalls_past_the_deadline_is_refused_with_a_408():
    """A client that sends part of its body and then nothing (slowloris) is answered 408 at the deadline,
    not held for as long as it likes."""
    sent = []
    first = [_body(b'{"cou', True)]

    async def receive():
        if first:
            return first.pop(0)
        await asyncio.Event().wait()   # the rest never comes (nor a disconnect)

    async def send(message):
        sent.append(message)

    headers = [(b"host", b"gaze"), (b"content-length", b"12")]
    result = asyncio.run(whole_body({"type": "http", "headers": headers}, receive, send, 100, deadline=0.05))
    assert result is None
    assert sent[0]["status"] == 408
    assert json.loads(sent[1]["body"]) == {"error": "the body did not arrive within 0.05 s", "field": "body"}
