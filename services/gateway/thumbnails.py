"""Thumbnails of media files: GET /thumbs/<size>/<relative_path>, public like the images themselves.

Each (size, image) is made once with Pillow (fit within size×size, aspect ratio kept, never enlarged),
written atomically to <media_root>/.thumbs/<size>/<relative_path>.webp and served from there ever after
without touching Pillow. Generated images never change once written, so browsers may keep a thumbnail
for a year. Concurrent first requests each write their own temporary file and rename it into place:
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

from shared.media import LocalMediaStore, UnsafePath
from services.gateway.errors import ApiError
from services.gateway.web.render import THUMB_SIZES

log = logging.getLogger(__name__)

CACHE_DIR = ".thumbs"
SUFFIX = ".webp"
CONTENT_TYPE = "image/webp"
QUALITY = 80
CACHE_CONTROL = "public, max-age=31536000, immutable"

# Requests for the same thumbnail in one process wait for the first instead of all decoding the source
# (other processes may still race; the atomic rename makes that harmless, merely wasted work).
_LOCKS = [threading.Lock() for _ in range(64)]


def _lock_for(key: str) -> threading.Lock:
    return _LOCKS[zlib.crc32(key.encode()) % len(_LOCKS)]


def _not_found(message="no such image"):
    return ApiError(falcon.HTTP_404, message)


def make_thumbnail(source: Path, size: int) -> bytes:
    """The WebP bytes of `source` scaled to fit within size×size (smaller images keep their size)."""
    with Image.open(source) as image:
        image.draft("RGB", (size, size))  # JPEG sources decode at a reduced scale: much faster
        image = ImageOps.exif_transpose(image)
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
        has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
        image = image.convert("RGBA" if has_alpha else "RGB")
        out = io.BytesIO()
        image.save(out, "WEBP", quality=QUALITY, method=4)
        return out.getvalue()


def write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=SUFFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ThumbnailResource:
    def __init__(self, media_root):
        self.store = LocalMediaStore(media_root)
        self.cache_root = self.store.root / CACHE_DIR

    def source_path(self, relative_path: str) -> Path:
        """The image file `relative_path` names, or a 404: nothing outside the media root, no hidden
        files or folders (our own cache and temporary files among them), nothing but regular files."""
        try:
            source = self.store.resolve(relative_path)
        except UnsafePath:
            raise _not_found() from None
        inside = source.relative_to(self.store.root)
        if any(part.startswith(".") for part in inside.parts) or not source.is_file():
            raise _not_found()
        return source

    def cached_path(self, size: int, source: Path) -> Path:
        relative = source.relative_to(self.store.root).as_posix()
        return self.cache_root / str(size) / (relative + SUFFIX)

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
        source = self.source_path(relative_path)
        cached = self.cached_path(size, source)
        if not self._fresh(cached, source):
            with _lock_for(str(cached)):
                if not self._fresh(cached, source):
                    try:
                        data = make_thumbnail(source, size)
                    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError):
                        log.info("thumbnail of %s: not a readable image", source)
                        raise _not_found("not an image") from None
                    write_atomically(cached, data)
        return cached

    @staticmethod
    def _headers(resp):
        resp.content_type = CONTENT_TYPE
        resp.cache_control = [CACHE_CONTROL]

    @staticmethod
    def _fresh(cached: Path, source: Path) -> bool:
        """A cached thumbnail at least as new as its source (a rerun job rewrites its own image)."""
        try:
            return cached.stat().st_mtime_ns >= source.stat().st_mtime_ns
        except FileNotFoundError:
            return False
