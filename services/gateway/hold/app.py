"""The ASGI app each gateway worker serves: held requests and event streams here, everything else in the
WSGI app (services/gateway/app.py) on a thread pool of `threads` threads (a2wsgi).

Every held or streamed request first goes through the WSGI app like any other, so API key checks, rate
limits, validation, the error table and the metrics stay defined once: a non-2xx answer is passed on as
it is. Only then does this side wait, on the job changes (hold/changes.py), without a thread:

- `Prefer: wait=N` on GET /api/v1/job/<id>: the job document once the job has ended or N s passed.
- `Prefer: wait=N` on POST /api/v1/generate/<slug>: 200 once every job ended, else 202 after N s; each
  entry of `jobs` then carries the job's own status and its `result` or `error` once it ended.
- GET /api/v1/job/<id>/events: `event: status` frames with the job document, the current one first (a
  reconnect with Last-Event-ID gets the current state at once, no replay), then every change; closes after
  a terminal state.
- GET /api/v1/events?preset=: the same frames for every job of the calling API key from now on.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable

import falcon.media
from a2wsgi import WSGIMiddleware

from services.gateway import access_log
from services.gateway.hold import framing, prefer, sse
from services.gateway.hold.changes import JobChanges, Listener, ended
from shared.contracts.jobs.view import version

JOB = re.compile(r"/api/v1/job/([^/]+)")
JOB_EVENTS = re.compile(r"/api/v1/job/([^/]+)/events")
GENERATE = re.compile(r"/api/v1/generate/([^/]+)")
KEY_EVENTS = "/api/v1/events"
STARTUP_SUBSCRIBE_SECONDS = 5
log = logging.getLogger(__name__)
_JSON = falcon.media.JSONHandler()   # the WSGI app's own JSON: the same bytes for the same document


class Answer:
    """A WSGI app's answer, kept instead of sent."""

    def __init__(self):
        self.status, self.headers, self.body = 500, [], bytearray()

    async def collect(self, message):
        if message["type"] == "http.response.start":
            self.status, self.headers = message["status"], list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"")

    def header(self, name: bytes):
        return next((value for key, value in self.headers if key == name), None)

    async def send(self, send, body=None, status=None, extra=()):
        """This answer (or `body` and `status` in its place, with its other headers) plus `extra` headers."""
        body = bytes(self.body) if body is None else body
        headers = [(key, value) for key, value in self.headers if key != b"content-length"]
        headers += [(b"content-length", str(len(body)).encode()), *extra]
        await send({"type": "http.response.start", "status": status or self.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def header_values(scope, name: bytes) -> list[str]:
    return [value.decode("latin-1") for key, value in scope["headers"] if key == name]


class GatewayApp:
    def __init__(self, wsgi_app, changes: JobChanges, threads: int, max_body: Callable[[str], int]):
        self.wsgi = WSGIMiddleware(wsgi_app, workers=threads)
        self.changes = changes
        self.max_body = max_body   # path -> the largest body a route there reads (hold/framing.py)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._logged(scope, receive, send)

    async def _lifespan(self, receive, send):
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self.changes.start():
                    try:   # serve once subscribed, so no early wait misses a change; Redis away: serve anyway
                        await asyncio.wait_for(self.changes.subscribed.wait(), STARTUP_SUBSCRIBE_SECONDS)
                    except asyncio.TimeoutError:
                        log.warning("job changes: not subscribed yet; held requests answer at their deadline")
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.changes.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _logged(self, scope, receive, send):
        started, sent = time.monotonic(), {"status": "-", "bytes": 0}

        async def counting_send(message):
            if message["type"] == "http.response.start":
                sent["status"] = message["status"]
            else:
                sent["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            request = await framing.whole_body(scope, receive, counting_send, self.max_body(scope["path"]))
            if request is not None:   # else answered (413) or the client left mid-body: nothing to act on
                await self.route(*request, counting_send)
        finally:
            client = scope.get("client") or ("-", 0)
            access_log.log(scope["method"], scope["path"], sent["status"], sent["bytes"],
                           round((time.monotonic() - started) * 1000), client[0])

    async def route(self, scope, receive, send):
        path, method = scope["path"].rstrip("/") or "/", scope["method"]
        if method == "GET":
            match = JOB_EVENTS.fullmatch(path)
            if match:
                return await self.job_events(scope, receive, send, match.group(1))
            if path == KEY_EVENTS:
                return await self.key_events(scope, receive, send)
        seconds = prefer.wait_seconds(header_values(scope, b"prefer"))
        if seconds is not None:
            if method == "GET" and JOB.fullmatch(path):
                return await self.hold_job(scope, receive, send, JOB.fullmatch(path).group(1), seconds)
            if method == "POST" and GENERATE.fullmatch(path):
                return await self.hold_generate(scope, receive, send, seconds)
        await self.wsgi(scope, receive, send)

    async def ask_wsgi(self, scope, receive) -> Answer:
        answer = Answer()
        await self.wsgi(scope, receive, answer.collect)
        return answer

    # --- Prefer: wait=N ----------------------------------------------------------------------------

    async def hold_job(self, scope, receive, send, job_id, seconds):
        deadline = time.monotonic() + seconds
        listener = Listener([job_id])
        self.changes.add(listener)   # before the first read: no change can fall between the two
        try:
            answer = await self.ask_wsgi(scope, receive)
            if answer.status != 200:
                return await answer.send(send)
            first = doc = json.loads(answer.body)
            listener.offer(first)
            gone = asyncio.ensure_future(_disconnected(receive))
            try:
                while not ended(doc):
                    changed = await listener.next(deadline - time.monotonic(), gone)
                    if changed is None:
                        break
                    doc = changed
                if gone.done():
                    return   # the client left: nobody to answer
            finally:
                gone.cancel()
            body = None if doc is first else _JSON.serialize(doc, falcon.MEDIA_JSON)   # unchanged: the same bytes
            await answer.send(send, body, extra=[(b"preference-applied", prefer.applied(seconds).encode())])
        finally:
            self.changes.remove(listener)

    async def hold_generate(self, scope, receive, send, seconds):
        deadline = time.monotonic() + seconds
        listener = Listener()
        try:
            answer = await self.ask_wsgi(scope, receive)
            if answer.status != 202:
                return await answer.send(send)
            job_ids = [entry["job_id"] for entry in json.loads(answer.body)["jobs"]]
            self.changes.add(listener, job_ids)   # then read: a change before this is in what is read
            docs = {doc["id"]: doc for doc in await self.changes.read(job_ids)}
            gone = asyncio.ensure_future(_disconnected(receive))
            try:
                while not all(job_id in docs and ended(docs[job_id]) for job_id in job_ids):
                    changed = await listener.next(deadline - time.monotonic(), gone)
                    if changed is None:
                        break
                    docs[changed["id"]] = changed
                if gone.done():
                    return   # the client left: its jobs go on, nobody is there to answer
            finally:
                gone.cancel()
            jobs = [_entry(job_id, docs.get(job_id)) for job_id in job_ids]
            all_ended = all(job_id in docs and ended(docs[job_id]) for job_id in job_ids)
            await answer.send(send, _JSON.serialize({"jobs": jobs}, falcon.MEDIA_JSON),
                              status=200 if all_ended else 202,
                              extra=[(b"preference-applied", prefer.applied(seconds).encode())])
        finally:
            self.changes.remove(listener)

    # --- server-sent events ------------------------------------------------------------------------

    async def job_events(self, scope, receive, send, job_id):
        listener = Listener([job_id])
        self.changes.add(listener)
        try:
            answer = await self.ask_wsgi(scope, receive)   # the key check and the current document
            if answer.status != 200:
                return await answer.send(send)
            doc = json.loads(answer.body)
            self.changes.opened(listener, [doc])
            await self._stream(send, receive, listener, until_ended=True)
        finally:
            self.changes.remove(listener)

    async def key_events(self, scope, receive, send):
        answer = await self.ask_wsgi(scope, receive)   # the key check; answers the key's name and the filter
        if answer.status != 200:
            return await answer.send(send)
        subscription = json.loads(answer.body)
        listener = Listener(owner=subscription["owner"], preset=subscription["preset"])
        self.changes.add(listener)
        try:
            await self._stream(send, receive, listener, until_ended=False)
        finally:
            self.changes.remove(listener)

    async def _stream(self, send, receive, listener: Listener, until_ended: bool):
        await send({"type": "http.response.start", "status": 200, "headers": sse.HEADERS})
        await send({"type": "http.response.body", "body": sse.comment("stream open"), "more_body": True})
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            while not gone.done():
                doc = await listener.next(sse.KEEP_ALIVE_SECONDS, gone)
                if doc is None:
                    if not gone.done():
                        await send({"type": "http.response.body", "body": sse.KEEP_ALIVE, "more_body": True})
                    continue
                await send({"type": "http.response.body", "body": sse.status_event(doc, version(doc)),
                            "more_body": True})
                if until_ended and ended(doc):
                    break
            if not gone.done():
                await send({"type": "http.response.body", "body": b""})
        finally:
            gone.cancel()


def _entry(job_id: str, doc: dict | None) -> dict:
    """A POST answer's entry with the job's own status; its result or error once it ended."""
    if doc is None:
        return {"job_id": job_id, "status": "pending"}
    entry = {"job_id": job_id, "status": doc["status"]}
    if ended(doc):
        entry.update({"result": doc["result"]} if doc["status"] == "done" else {"error": doc["error"]})
    return entry


async def _disconnected(receive):
    while (await receive())["type"] != "http.disconnect":
        pass
