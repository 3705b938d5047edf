"""GET/HEAD /static/uploads/<relative_path> from a media store that is not a local directory (S3).

With GAZE_MEDIA_STORE=local the gateway keeps Falcon's static route; with s3 this sink answers the same
URLs the same way: the object streamed from the store (never held whole in memory) with the Content-Type
of its suffix (image/png), Content-Length, ETag and Last-Modified; 304 for a matching If-None-Match (or,
without one, an If-Modified-Since not older than the object); a JSON 404 for a missing key and for any
path the store refuses (absolute, "..", NUL, backslash: shared.media.safe_relative_path), never a 500;
a 503 with Retry-After when the store cannot be reached.

A sink rather than a route, so that like the static route it has no URI template and the metrics label
it `/static/uploads/{path}`.
"""
from __future__ import annotations

import logging
import posixpath
import re

import falcon

from shared.media import URL_PREFIX, MediaNotFound, UnsafePath
from services.gateway.errors import ApiError

log = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024
PREFIX_RE = re.compile(re.escape(URL_PREFIX) + r"(?=/|\Z)")


def _not_found():
    return ApiError(falcon.HTTP_404, "no such image")


class _Chunks:
    """The response body: the object's stream in chunks, closed when the server is done with it (also
    when the client went away before the end, and also when iteration never started)."""

    def __init__(self, body):
        self.body = body

    def __iter__(self):
        return self

    def __next__(self):
        chunk = self.body.read(CHUNK_BYTES)
        if not chunk:
            raise StopIteration
        return chunk

    def close(self):
        self.body.close()


class StoreMediaRoute:
    def __init__(self, store):
        self.store = store

    def mount(self, app: falcon.App) -> None:
        app.add_sink(self, PREFIX_RE)

    def __call__(self, req, resp, **params):
        if req.method == "OPTIONS":
            resp.set_header("Allow", "GET, HEAD")
            resp.content_length = 0
            return
        if req.method not in ("GET", "HEAD"):
            raise falcon.HTTPMethodNotAllowed(["GET", "HEAD"])
        rest = req.path[len(URL_PREFIX):]
        if not rest.startswith("/") or "//" in rest:
            raise _not_found()
        relative_path = rest[1:]
        if req.method == "HEAD" or req.if_none_match or req.if_modified_since:
            info, body = self._from_store(self.store.stat, relative_path), None
            if info is None:
                raise _not_found()
        else:
            info, body = self._from_store(self.store.open, relative_path)
        resp.etag = info.etag
        resp.last_modified = info.last_modified
        if _not_modified(req, info):
            resp.status = falcon.HTTP_304
            return
        resp.content_type = resp.options.static_media_types.get(
            posixpath.splitext(relative_path)[1].lower(), "application/octet-stream")
        if body is None:  # HEAD, or a conditional GET that does not match: now fetch the body
            if req.method == "HEAD":
                resp.content_length = info.size
                return
            info, body = self._from_store(self.store.open, relative_path)
            resp.etag = info.etag
            resp.last_modified = info.last_modified
        resp.stream = _Chunks(body)
        resp.content_length = info.size

    @staticmethod
    def _from_store(read, relative_path):
        """`read(relative_path)` with the store's failures as the API's answers: 404 for a path that is
        unsafe or names nothing (a store that cannot be reached is a 503: errors.HANDLERS)."""
        try:
            return read(relative_path)
        except (UnsafePath, MediaNotFound):
            raise _not_found() from None


def _not_modified(req, info) -> bool:
    """RFC 9110 13.2.2: If-None-Match (weak comparison) decides when present; else If-Modified-Since."""
    if req.if_none_match:
        return any(tag == "*" or str(tag) == info.etag for tag in req.if_none_match)
    since = req.if_modified_since
    return since is not None and info.last_modified <= since
