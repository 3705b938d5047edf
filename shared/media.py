"""The media store: where generated PNGs live, addressed by a path relative to the store.

Two stores with one interface, chosen by GAZE_MEDIA_STORE (`open_media_store`):
- `local` (default): a directory (GAZE_MEDIA_ROOT); the gateway serves it with Falcon's static route.
- `s3`: a bucket of any S3-compatible object store (AWS S3, MinIO, ...), keys `<GAZE_S3_PREFIX>/<path>`;
  the gateway streams objects from it (services/gateway/api/media.py). Generators on other machines
  write there and the gateway reads from there, with no shared filesystem.

Either way `relative_path` is also the URL tail under /static/uploads, and both stores apply the same
path rules (`safe_relative_path`): nothing absolute, no NUL or other control characters, no backslash,
nothing that `..` would take out of the store.
"""
from __future__ import annotations

import functools
import os
import posixpath
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from nameko.extensions import DependencyProvider

from shared.config import from_nameko
from shared.schemas import SLUG_RE

URL_PREFIX = "/static/uploads"
STORES = ("local", "s3")
MAX_S3_KEY_BYTES = 1024
# what the gateway's Falcon static route would say for these suffixes (the S3 route says the same)
CONTENT_TYPES = {".png": "image/png", ".webp": "image/webp", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
                 ".gif": "image/gif"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class UnsafePath(ValueError):
    pass


class MediaNotFound(LookupError):
    pass


class MediaStoreError(RuntimeError):
    """The store could not be reached or refused us (credentials, permissions, a missing bucket)."""


def safe_relative_path(relative_path) -> str:
    """`relative_path` normalised ("a/./b" → "a/b", "a/../b" → "b"), or UnsafePath for anything that is
    empty, absolute, holds a control character or a backslash, or would leave the store."""
    if (not isinstance(relative_path, str) or not relative_path or relative_path.startswith("/")
            or "\\" in relative_path or _CONTROL.search(relative_path)):
        raise UnsafePath(relative_path)
    normal = posixpath.normpath(relative_path)
    if normal in (".", "..") or normal.startswith("../") or normal.startswith("/"):
        raise UnsafePath(relative_path)
    return normal


def content_type_for(relative_path: str) -> str:
    return CONTENT_TYPES.get(posixpath.splitext(relative_path)[1].lower(), "application/octet-stream")


@dataclass(frozen=True)
class MediaInfo:
    relative_path: str   # canonical: normalised (and, in the local store, with symlinks resolved)
    size: int
    mtime_ns: int
    etag: str            # opaque, without quotes
    content_type: str

    @property
    def last_modified(self) -> datetime:
        """Whole seconds, as an HTTP date carries them."""
        return datetime.fromtimestamp(self.mtime_ns // 1_000_000_000, tz=timezone.utc)


class LocalMediaStore:
    kind = "local"

    def __init__(self, root):
        self.root = Path(root).resolve()

    def resolve(self, relative_path: str) -> Path:
        """The absolute path for `relative_path`, refusing anything that would leave the root."""
        path = (self.root / safe_relative_path(relative_path)).resolve()
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

    def delete(self, relative_path: str) -> None:
        """Remove the file; nothing to remove is not an error."""
        self.resolve(relative_path).unlink(missing_ok=True)

    def stat(self, relative_path: str) -> MediaInfo | None:
        """Size, modification time and ETag of a regular file, None when there is none."""
        path = self.resolve(relative_path)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not path.is_file():
            return None
        return MediaInfo(path.relative_to(self.root).as_posix(), st.st_size, st.st_mtime_ns,
                         f"{int(st.st_mtime):x}-{st.st_size:x}", content_type_for(path.name))

    def read_bytes(self, relative_path: str) -> bytes:
        path = self.resolve(relative_path)
        try:
            return path.read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise MediaNotFound(relative_path) from None


class S3MediaStore:
    """Objects `<prefix>/<relative path>` in one bucket of an S3-compatible store.

    PutObject is atomic (a reader sees the old object or the new one, never half of one) and a rerun of
    the same job overwrites its own key, as in the local store. The bucket must exist: `gaze init`
    (so `gaze up` and the compose `migrate` step) creates it when missing (`ensure_bucket`); services
    never create it. One boto3 client per process and connection settings (boto3 clients are
    thread-safe), so the gateway's static route and thumbnails share their connection pool."""
    kind = "s3"

    def __init__(self, bucket: str, prefix: str = "", *, client=None, endpoint_url: str = "", region: str = "",
                 access_key_id: str = "", secret_access_key: str = "", max_pool_connections: int = 10):
        if not bucket:
            raise ValueError("the S3 media store needs a bucket (GAZE_S3_BUCKET)")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.region = region
        self.client = client or s3_client(endpoint_url, region, access_key_id, secret_access_key,
                                          max_pool_connections)

    def key(self, relative_path: str) -> str:
        normal = safe_relative_path(relative_path)
        key = f"{self.prefix}/{normal}" if self.prefix else normal
        try:
            too_long = len(key.encode("utf-8")) > MAX_S3_KEY_BYTES
        except UnicodeEncodeError:  # a lone surrogate: not a valid key
            raise UnsafePath(relative_path) from None
        if too_long:
            raise UnsafePath(relative_path)
        return key

    def relative(self, key: str) -> str:
        return key[len(self.prefix) + 1:] if self.prefix else key

    def save(self, relative_path: str, data: bytes) -> str:
        key = self.key(relative_path)
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data,
                                   ContentType=content_type_for(key), ContentLength=len(data))
        except Exception as exc:
            raise _store_error(exc, f"could not write s3://{self.bucket}/{key}") from exc
        return key

    def exists(self, relative_path: str) -> bool:
        return self.stat(relative_path) is not None

    def delete(self, relative_path: str) -> None:
        """Remove the object (S3 answers success for a key that is not there)."""
        key = self.key(relative_path)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            raise _store_error(exc, f"could not delete s3://{self.bucket}/{key}") from exc

    def stat(self, relative_path: str) -> MediaInfo | None:
        key = self.key(relative_path)
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if _is_not_found(exc):
                return None
            raise _store_error(exc, f"could not read s3://{self.bucket}/{key}") from exc
        return self._info(key, head)

    def open(self, relative_path: str):
        """(MediaInfo, body): the body is botocore's StreamingBody (read(n), iter_chunks(), close());
        MediaNotFound when there is no such object."""
        key = self.key(relative_path)
        try:
            got = self.client.get_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if _is_not_found(exc):
                raise MediaNotFound(relative_path) from None
            raise _store_error(exc, f"could not read s3://{self.bucket}/{key}") from exc
        return self._info(key, got), got["Body"]

    def read_bytes(self, relative_path: str) -> bytes:
        _, body = self.open(relative_path)
        try:
            return body.read()
        except Exception as exc:
            raise _store_error(exc, f"could not read s3://{self.bucket}/{self.key(relative_path)}") from exc
        finally:
            body.close()

    def ensure_bucket(self) -> bool:
        """Create the bucket when it does not exist; True when it was created."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return False
        except Exception as exc:
            if not _is_not_found(exc):
                raise _store_error(exc, f"could not check bucket {self.bucket!r}") from exc
        params = {"Bucket": self.bucket}
        region = self.region or self.client.meta.region_name
        if region and region != "us-east-1":
            params["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self.client.create_bucket(**params)
        except Exception as exc:
            if _error_code(exc) in ("BucketAlreadyOwnedByYou",):
                return False
            raise _store_error(exc, f"could not create bucket {self.bucket!r}") from exc
        return True

    def _info(self, key: str, response: dict) -> MediaInfo:
        modified = response.get("LastModified") or datetime.now(timezone.utc)
        return MediaInfo(self.relative(key), int(response.get("ContentLength", 0)),
                         int(modified.timestamp()) * 1_000_000_000,
                         (response.get("ETag") or "").strip('"'), content_type_for(key))

    def __repr__(self):
        return f"S3MediaStore(s3://{self.bucket}/{self.prefix}, endpoint={self.endpoint_url or 'AWS'})"


def _error_code(exc) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def _is_not_found(exc) -> bool:
    """No such key (or, from head_bucket, no such bucket). A missing bucket on a read is a MediaStoreError:
    the store is misconfigured, not the image missing."""
    return _error_code(exc) in ("404", "NoSuchKey", "NotFound")


def _store_error(exc, message) -> MediaStoreError:
    detail = _error_code(exc) or type(exc).__name__
    return MediaStoreError(f"{message}: {detail}: {exc}")


@functools.lru_cache(maxsize=8)
def s3_client(endpoint_url: str = "", region: str = "", access_key_id: str = "", secret_access_key: str = "",
              max_pool_connections: int = 10):
    """A boto3 S3 client, one per process and settings. Empty credentials: boto3's own chain
    (environment, ~/.aws, instance role). A custom endpoint (MinIO and the like) gets path-style
    addressing, and checksums only where the API requires them, which S3-compatible servers accept."""
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=5, read_timeout=30, retries={"max_attempts": 3, "mode": "standard"},
        max_pool_connections=max_pool_connections,
        s3={"addressing_style": "path"} if endpoint_url else {},
        request_checksum_calculation="when_required", response_checksum_validation="when_required",
    )
    credentials = ({"aws_access_key_id": access_key_id, "aws_secret_access_key": secret_access_key}
                   if access_key_id else {})
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url or None, region_name=region or None,
                                          config=config, **credentials)


def open_media_store(settings, pool_size: int | None = None):
    """The store `settings.media_store` names: LocalMediaStore(media_root) or S3MediaStore."""
    if settings.media_store == "s3":
        return S3MediaStore(settings.s3_bucket, settings.s3_prefix, endpoint_url=settings.s3_endpoint_url,
                            region=settings.s3_region, access_key_id=settings.s3_access_key_id,
                            secret_access_key=settings.s3_secret_access_key,
                            max_pool_connections=max(10, pool_size or 0))
    if settings.media_store != "local":
        raise ValueError(f"GAZE_MEDIA_STORE must be one of {', '.join(STORES)}, not {settings.media_store!r}")
    return LocalMediaStore(settings.media_root)


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
        self.store = open_media_store(from_nameko(self.container.config))

    def get_dependency(self, worker_ctx):
        return self.store
