"""ComfyUI's side of a job, part 2: talking to the server. A `Connection` is one job's link to it: the HTTP
calls, the websocket of the job's own client id, a /history or /queue look, and the cancel of the job's
prompt (only that one). `remove_prompts` does the same cancel for the prompts a killed worker left, from
the replica's process. What a failure is called is comfyui_messages.py's business."""
from __future__ import annotations

import json
import logging
import time
from urllib.parse import quote, urlsplit, urlunsplit

import requests
import websocket

from services.generator.backends.base import BackendError
from services.generator.backends.comfyui_messages import (
    ALREADY_GONE, INTERRUPTED, NOT_CANCELLED, REMOVED_FROM_QUEUE, no_answer_in_time, orphans_not_removed,
    orphans_removed, reason, unreachable_during_job,
)

CONNECT_TIMEOUT = 5.0       # seconds to open one TCP connection
READ_TIMEOUT = 30.0         # seconds to wait for one HTTP answer
PROBE_TIMEOUT = 5.0         # health(), checkpoints() and cancels: quick, no retries
MAX_WS_RECONNECTS = 5       # a job reopens a dropped websocket this often, then follows /history only
WS_CLOSE = websocket.ABNF.OPCODE_CLOSE
WS_TEXT = websocket.ABNF.OPCODE_TEXT

log = logging.getLogger("services.generator.backends.comfyui")


class Unreachable(Exception):
    """ComfyUI did not answer (connection refused, reset, proxy 502/503/504)."""


def websocket_url(url: str) -> str:
    """http://host:8188/base → ws://host:8188/base/ws (wss:// behind https://)."""
    parts = urlsplit(url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, parts.path + "/ws", "", ""))


def queue_ids(data) -> tuple[set, set]:
    """(running, pending) prompt ids of a /queue answer."""
    def ids(items):
        return {str(item[1]) for item in items or [] if isinstance(item, list) and len(item) > 1}

    return ids(data.get("queue_running")), ids(data.get("queue_pending"))


