"""The media store: where generated PNGs live, addressed by a path relative to the media root.

The gateway serves the same root under /static/uploads, so `relative_path` is also the URL tail.
"""
from __future__ import annotations

import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from nameko.extensions import DependencyProvider

from shared.config import from_nameko
from shared.schemas import SLUG_RE

URL_PREFIX = "/static/uploads"


class UnsafePath(ValueError):
    pass


class LocalMediaStore:
    def __init__(self, root):
        self.root = Path(root).resolve()

    def resolve(self, relative_path: str) -> Path:
        """The absolute path for `relative_path`, refusing anything that would leave the root."""
        if not relative_path or relative_path.startswith("/") or "\x00" in relative_path:
            raise UnsafePath(relative_path)
        path = (self.root / relative_path).resolve()
        if self.root not in path.parents:
            raise UnsafePath(relative_path)
        return path

    def save(self, relative_path: str, data: bytes) -> Path:
        """Write atomically: a reader never sees half a PNG, and a rerun of the same job replaces it."""
        path = self.resolve(relative_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".png")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def exists(self, relative_path: str) -> bool:
        return self.resolve(relative_path).is_file()


def image_relative_path(preset_slug: str, job_id: str, created_at: float) -> str:
    """presets/<slug>/gen_<unix time>_<job id>.png: derived from the job alone, so it is unique per job
    (also for 20 jobs made in one second) and a redelivered job overwrites its own file, never adds one."""
    if not SLUG_RE.match(preset_slug):
        raise UnsafePath(preset_slug)
    stamp = int(datetime.fromtimestamp(created_at, tz=timezone.utc).timestamp())
    return f"presets/{preset_slug}/gen_{stamp}_{job_id.replace('-', '')}.png"


def image_url(relative_path: str) -> str:
    return f"{URL_PREFIX}/{relative_path}"


class MediaStore(DependencyProvider):
    def setup(self):
        self.store = LocalMediaStore(from_nameko(self.container.config).media_root)

    def get_dependency(self, worker_ctx):
        return self.store
