"""ComfyUI's side of a job, part 2: talking to the server. One HTTP call, one /history or /queue look, the
prompt's websocket, and the short, readable causes ("Connection refused") a user reads instead of
urllib3's nested reprs. `Transport` is mixed into the prompt's run (comfyui.py), which owns its
`deadline`, `http` session, `ws` and `job`."""
from __future__ import annotations

import json
import logging
import os
import re
import time
from urllib.parse import quote

import requests
import websocket

from services.generator.backends.base import BackendError

CONNECT_TIMEOUT = 5.0       # seconds to open one TCP connection
READ_TIMEOUT = 30.0         # seconds to wait for one HTTP answer
PROBE_TIMEOUT = 5.0         # health() and checkpoints(): quick, no retries
WS_CLOSE = websocket.ABNF.OPCODE_CLOSE
WS_TEXT = websocket.ABNF.OPCODE_TEXT

log = logging.getLogger("services.generator.backends.comfyui")


class Transport:
    def _request(self, method, path, timeout=READ_TIMEOUT, **kwargs) -> requests.Response:
        """One HTTP call; _Unreachable when ComfyUI does not answer, else the response (any status)."""
        remaining = max(0.5, self.deadline - time.monotonic())
        try:
            response = self.http.request(method, self.url + path, timeout=(CONNECT_TIMEOUT, min(timeout, remaining)),
                                         **kwargs)
        except requests.ConnectionError as exc:
            raise _Unreachable(_reason(exc)) from None
        except requests.Timeout as exc:
            raise BackendError(f"ComfyUI at {self.url} did not answer {method} {path} in time "
                               f"({_reason(exc)})") from None
        if response.status_code in (502, 503, 504):
            raise _Unreachable(f"HTTP {response.status_code}")
        self.last_contact = time.monotonic()
        return response

    def _history(self) -> dict | None:
        """Our history entry, or None while there is none. ComfyUI going away mid-job is tolerated for
        GAZE_COMFYUI_RETRY_SECONDS since it last answered."""
        try:
            response = self._request("GET", f"/history/{quote(self.prompt_id, safe='')}")
        except _Unreachable as exc:
            if time.monotonic() - self.last_contact > self.backend.retry_seconds:
                raise BackendError(f"ComfyUI at {self.url} became unreachable during the job: {exc}") from None
            return None
        if response.status_code != 200:
            return None
        self.job.alive()    # ComfyUI answered about our prompt
        try:
            entry = response.json().get(self.prompt_id)
        except (ValueError, AttributeError):
            return None
        return entry if isinstance(entry, dict) else None

    def _queue(self) -> tuple[set, set]:
        response = self._request("GET", "/queue", timeout=PROBE_TIMEOUT)
        response.raise_for_status()
        return _queue_ids(response.json())

    def _open_ws(self):
        try:
            # no Origin header: ComfyUI refuses requests whose Origin differs from the Host (behind a proxy)
            self.ws = websocket.create_connection(f"{self.backend.ws_url}?clientId={self.client_id}",
                                                  timeout=CONNECT_TIMEOUT, suppress_origin=True)
        except Exception as exc:  # websocket-client raises OSError, WebSocket*Exception, ...
            self.ws = None
            log.info("no websocket to %s (%s); following the prompt through /history", self.url, _reason(exc))
        else:
            self.last_contact = time.monotonic()

    def _receive(self, timeout) -> dict | None:
        """One JSON event from the websocket; None on a quiet interval, a preview, or a dropped socket."""
        try:
            self.ws.settimeout(max(0.01, timeout))
            opcode, data = self.ws.recv_data()
        except websocket.WebSocketTimeoutException:
            return None
        except Exception as exc:  # closed, reset, protocol error: fall back to /history
            log.warning("prompt %s: websocket dropped (%s); polling /history", self.prompt_id, _reason(exc))
            self._close_ws()
            return None
        if opcode == WS_CLOSE:
            log.warning("prompt %s: ComfyUI closed the websocket; polling /history", self.prompt_id)
            self._close_ws()
            return None
        self.last_contact = time.monotonic()
        if opcode != WS_TEXT:
            return None     # binary frames are previews
        try:
            event = json.loads(data)
        except ValueError:
            return None
        return event if isinstance(event, dict) else None

    def _close_ws(self):
        if self.ws is not None:
            try:
                self.ws.close(timeout=0.2)
            except Exception:
                pass
            self.ws = None


def _queue_ids(data) -> tuple[set, set]:
    """(running, pending) prompt ids of a /queue answer."""
    def ids(items):
        return {str(item[1]) for item in items or [] if isinstance(item, list) and len(item) > 1}

    return ids(data.get("queue_running")), ids(data.get("queue_pending"))


def _describe_devices(devices) -> str:
    described = []
    for device in devices:
        if not isinstance(device, dict):
            continue
        name = device.get("name") or device.get("type") or "?"
        total, free = device.get("vram_total"), device.get("vram_free")
        if isinstance(total, (int, float)) and total > 0 and isinstance(free, (int, float)):
            name += f" ({free / 2**30:.1f}/{total / 2**30:.1f} GiB free)"
        described.append(name)
    return ", ".join(described) or "none reported"


def _combo_options(spec):
    """The choices of a combo input, in the old ([choices], {...}) and the newer ("COMBO", {options}) form."""
    if not isinstance(spec, list) or not spec:
        return None
    if isinstance(spec[0], list):
        return spec[0]
    if spec[0] == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
        options = spec[1].get("options")
        return options if isinstance(options, list) else None
    return None


_ERRNO = re.compile(r"\[Errno (-?\d+)\] ([^'\")\]]+)")


def _reason(exc) -> str:
    """A short cause ("Connection refused") instead of urllib3's nested repr."""
    text = str(exc)
    found = _ERRNO.search(text)
    if found:
        code = int(found.group(1))
        # eventlet's green sockets say "ECONNREFUSED" where the OS says "Connection refused"
        return os.strerror(code) if code > 0 else found.group(2).strip()
    if isinstance(exc, requests.ConnectTimeout):
        return "connection timed out"
    if isinstance(exc, requests.ReadTimeout):
        return "no answer in time"
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code}"
    if "Name or service not known" in text or "nodename nor servname" in text:
        return "unknown host"
    return _shorten(text or type(exc).__name__, 200)


def _shorten(text, limit=300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


class _Unreachable(Exception):
    """ComfyUI did not answer (connection refused, reset, proxy 502/503/504)."""
