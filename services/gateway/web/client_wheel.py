"""The Python client's wheel, served by the gateway for the two-line quick start (README, Settings page):

    pip install <GAZE_PUBLIC_URL>/client/gaze_client-<version>-py3-none-any.whl
    GAZE_URL=... GAZE_API_KEY=... gaze-client generate example_01 --wait --out images

GET /client lists it (an HTML page whose link also serves `pip install --find-links <url>/client gaze-client`),
GET /client/<wheel> serves it; both public, like the images: the package holds no secret.

The wheel is built from the checkout's clients/python on the first request that needs it, by pip in a
subprocess (`pip wheel --no-deps --no-build-isolation --no-index` with the gateway's own setuptools, from a
copy of the sources so the checkout stays clean; without setuptools, pip fetches it as `pip install` does), into <GAZE_RUN_DIR>/client-wheel/<hash of the sources>/, and then served from there
by every worker and every later start until the sources change. One build at a time per machine (a file
lock), so concurrent first requests wait for the one build. An installation without clients/python (a
deployment image) answers 404.
"""
from __future__ import annotations

import fcntl
import hashlib
import html
import importlib.util
import logging
import shutil
import subprocess
import sys
import tempfile
import threading
import tomllib
from pathlib import Path

import falcon

from services.gateway.errors import ApiError

log = logging.getLogger(__name__)

SOURCE = Path(__file__).resolve().parents[3] / "clients" / "python"
BUILD_TIMEOUT_SECONDS = 180
SKIPPED = ("build", "dist", "__pycache__", "*.egg-info", "*.pyc", ".*")


def wheel_name(source: Path = SOURCE) -> str | None:
    """The wheel's file name (from the package's pyproject.toml), or None when the client is not included."""
    pyproject = source / "pyproject.toml"
    if not pyproject.is_file():
        return None
    project = tomllib.loads(pyproject.read_text())["project"]
    return f"{project['name'].replace('-', '_')}-{project['version']}-py3-none-any.whl"


class ClientWheel:
    """The wheel of the client package at `source`, built once into `cache_root`."""

    def __init__(self, source: Path, cache_root: Path):
        self.source = source
        self.cache_root = cache_root
        self._lock = threading.Lock()   # the gateway's WSGI threads are OS threads (no eventlet in the gateway)
        self._meta = None

    def available(self) -> bool:
        return wheel_name(self.source) is not None

    def _metadata(self) -> tuple[str, str]:
        """(the wheel's file name, a hash of the sources): read once per process."""
        if self._meta is None:
            digest = hashlib.sha256()
            for path in sorted(self._sources()):
                digest.update(path.relative_to(self.source).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
            self._meta = wheel_name(self.source), digest.hexdigest()[:16]
        return self._meta

    def _sources(self):
        for path in self.source.rglob("*"):
            parts = path.relative_to(self.source).parts
            if path.is_file() and not any(Path(part).match(pattern) for part in parts for pattern in SKIPPED):
                yield path

    @property
    def name(self) -> str:
        return self._metadata()[0]

    @property
    def digest(self) -> str:
        return self._metadata()[1]

    def path(self) -> Path:
        """The built wheel (built now if it is not yet)."""
        name, digest = self._metadata()
        target = self.cache_root / digest / name
        if target.is_file():
            return target
        with self._lock:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(self.cache_root / ".build.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)   # another worker or gateway may be building it
                if not target.is_file():
                    self._build(target)
        return target

    def _build(self, target: Path) -> None:
        with tempfile.TemporaryDirectory(prefix="gaze-client-build-") as scratch:
            copy = Path(scratch) / "src"
            shutil.copytree(self.source, copy, ignore=shutil.ignore_patterns(*SKIPPED))
            out = Path(scratch) / "out"
            # offline with this interpreter's setuptools (the package's build backend) when it has one; else
            # pip fetches the backend into an isolated build environment, as `pip install` would
            offline = ["--no-build-isolation", "--no-index"] if importlib.util.find_spec("setuptools") else []
            done = subprocess.run(
                [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--disable-pip-version-check",
                 *offline, str(copy), "--wheel-dir", str(out)],
                capture_output=True, text=True, timeout=BUILD_TIMEOUT_SECONDS)
            built = out / target.name
            if done.returncode != 0 or not built.is_file():
                raise RuntimeError(f"pip wheel exited {done.returncode}: {done.stderr[-2000:]}")
            partial = target.with_name(target.name + ".part")
            shutil.copyfile(built, partial)
            partial.replace(target)   # atomic: a reader sees the whole wheel or none
        log.info("built the client wheel %s", target)


def _wheel_or_404(wheel: ClientWheel) -> ClientWheel:
    if not wheel.available():
        raise ApiError(falcon.HTTP_404, "the Python client is not included in this installation")
    return wheel


def _built(wheel: ClientWheel) -> Path:
    try:
        return wheel.path()
    except (OSError, RuntimeError, subprocess.SubprocessError):
        log.exception("the client wheel could not be built")
        raise ApiError(falcon.HTTP_503, "the Python client cannot be built here now; try again later",
                       headers={"Retry-After": "60"}) from None


class ClientIndexResource:
    """GET /client: the wheel's link and the quick start."""

    def __init__(self, wheel: ClientWheel, public_url: str):
        self.wheel = wheel
        self.public_url = public_url.rstrip("/")

    def on_get(self, req, resp):
        name = html.escape(_wheel_or_404(self.wheel).name)
        resp.content_type = falcon.MEDIA_HTML
        resp.text = (
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>gaze-client</title></head><body>\n"
            f"<h1>gaze-client</h1>\n<p><a href=\"/client/{name}\">{name}</a></p>\n"
            f"<pre>pip install {html.escape(self.public_url)}/client/{name}\n"
            "GAZE_URL=... GAZE_API_KEY=... gaze-client generate example_01 --wait --out images</pre>\n"
            "</body></html>\n")


class ClientWheelResource:
    """GET /client/<wheel file name>: the wheel itself."""

    def __init__(self, wheel: ClientWheel):
        self.wheel = wheel

    def on_get(self, req, resp, name):
        wheel = _wheel_or_404(self.wheel)
        if name != wheel.name:
            raise ApiError(falcon.HTTP_404, f"no such file; the client is {wheel.name}", "name")
        path = _built(wheel)
        resp.content_type = "application/zip"
        resp.downloadable_as = wheel.name
        resp.etag = wheel.digest
        resp.cache_control = ["public", "max-age=300"]
        resp.content_length = path.stat().st_size
        resp.stream = open(path, "rb")


def mount(app: falcon.App, settings) -> ClientWheel:
    wheel = ClientWheel(Path(settings.client_source) if settings.client_source else SOURCE,
                        Path(settings.run_dir) / "client-wheel")
    app.add_route("/client", ClientIndexResource(wheel, settings.public_url))
    app.add_route("/client/{name}", ClientWheelResource(wheel))
    return wheel
