"""A fake GAZE REST API as an httpx transport (no sockets), for the unit tests of the Python client
(clients/python) and its command line: the answers of docs/gaze-rest-api-guide.md, server-sent events
included, with scripted failures in front of them."""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

import httpx

from tests.helpers import png

KEY = "gz_test_key"
BASE = "http://gaze.test"
PRESETS = [{"preset_id": "example_01", "slug": "example_01", "name": "Example Preset", "has_cover": False}]
IMAGE = png(8, 8)


def job_doc(job_id, status="pending", step=None, steps=20, queue_position=None, error="backend exploded"):
    done = status == "done"
    return {
        "id": job_id, "label": "Preset: Example Preset – preview", "status": status,
        "error": error if status == "failed" else None,
        "result": {"image_url": f"/static/uploads/presets/example_01/gen_1_{job_id[:8]}.png",
                   "relative_path": f"presets/example_01/gen_1_{job_id[:8]}.png", "seed": 7} if done else None,
        "queue_position": queue_position if status == "pending" else None,
        "progress": {"value": step, "max": steps} if step is not None else None,
        "attempts": 1,   # a key of the server's own beyond the schema: kept by the client
    }


def sse(docs, first_id=0) -> bytes:
    return b"".join(b": keep-alive\n\n" + f"event: status\nid: {i}\ndata: {json.dumps(doc)}\n\n".encode()
                    for i, doc in enumerate(docs, first_id))


class SilentStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """An event stream that opens and then says nothing until the read times out."""

    def __iter__(self):
        yield b": stream open\n\n"
        raise httpx.ReadTimeout("silence")

    async def __aiter__(self):
        yield b": stream open\n\n"
        raise httpx.ReadTimeout("silence")


class BreakingStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """An event stream that sends its first event and then breaks (the connection is lost)."""

    def __init__(self, first: bytes):
        self.first = first

    def __iter__(self):
        yield self.first
        raise httpx.ReadError("connection reset")

    async def __aiter__(self):
        yield self.first
        raise httpx.ReadError("connection reset")


def answer(status, body=None, headers=None) -> httpx.Response:
    return httpx.Response(status, json=body if body is not None else {"error": f"HTTP {status}"},
                          headers=headers or {})


@dataclass
class FakeGaze:
    """`script`: the states each new job goes through (GET shows the first, the event streams the rest);
    `failures`: answers (httpx.Response) or exceptions given, in order, before any real answer."""

    script: list = field(default_factory=lambda: [("pending", None), ("processing", 5), ("done", 20)])
    failures: list = field(default_factory=list)
    jobs: dict = field(default_factory=dict)       # id -> list of documents, the first one current
    requests: list = field(default_factory=list)
    silent_streams: bool = False
    breaking_streams: int = 0      # this many job streams break after their first event

    def transport(self):
        return httpx.MockTransport(self.handle)

    def client(self, cls=None, **kwargs):
        """A Client (or `cls`: AsyncClient) of this fake: no retry pauses unless `backoff_cap` is given."""
        from gaze_client import AsyncClient, Client
        cls = cls or Client
        http = (httpx.AsyncClient if cls is AsyncClient else httpx.Client)(transport=self.transport())
        return cls(BASE, KEY, http_client=http, **{"backoff_cap": 0, **kwargs})

    def add_job(self, *states):
        job_id = str(uuid.uuid4())
        self.jobs[job_id] = [job_doc(job_id, status, step) for status, step in (states or self.script)]
        return job_id

    def current(self, job_id):
        return self.jobs[job_id][0]

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.failures:
            failure = self.failures.pop(0)
            if isinstance(failure, Exception):
                raise failure
            return failure
        path, method = request.url.path, request.method
        if path.startswith("/static/uploads/"):
            return httpx.Response(200, content=IMAGE, headers={"Content-Type": "image/png"})
        if request.headers.get("X-API-Key") is None:
            return answer(401, {"error": "missing API key", "field": "X-API-Key"})
        if request.headers["X-API-Key"] != KEY:
            return answer(403, {"error": "invalid API key", "field": "X-API-Key"})
        if path == "/api/v1/presets":
            return answer(200, {"presets": PRESETS})
        if method == "POST" and path.startswith("/api/v1/generate/"):
            if path.rsplit("/", 1)[1] != "example_01":
                return answer(404, {"error": "no such preset"})
            body = json.loads(request.content)
            if not 1 <= body.get("count", 1) <= 20:
                return answer(400, {"error": "count: must be at most 20", "field": "count"})
            ids = [self.add_job() for _ in range(body.get("count", 1))]
            return answer(202, {"jobs": [{"job_id": job_id, "status": "queued"} for job_id in ids]})
        if path == "/api/v1/jobs":
            return self.page(request)
        if path == "/api/v1/events":
            return self.stream([doc for docs in self.jobs.values() for doc in docs[1:]])
        parts = path.split("/")   # "", api, v1, job, <id>, [cancel | events]
        if len(parts) >= 5 and parts[3] == "job":
            docs = self.jobs.get(parts[4])
            if docs is None:
                return answer(404, {"error": "no such job"})
            if parts[5:] == ["events"]:
                resumed = request.headers.get("Last-Event-ID")
                if resumed is not None:   # the server's answer to a reconnect: the state now, then on
                    docs = docs[int(resumed):]
                if self.breaking_streams:
                    self.breaking_streams -= 1
                    return httpx.Response(200, headers={"Content-Type": "text/event-stream"},
                                          # a reconnect's first event repeats the state it had
                                          stream=BreakingStream(sse(docs[:2 if resumed else 1],
                                                                    int(resumed or 0))))
                return self.stream(docs, first_id=int(resumed or 0))
            if parts[5:] == ["cancel"]:
                if docs[0]["status"] in ("done", "failed", "cancelled"):
                    return answer(409, {"error": "the job has already ended", "status": docs[0]["status"]})
                docs[:] = [job_doc(parts[4], "cancelled")]
                return answer(202, {"id": parts[4], "status": "cancelled"})
            return answer(200, docs[0])
        return answer(404, {"error": "no such route"})

    def stream(self, docs, first_id=0):
        headers = {"Content-Type": "text/event-stream"}
        if self.silent_streams:
            return httpx.Response(200, headers=headers, stream=SilentStream())
        return httpx.Response(200, headers=headers, content=sse(docs, first_id))

    def page(self, request):
        limit = int(request.url.params.get("limit", 20))
        start = int(request.url.params.get("cursor", 0))
        status = request.url.params.get("status")
        docs = [docs[0] for docs in self.jobs.values() if status in (None, docs[0]["status"])]
        end = start + limit
        return answer(200, {"jobs": docs[start:end], "next_cursor": str(end) if end < len(docs) else None})
