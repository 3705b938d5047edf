"""HTTP framing at the gateway's edge: what the WSGI app would otherwise be handed half-read or unbounded.

Two layers, tested against the real server in tests/integration/test_http_framing.py:

- `GatewayHttpProtocol`, the HTTP/1.1 protocol of the gateway's uvicorn workers (hold/worker.py): uvicorn's
  httptools protocol with the limits httptools lacks (a request line, one header, the count of headers and
  the whole head: 414 / 431, as gunicorn's limit_request_* did) and its refusals as JSON
  `{"error", "field"}` like every other error of the gateway, instead of a text/plain 400.
- `whole_body`, run on every request before the app (hold/app.py): the body is read here, asynchronously,
  until it is complete, and only then handed on, in one piece with its Content-Length (PEP 3333: a server
  may de-chunk). So a chunked body reaches the WSGI app whole (a2wsgi marks no `wsgi.input_terminated`,
  and Falcon's bounded stream would read nothing of it); a body cut short by the client (its connection
  closed, a chunk size that lied) never reaches the app at all, so no truncated form or JSON is acted
  on; a body past the largest the gateway accepts is a 413 without reading the rest; and a slow upload
  holds a coroutine, never one of the WSGI threads.
"""
from __future__ import annotations

import asyncio
import json

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

MAX_URL_BYTES = 8 * 1024         # the request target: 414 past it
MAX_FIELD_BYTES = 8 * 1024       # one header line: 431 past it
MAX_HEADERS = 100                # header lines in one request: 431 past them
MAX_HEAD_BYTES = 64 * 1024       # the whole head, counted as it arrives (httptools buffers a header whole)
HEAD_SLICE_BYTES = 8 * 1024      # a head is fed to the parser this much at a time
# a body must have arrived whole this long after its head (408 past it): a client that stalls mid-body
# (slowloris) holds a coroutine and its partial body no longer than this
BODY_DEADLINE_SECONDS = 30.0


def error_body(message: str, field: str) -> bytes:
    return json.dumps({"error": message, "field": field}).encode()


class _Refused(Exception):
    def __init__(self, status: int, message: str, field: str):
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


class GatewayHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, bounded, answering its refusals in the gateway's JSON shape."""

    def connection_made(self, transport):
        super().connection_made(transport)
        self._head_left, self._count, self._refused = MAX_HEAD_BYTES, 0, None

    def data_received(self, data: bytes) -> None:
        """Fed to the parser in slices while a head is being read, each counted first: httptools keeps a
        header whole until it ends, so only this bounds what one head may hold (to within a slice)."""
        while self._head_left is not None and len(data) > HEAD_SLICE_BYTES:
            self._feed(data[:HEAD_SLICE_BYTES])
            data = data[HEAD_SLICE_BYTES:]
            if self.transport.is_closing():
                return
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        if self._head_left is not None:
            self._head_left -= len(data)
            if self._head_left < 0:
                self._refuse(431, f"request headers larger than {MAX_HEAD_BYTES} bytes", "headers")
                return self.send_400_response("")
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._count = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > MAX_URL_BYTES:
            raise self._refuse(414, f"URL longer than {MAX_URL_BYTES} bytes", "url")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count += 1
        if self._count > MAX_HEADERS:
            raise self._refuse(431, f"more than {MAX_HEADERS} request headers", "headers")
        if len(name) + len(value) > MAX_FIELD_BYTES:
            raise self._refuse(431, f"a request header longer than {MAX_FIELD_BYTES} bytes", "headers")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        codings = [coding.strip().lower() for name, value in self.headers if name == b"transfer-encoding"
                   for coding in value.split(b",")]
        if codings and codings != [b"chunked"]:   # gzip and the like would reach the app still encoded
            raise self._refuse(400, "Transfer-Encoding: only chunked is accepted", "Transfer-Encoding")
        self._head_left = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_left = MAX_HEAD_BYTES   # what follows on this connection is the next request's head

    def _refuse(self, status: int, message: str, field: str) -> _Refused:
        self._refused = _Refused(status, message, field)
        return self._refused

    def send_400_response(self, msg: str) -> None:
        """uvicorn calls this for any request it cannot parse; the connection closes after it. Once the
        app has begun its answer nothing more can be said on this connection: it only closes."""
        refused, self._refused = self._refused, None
        if self.cycle is not None and self.cycle.response_started and not self.cycle.response_complete:
            self.transport.close()
            return
        if refused is None:   # httptools' own refusal: in the head, or in a body it had begun to read
            in_body = self._head_left is None
            refused = _Refused(400, "malformed request body" if in_body else "malformed HTTP request",
                               "body" if in_body else "request")
        self.logger.info("refused a request: %s %s", refused.status, refused.message)
        body = error_body(refused.message, refused.field)
        head = [STATUS_LINE[refused.status]]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head += [b"content-type: application/json\r\n", b"content-length: %d\r\n" % len(body),
                 b"connection: close\r\n\r\n"]
        self.transport.write(b"".join(head) + body)
        self.transport.close()


# --- the body, whole, before the app ------------------------------------------------------------------

def _declared_length(headers) -> int | None:
    """The Content-Length the server let through (httptools refuses a bad or repeated one), else None."""
    for name, value in headers:
        if name == b"content-length":
            return int(value)
    return None


async def whole_body(scope, receive, send, limit: int, deadline: float = BODY_DEADLINE_SECONDS):
    """(scope, receive) for the app, the body whole in the first message; or None when this answered
    the request itself (413) or the client left before its body was complete (nobody to answer)."""
    headers = scope["headers"]
    declared = _declared_length(headers)
    chunked = any(name == b"transfer-encoding" for name, _ in headers)
    if not chunked and not declared:
        return scope, receive   # no body (RFC 9112 6.3): nothing to wait for; a stream's receive untouched
    if declared is not None and declared > limit:
        await _too_large(send, limit)
        return None
    body = bytearray()
    try:
        async with asyncio.timeout(deadline):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return None
                body += message.get("body", b"")
                if len(body) > limit:
                    await _too_large(send, limit)
                    return None
                if not message.get("more_body", False):
                    break
    except TimeoutError:
        await _refuse(send, 408, f"the body did not arrive within {deadline:g} s", "body")
        return None
    if chunked:   # the app sees what a de-chunking server hands on: the body and its length
        headers = [(name, value) for name, value in headers if name != b"transfer-encoding"]
        scope = {**scope, "headers": [*headers, (b"content-length", str(len(body)).encode())]}
    replayed = False

    async def replay():
        nonlocal replayed
        if replayed:
            return await receive()   # after the body: the disconnect, which held requests wait for
        replayed = True
        return {"type": "http.request", "body": bytes(body), "more_body": False}

    return scope, replay


async def _too_large(send, limit: int) -> None:
    await _refuse(send, 413, f"body larger than {limit} bytes", "body")


async def _refuse(send, status: int, message: str, field: str) -> None:
    body = error_body(message, field)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
