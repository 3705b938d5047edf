"""Server-sent event frames (the WHATWG HTML "server-sent events" wire format)."""
from __future__ import annotations

import json

KEEP_ALIVE = b": keep-alive\n\n"     # a comment line: keeps proxies from closing an idle stream
KEEP_ALIVE_SECONDS = 15
HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
           (b"x-accel-buffering", b"no")]   # nginx: pass each event on at once


def status_event(doc: dict, version: int) -> bytes:
    """A job document as an `event: status` frame whose `id:` is the document's version (a reconnecting
    client's Last-Event-ID). JSON never contains a raw newline, so the document is one `data:` line."""
    data = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    return f"event: status\nid: {version}\ndata: {data}\n\n".encode()


def comment(text: str) -> bytes:
    return f": {text}\n\n".encode()