class Connection:
    """One job's link to the ComfyUI server at `url`. No call waits past the job's deadline (`clock.deadline`,
    time.monotonic() seconds, infinite until ComfyUI starts the prompt), yet each gets half a second."""

    def __init__(self, url: str, client_id: str, *, retry_seconds: float, clock):
        self.url = url
        self.client_id = client_id
        self.retry_seconds = retry_seconds     # how long ComfyUI may stay silent mid-job
        self.clock = clock
        self.http = requests.Session()
        self.ws = None
        self.ws_reconnects = 0
        self.last_contact = time.monotonic()    # when ComfyUI last answered anything

    def request(self, method, path, timeout=READ_TIMEOUT, **kwargs) -> requests.Response:
        """One HTTP call; Unreachable when ComfyUI does not answer, else the response (any status)."""
        remaining = max(0.5, self.clock.deadline - time.monotonic())
        try:
            response = self.http.request(method, self.url + path, timeout=(CONNECT_TIMEOUT, min(timeout, remaining)),
                                         **kwargs)
        except requests.ConnectionError as exc:
            raise Unreachable(reason(exc)) from None
        except requests.Timeout as exc:
            raise BackendError(*no_answer_in_time(self.url, method, path, reason(exc))) from None
        if response.status_code in (502, 503, 504):
            raise Unreachable(f"HTTP {response.status_code}")
        self.last_contact = time.monotonic()
        return response

    def history(self, prompt_id) -> tuple[bool, dict | None]:
        """(answered, entry): whether ComfyUI answered about the prompt, and its history entry if it has one
        yet. ComfyUI going away mid-job is tolerated for `retry_seconds` since it last answered."""
        try:
            response = self.request("GET", f"/history/{quote(prompt_id, safe='')}")
        except Unreachable as exc:
            if time.monotonic() - self.last_contact > self.retry_seconds:
                raise BackendError(*unreachable_during_job(self.url, exc)) from None
            return False, None
        if response.status_code != 200:
            return False, None
        try:
            entry = response.json().get(prompt_id)
        except (ValueError, AttributeError):
            return True, None
        return True, entry if isinstance(entry, dict) else None

    def queue(self) -> tuple[set, set]:
        """(running, pending) prompt ids."""
        response = self.request("GET", "/queue", timeout=PROBE_TIMEOUT)
        response.raise_for_status()
        return queue_ids(response.json())

    def cancel(self, prompt_id) -> str:
        """Stop the prompt, and only it: delete it while it waits, interrupt it while it runs. Says what
        became of it (comfyui_messages' public words; why a cancel failed is logged here); never raises for
        a server that does not answer."""
        try:
            running, pending = self.queue()
            if prompt_id in pending:
                self.request("POST", "/queue", json={"delete": [prompt_id]}, timeout=PROBE_TIMEOUT)
                return REMOVED_FROM_QUEUE
            if prompt_id in running:
                self.request("POST", "/interrupt", json={"prompt_id": prompt_id}, timeout=PROBE_TIMEOUT)
                return INTERRUPTED
            return ALREADY_GONE
        except (Unreachable, requests.RequestException, ValueError) as exc:
            log.warning("prompt %s: could not cancel it on ComfyUI at %s (%s)", prompt_id, self.url, reason(exc))
            return NOT_CANCELLED

    # ---- the websocket: ComfyUI sends a prompt's progress only to the socket of the prompt's client id

    def open_ws(self):
        """Open the job's websocket unless it is open; without one the job follows /history instead."""
        if self.ws is not None:
            return
        try:
            # no Origin header: ComfyUI refuses requests whose Origin differs from the Host (behind a proxy)
            self.ws = websocket.create_connection(f"{websocket_url(self.url)}?clientId={self.client_id}",
                                                  timeout=CONNECT_TIMEOUT, suppress_origin=True)
        except Exception as exc:  # websocket-client raises OSError, WebSocket*Exception, ...
            self.ws = None
            log.info("no websocket to %s (%s); following the prompt through /history", self.url, reason(exc))
        else:
            self.last_contact = time.monotonic()

    def reopen_ws(self):
        """After a drop: open the websocket again, MAX_WS_RECONNECTS times in a job at most."""
        if self.ws is None and self.ws_reconnects < MAX_WS_RECONNECTS:
            self.ws_reconnects += 1
            self.open_ws()

    def receive(self, timeout, prompt_id) -> dict | None:
        """One JSON event from the websocket; None on a quiet interval, a preview, or a dropped socket
        (`prompt_id`, the prompt the job follows, is for the log)."""
        try:
            self.ws.settimeout(max(0.01, timeout))
            opcode, data = self.ws.recv_data()
        except websocket.WebSocketTimeoutException:
            return None
        except Exception as exc:  # closed, reset, protocol error: fall back to /history
            log.warning("prompt %s: websocket dropped (%s); polling /history", prompt_id, reason(exc))
            self.close_ws()
            return None
        if opcode == WS_CLOSE:
            log.warning("prompt %s: ComfyUI closed the websocket; polling /history", prompt_id)
            self.close_ws()
            return None
        self.last_contact = time.monotonic()
        if opcode != WS_TEXT:
            return None     # binary frames are previews
        try:
            event = json.loads(data)
        except ValueError:
            return None
        return event if isinstance(event, dict) else None

    def close_ws(self):
        if self.ws is not None:
            try:
                self.ws.close(timeout=0.2)
            except Exception:
                pass
            self.ws = None

    def close(self):
        self.close_ws()
        self.http.close()


def remove_prompts(url: str, prompt_ids) -> str:
    """Remove the prompts a killed worker left on ComfyUI: delete the queued ones, interrupt the running one
    (by its own prompt_id only). Runs in the replica's eventlet process: plain `requests` calls."""
    wanted = set(prompt_ids)
    try:
        response = requests.get(f"{url}/queue", timeout=(CONNECT_TIMEOUT, PROBE_TIMEOUT))
        response.raise_for_status()
        running, pending = queue_ids(response.json())
        queued = sorted(wanted & pending)
        if queued:
            requests.post(f"{url}/queue", json={"delete": queued},
                          timeout=(CONNECT_TIMEOUT, PROBE_TIMEOUT)).raise_for_status()
        for prompt_id in sorted(wanted & running):
            requests.post(f"{url}/interrupt", json={"prompt_id": prompt_id},
                          timeout=(CONNECT_TIMEOUT, PROBE_TIMEOUT)).raise_for_status()
    except (requests.RequestException, ValueError, AttributeError) as exc:
        return orphans_not_removed(reason(exc))
    return orphans_removed(len(queued), len(wanted & running), len(wanted - pending - running))
