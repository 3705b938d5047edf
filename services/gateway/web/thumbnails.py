"""Thumbnails of media files: GET /thumbs/<size>/<relative_path>, public like the images themselves.

Each (size, image) is made once with Pillow (fit within size×size, aspect ratio kept, never enlarged),
written atomically to <media_root>/.thumbs/<size>/<relative_path>.webp and served from there ever after
without touching Pillow. The source image comes from the configured media store (shared.media): the
local directory, or an S3 bucket, whose object is read once per thumbnail made; the cache is always on
the gateway's local disk, and a thumbnail carries its source's modification time, so a rewritten source
(newer time) gets a new one whichever clock the store keeps. Generated images never change once
written, so browsers may keep a thumbnail for a year. Concurrent first requests each write their own temporary file and rename it into place:
the rename is atomic, so a reader sees either no thumbnail or a whole one, never half of one.
"""
from __future__ import annotations

import io
import logging
import os
import tempfile
import threading
import zlib
from pathlib import Path

import falcon
from PIL import Image, ImageOps, UnidentifiedImageError

from shared.media import LocalMediaStore, MediaInfo, MediaNotFound, UnsafePath
from services.gateway.errors import ApiError
from services.gateway.web.render import THUMB_SIZES

log = logging.getLogger(__name__)

CACHE_DIR = ".thumbs"
SUFFIX = ".webp"
CONTENT_TYPE = "image/webp"
QUALITY = 80
CACHE_CONTROL = "public, max-age=31536000, immutable"
# an object larger than this (from a store other than the local one) is not read for a thumbnail
MAX_SOURCE_BYTES = 64 * 1024 * 1024

# Requests for the same thumbnail in one process wait for the first instead of all decoding the source
# (other processes may still race; the atomic rename makes that harmless, merely wasted work).
_LOCKS = [threading.Lock() for _ in range(64)]


def _lock_for(key: str) -> threading.Lock:
    return _LOCKS[zlib.crc32(key.encode()) % len(_LOCKS)]


def _not_found(message="no such image"):
    return ApiError(falcon.HTTP_404, message)


def make_thumbnail(source, size: int) -> bytes:
    """The WebP bytes of `source` (a path or a binary file) scaled to fit within size×size (smaller
    images keep their size)."""
    with Image.open(source) as image:
        image.draft("RGB", (size, size))  # JPEG sources decode at a reduced scale: much faster
        image = ImageOps.exif_transpose(image)
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
        has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
        image = image.convert("RGBA" if has_alpha else "RGB")
        out = io.BytesIO()
        image.save(out, "WEBP", quality=QUALITY, method=4)
        return out.getvalue()


def write_atomically(path: Path, data: bytes, mtime_ns: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=SUFFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)
        if mtime_ns is not None:
            os.utime(tmp, ns=(mtime_ns, mtime_ns))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ThumbnailResource:
    def __init__(self, store, cache_root=None):
        """`store`: a media store (shared.media), or a media root directory for the local one.
        `cache_root`: where thumbnails are kept, by default <local media root>/.thumbs."""
        self.store = LocalMediaStore(store) if isinstance(store, (str, os.PathLike)) else store
        if cache_root is None:
            cache_root = self.store.root / CACHE_DIR
        self.cache_root = Path(cache_root).resolve()

    @classmethod
    def from_settings(cls, settings, store=None):
        from shared.media import open_media_store

        store = store or open_media_store(settings, pool_size=settings.gateway_threads)
        return cls(store, Path(settings.media_root) / CACHE_DIR)

    def source_info(self, relative_path: str) -> MediaInfo:
        """The image `relative_path` names, or a 404: nothing outside the store, no hidden files or
        folders (our own cache and temporary files among them), nothing but regular files / objects."""
        try:
            info = self.store.stat(relative_path)
        except UnsafePath:
            raise _not_found() from None
        if info is None or any(part.startswith(".") for part in info.relative_path.split("/")):
            raise _not_found()
        return info

    def cached_path(self, size: int, info: MediaInfo) -> Path:
        return self.cache_root / str(size) / (info.relative_path + SUFFIX)

    def source(self, info: MediaInfo):
        """What Pillow opens: the file itself in the local store, else the object's bytes."""
        if isinstance(self.store, LocalMediaStore):
            return self.store.resolve(info.relative_path)
        if info.size > MAX_SOURCE_BYTES:
            raise _not_found("not an image")
        try:
            return io.BytesIO(self.store.read_bytes(info.relative_path))
        except MediaNotFound:
            raise _not_found() from None

    def on_get(self, req, resp, size, relative_path):
        cached = self.thumbnail(size, relative_path)
        try:
            handle = open(cached, "rb")
        except FileNotFoundError:  # removed between the check and here (someone cleared the cache)
            raise _not_found() from None
        self._headers(resp)
        resp.set_stream(handle, os.fstat(handle.fileno()).st_size)

    def on_head(self, req, resp, size, relative_path):
        cached = self.thumbnail(size, relative_path)
        try:
            length = cached.stat().st_size
        except FileNotFoundError:
            raise _not_found() from None
        self._headers(resp)
        resp.content_length = length

    def thumbnail(self, size: int, relative_path: str) -> Path:
        """The cached thumbnail's path, made first if needed; a 404 for anything that has none."""
        if size not in THUMB_SIZES:
            raise _not_found(f"no thumbnail size {size}; sizes: {', '.join(map(str, THUMB_SIZES))}")
        info = self.source_info(relative_path)
        cached = self.cached_path(size, info)
        if not self._fresh(cached, info):
            with _lock_for(str(cached)):
                if not self._fresh(cached, info):
                    try:
                        data = make_thumbnail(self.source(info), size)
                    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError):
                        log.info("thumbnail of %s: not a readable image", info.relative_path)
                        raise _not_found("not an image") from None
                    write_atomically(cached, data, info.mtime_ns)
        return cached

    @staticmethod
    def _headers(resp):
        resp.content_type = CONTENT_TYPE
        resp.cache_control = [CACHE_CONTROL]

    @staticmethod
    def _fresh(cached: Path, info: MediaInfo) -> bool:
        """A cached thumbnail at least as new as its source (a rerun job rewrites its own image)."""
        try:
            return cached.stat().st_mtime_ns >= info.mtime_ns
        except FileNotFoundError:
            return False
