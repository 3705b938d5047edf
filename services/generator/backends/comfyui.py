"""The ComfyUI backend: each generator replica drives one ComfyUI server over its HTTP and websocket API.

Three parts: the workflow template and its mapping (comfyui_workflow.py), talking to the server
(comfyui_transport.py), and, here, the backend and one prompt's lifecycle (`_Run`: submit, follow,
settle, fetch the picture, cancel).

A job fills a workflow template in ComfyUI's API format (what "Save (API format)" exports) with the spec's
values, at the node inputs its mapping file names (`<template>.mapping.json` next to `<template>.json`),
submits it with POST /prompt under a client id of its own, follows it on /ws?clientId=…, reads the
result from /history/<prompt_id> and fetches the picture with /view. The PNG is re-encoded with GAZE's
text chunks (the pixels are kept).

What ComfyUI does that this code has to respect:
- progress goes only to the websocket whose clientId is the prompt's client_id, so each job opens its own;
- after an execution error no `executing {node: null}` follows, so a job ends on execution_success,
  execution_error, execution_interrupted or on what /history says — never on executing-null alone;
- execution_success is sent *before* the history entry is written: the entry is awaited briefly;
- a timed-out job cancels only its own prompt: POST /queue {"delete": [id]} while it waits,
  POST /interrupt {"prompt_id": id} while it runs, and nothing when it is no longer in the queue;
- a dropped websocket falls back to polling /history (and to /queue, to notice a prompt the server lost:
  after a ComfyUI restart the job's prompt is submitted again, up to MAX_SUBMISSIONS times).

`generate` runs in the replica's worker process (services/generator/worker.py), on a thread of its own per
job: the backend is `pipelined`, so the next job's prompt waits in ComfyUI's own queue while the current one
runs and the GPU never waits for GAZE between two prompts. A job is `started` (and its time limit counts)
from ComfyUI's execution_start for its prompt, not from its submission. Every prompt_id is reported to the
replica (JobContext.submitted) before it is sent, so a replica that kills its worker removes the prompts
itself (`remove_orphans`).
"""
from __future__ import annotations

import io
import json
import logging
import math
import random
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit, urlunsplit

import requests
from PIL import Image

from services.generator.backends.base import (
    BackendError, GeneratedImage, JobCancelled, as_context, encode_png, png_metadata,
)
from services.generator.backends.comfyui_transport import (  # noqa: F401  (the transport's names, re-exported)
    CONNECT_TIMEOUT, PROBE_TIMEOUT, Transport, _combo_options, _describe_devices, _queue_ids,
    _reason, _shorten, _Unreachable,
)
from services.generator.backends.comfyui_workflow import (  # noqa: F401  (re-exported for callers)
    DEFAULT_WORKFLOW, EXPECTED_FIELDS, MAPPABLE_FIELDS, WORKFLOWS_DIR, Workflow, mapping_path,
)

BACKEND_NAME = "comfyui"
MAX_WS_RECONNECTS = 5
MAX_BACKOFF = 5.0
MAX_SUBMISSIONS = 3         # a prompt ComfyUI lost (a restart) is submitted again, this often in all

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# the backend


@dataclass(frozen=True)
class ComfyUISettings:
    """GAZE_BACKEND=comfyui: each field read from GAZE_<FIELD NAME> (shared/config.py). Its time limit is
    every backend's, GAZE_JOB_TIMEOUT_SECONDS (the old name GAZE_COMFYUI_TIMEOUT_SECONDS still works)."""

    comfyui_url: str = "http://127.0.0.1:8188"
    comfyui_workflow: str = ""              # "" = the bundled SDXL/Illustrious txt2img template
    comfyui_retry_seconds: float = 30.0     # how long to retry an unreachable ComfyUI before failing
    comfyui_poll_seconds: float = 1.0       # /history polling interval when the websocket is down


class ComfyUIBackend:
    name = BACKEND_NAME
    pipelined = True
    settings_class = ComfyUISettings

    def __init__(self, url: str, workflow=None, *, timeout_seconds: float = 600.0, retry_seconds: float = 30.0,
                 poll_seconds: float = 1.0):
        self.url = url.rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"GAZE_COMFYUI_URL must be an http(s) URL, not {url!r}")
        self.workflow = workflow if isinstance(workflow, Workflow) else Workflow.load(workflow or DEFAULT_WORKFLOW)
        if timeout_seconds <= 0 or retry_seconds < 0 or poll_seconds <= 0:
            raise ValueError("GAZE_JOB_TIMEOUT_SECONDS and GAZE_COMFYUI_POLL_SECONDS must be positive, "
                             "GAZE_COMFYUI_RETRY_SECONDS at least 0")
        self.timeout_seconds = float(timeout_seconds)
        self.retry_seconds = float(retry_seconds)
        self.poll_seconds = max(0.01, float(poll_seconds))

    @classmethod
    def from_settings(cls, settings, comfyui: ComfyUISettings) -> "ComfyUIBackend":
        return cls(comfyui.comfyui_url, comfyui.comfyui_workflow or None,
                   timeout_seconds=settings.job_timeout_seconds,
                   retry_seconds=comfyui.comfyui_retry_seconds,
                   poll_seconds=comfyui.comfyui_poll_seconds)

    @property
    def ws_url(self) -> str:
        parts = urlsplit(self.url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return urlunsplit((scheme, parts.netloc, parts.path + "/ws", "", ""))

    def generate(self, spec, job=None) -> GeneratedImage:
        if spec.seed is None:   # the jobs service always sets one; a direct caller might not
            spec = spec.model_copy(update={"seed": random.getrandbits(50)})
        return _Run(self, spec, as_context(job)).run()

    @classmethod
    def remove_orphans(cls, comfyui: ComfyUISettings, prompt_ids) -> str:
        """Remove the prompts a killed worker left on ComfyUI: delete the queued ones, interrupt the running
        one (by its own prompt_id only). Runs in the replica's eventlet process: plain `requests` calls."""
        url = comfyui.comfyui_url.rstrip("/")
        wanted = set(prompt_ids)
        try:
            response = requests.get(f"{url}/queue", timeout=(CONNECT_TIMEOUT, PROBE_TIMEOUT))
            response.raise_for_status()
            running, pending = _queue_ids(response.json())
            queued = sorted(wanted & pending)
            if queued:
                requests.post(f"{url}/queue", json={"delete": queued},
                              timeout=(CONNECT_TIMEOUT, PROBE_TIMEOUT)).raise_for_status()
            for prompt_id in sorted(wanted & running):
                requests.post(f"{url}/interrupt", json={"prompt_id": prompt_id},
                              timeout=(CONNECT_TIMEOUT, PROBE_TIMEOUT)).raise_for_status()
        except (requests.RequestException, ValueError, AttributeError) as exc:
            return f"ComfyUI did not answer ({_reason(exc)}); they may still run there"
        return (f"{len(queued)} removed from ComfyUI's queue, {len(wanted & running)} interrupted, "
                f"{len(wanted - pending - running)} already finished")

    def checkpoints(self) -> list[str]:
        """The checkpoints installed on the ComfyUI node (the choices of the template's checkpoint input).
        Raises BackendError when ComfyUI cannot be asked."""
        class_type, input_name = self.workflow.checkpoint_input()
        try:
            response = requests.get(f"{self.url}/object_info/{quote(class_type, safe='')}",
                                    timeout=(CONNECT_TIMEOUT, PROBE_TIMEOUT))
            response.raise_for_status()
            info = response.json().get(class_type)
        except (requests.RequestException, ValueError) as exc:
            raise BackendError(f"cannot list checkpoints: ComfyUI at {self.url}: {_reason(exc)}") from None
        if not info:
            raise BackendError(f"cannot list checkpoints: ComfyUI at {self.url} has no {class_type} node")
        inputs = info.get("input") or {}
        spec = (inputs.get("required") or {}).get(input_name) or (inputs.get("optional") or {}).get(input_name)
        choices = _combo_options(spec)
        if choices is None:
            raise BackendError(f"cannot list checkpoints: {class_type}.{input_name} on ComfyUI at {self.url} "
                               f"is not a list of choices")
        return [str(choice) for choice in choices]

    def health(self) -> tuple[bool, str]:
        """(ok, detail): ComfyUI answers, and has every node class the workflow template uses."""
        try:
            response = requests.get(f"{self.url}/system_stats", timeout=(CONNECT_TIMEOUT, PROBE_TIMEOUT))
        except requests.RequestException as exc:
            return False, f"ComfyUI at {self.url} is unreachable: {_reason(exc)}"
        if response.status_code != 200:
            return False, f"ComfyUI at {self.url} answered HTTP {response.status_code} to /system_stats"
        try:
            stats = response.json()
            system = stats.get("system") or {}
            devices = stats.get("devices") or []
        except (ValueError, AttributeError):
            return False, f"ComfyUI at {self.url} sent an unreadable /system_stats"
        missing = []
        try:
            for class_type in self.workflow.class_types():
                info = requests.get(f"{self.url}/object_info/{quote(class_type, safe='')}",
                                    timeout=(CONNECT_TIMEOUT, PROBE_TIMEOUT))
                if info.status_code != 200 or class_type not in (info.json() or {}):
                    missing.append(class_type)
        except (requests.RequestException, ValueError) as exc:
            return False, f"ComfyUI at {self.url} failed while listing its nodes: {_reason(exc)}"
        version = system.get("comfyui_version") or "(version unknown)"
        where = f"ComfyUI {version} at {self.url}"
        if missing:
            return False, (f"{where} lacks node type(s) {', '.join(missing)} used by the workflow "
                           f"{self.workflow.source}")
        return True, f"{where}; devices: {_describe_devices(devices)}"






class _PromptLost(BackendError):
    """ComfyUI answers but knows nothing of our prompt any more (it restarted): submit it again."""


# --------------------------------------------------------------------------------------------------
# one job


@dataclass
class _Run(Transport):
    backend: ComfyUIBackend
    spec: object
    job: object         # the JobContext
    client_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    prompt_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def __post_init__(self):
        self.url = self.backend.url
        self.graph = self.backend.workflow.fill(self.spec)
        self.http = requests.Session()
        self.ws = None
        self.ws_reconnects = 0
        self.submitted = False      # the prompt is on the server ...
        self.settled = False        # ... and has ended there (or is known gone): nothing to cancel
        self.outputs = {}           # from `executed` events, should /history lose the entry
        self.created = time.monotonic()
        self.started = None
        self.deadline = math.inf    # until ComfyUI starts the prompt: waiting in its queue costs no limit
        self.last_contact = self.created

    # ---- the whole job

    def run(self) -> GeneratedImage:
        try:
            for submission in range(1, MAX_SUBMISSIONS + 1):
                self._submit()
                try:
                    entry = self._follow()
                except _PromptLost as exc:
                    if submission == MAX_SUBMISSIONS:
                        raise BackendError(f"{exc}; gave up after submitting it {submission} times") from None
                    log.warning("%s; submitting it again", exc)
                    self._forget_prompt()
                    continue
                return self._result(entry)
        except BaseException:
            if self.submitted and not self.settled:
                outcome = self._cancel()
                log.warning("prompt %s: abandoned, %s", self.prompt_id, outcome)
            raise
        finally:
            self._close_ws()
            self.http.close()

    # ---- submitting, with retries while ComfyUI is unreachable

    def _submit(self):
        body = {"prompt": self.graph, "client_id": self.client_id, "prompt_id": self.prompt_id}
        self.job.submitted(self.prompt_id)      # before it is sent: the answer may be lost on the way
        give_up = min(time.monotonic() + self.backend.retry_seconds, self.deadline)
        delay = min(0.25, max(0.01, self.backend.retry_seconds / 8))
        attempts = 0
        while True:
            attempts += 1
            if self.ws is None:
                self._open_ws()
            try:
                response = self._request("POST", "/prompt", json=body)
                break
            except BackendError:
                self.submitted = True   # no answer in time: it may be queued there, so cancel it on the way out
                raise
            except _Unreachable as exc:
                now = time.monotonic()
                if now + delay > give_up:
                    raise BackendError(
                        f"ComfyUI at {self.url} is unreachable: {exc} (tried {attempts} times over "
                        f"{now - self.created:.1f}s)") from None
                log.warning("ComfyUI at %s unreachable (%s); retrying in %.2fs", self.url, exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
        if response.status_code == 200:
            self.submitted = True
            try:
                answer = response.json()
            except ValueError:
                answer = {}
            answer = answer if isinstance(answer, dict) else {}
            if str(answer.get("prompt_id") or self.prompt_id) != self.prompt_id:
                self.prompt_id = str(answer["prompt_id"])
                self.job.submitted(self.prompt_id)
            if answer.get("node_errors"):
                log.warning("prompt %s: ComfyUI accepted it with node errors: %s", self.prompt_id,
                            _shorten(json.dumps(answer["node_errors"]), 500))
            log.info("prompt %s: submitted to %s (client %s)", self.prompt_id, self.url, self.client_id)
            return
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if response.status_code == 400 and isinstance(answer, dict):
            raise BackendError(self._validation_message(answer))
        raise BackendError(f"ComfyUI at {self.url} answered HTTP {response.status_code} to POST /prompt: "
                           f"{_shorten(response.text, 300)}")

    def _validation_message(self, answer: dict) -> str:
        error = answer.get("error")
        if not isinstance(error, dict):
            error = {"message": str(error or "invalid prompt")}
        node_errors = answer.get("node_errors")
        node_errors = node_errors if isinstance(node_errors, dict) else {}
        checkpoint_targets = set(self.backend.workflow.mapping.get("checkpoint", ()))
        parts = []
        for node_id, found in node_errors.items():
            class_type = found.get("class_type") or self.graph.get(node_id, {}).get("class_type", "?")
            for err in found.get("errors") or []:
                info = err.get("extra_info") or {}
                input_name = info.get("input_name")
                if err.get("type") == "value_not_in_list" and (
                        (str(node_id), input_name) in checkpoint_targets or input_name == "ckpt_name"):
                    return (f"checkpoint '{self.spec.checkpoint}' is not installed on this node "
                            f"(ComfyUI at {self.url}){_installed(info.get('input_config'))}")
                where = f"{class_type} (node {node_id})" + (f" input '{input_name}'" if input_name else "")
                text = err.get("message") or err.get("type") or "invalid"
                details = err.get("details")
                parts.append(f"{where}: {text}" + (f" ({_shorten(details, 200)})" if details else ""))
        if parts:
            return "ComfyUI rejected the workflow: " + "; ".join(parts)
        message = error.get("message") or error.get("type") or "invalid prompt"
        details = error.get("details")
        return "ComfyUI rejected the workflow: " + message + (f" ({_shorten(details, 200)})" if details else "")

    # ---- following the prompt to its end

    def _follow(self) -> dict:
        """Until the prompt ends: its history entry on success; BackendError on failure or timeout."""
        poll = self.backend.poll_seconds
        next_history = time.monotonic() + 5 * poll
        misses = 0
        while True:
            now = time.monotonic()
            if now >= self.deadline:
                self._time_out()
            if self.job.cancelled():
                outcome = self._cancel()
                self.settled = True
                raise JobCancelled(f"cancelled; its prompt was {outcome}")
            if self.ws is not None:
                event = self._receive(min(self.deadline - now, poll))
                if event is not None:
                    entry = self._handle(event)
                    if entry is not None:
                        return entry
                    continue
                if self.ws is not None and time.monotonic() < next_history:
                    continue
                # a quiet socket is normal (a slow node, a long queue): look at the server now and then
            entry = self._history()
            if entry is not None:
                self._mark_started()
                self._drain()
                return self._settle_from_history(entry)
            misses = misses + 1 if self._lost() else 0
            if misses >= 2:
                self.settled = True
                raise _PromptLost(f"ComfyUI at {self.url} lost prompt {self.prompt_id}: it is neither "
                                  f"queued, running nor in its history (was the server restarted?)")
            if self.ws is None:
                time.sleep(max(0.0, min(poll, self.deadline - time.monotonic())))
                if self.ws_reconnects < MAX_WS_RECONNECTS:
                    self.ws_reconnects += 1
                    self._open_ws()
            next_history = time.monotonic() + 5 * poll

    def _handle(self, event) -> dict | None:
        kind, data = event.get("type"), event.get("data")
        if not isinstance(data, dict):
            return None
        if data.get("prompt_id") not in (None, self.prompt_id):
            return None     # our socket only gets our prompt's events, but be sure
        self.job.alive()
        if kind == "execution_start":
            self._mark_started()
        elif kind == "progress":
            value, maximum = data.get("value"), data.get("max")
            if isinstance(value, (int, float)) and isinstance(maximum, (int, float)):
                self._mark_started()
                self.job.progress(int(value), int(maximum))
        elif kind == "executed":
            output = data.get("output")
            if isinstance(output, dict) and data.get("node") is not None:
                self.outputs[str(data["node"])] = output
        elif kind == "execution_error":
            self.settled = True
            raise BackendError(_execution_error_message(data))
        elif kind == "execution_interrupted":
            self.settled = True
            raise BackendError(_interrupted_message(data))
        elif kind == "execution_success" or (kind == "executing" and data.get("node") is None
                                             and data.get("prompt_id") == self.prompt_id):
            self.settled = True
            return self._await_history()
        return None

    def _forget_prompt(self):
        """ComfyUI lost the prompt (it restarted): the same job goes in again under a new prompt_id."""
        self.prompt_id = str(uuid.uuid4())
        self.submitted = self.settled = False
        self.outputs = {}

    def _mark_started(self):
        """ComfyUI began our prompt: the job turns `processing` and its time limit starts now."""
        if self.started is None:
            self.started = time.monotonic()
            self.deadline = self.started + self.backend.timeout_seconds
            self.job.started()

    def _drain(self):
        """Relay the progress still waiting on the socket when /history already says the prompt is done."""
        while self.ws is not None:
            event = self._receive(0.01)
            if event is None:
                return
            data = event.get("data")
            if (event.get("type") == "progress" and isinstance(data, dict)
                    and data.get("prompt_id") in (None, self.prompt_id)):
                self._handle(event)

    def _await_history(self) -> dict:
        """ComfyUI sends execution_success before it writes the history entry: wait for the entry."""
        until = time.monotonic() + max(10.0, 5 * self.backend.poll_seconds)
        pause = 0.02
        while True:
            entry = self._history()
            if entry is not None:
                return self._settle_from_history(entry)
            if time.monotonic() >= until:
                break
            time.sleep(pause)
            pause = min(pause * 2, 0.5)
        if self.outputs:
            log.warning("prompt %s: no history entry; using the outputs seen on the websocket", self.prompt_id)
            return {"outputs": self.outputs}
        raise BackendError(f"ComfyUI at {self.url} reported prompt {self.prompt_id} done but has no "
                           f"record of it in /history")

    def _settle_from_history(self, entry: dict) -> dict:
        self.settled = True
        status = entry.get("status") if isinstance(entry.get("status"), dict) else {}
        for message in status.get("messages") or []:
            if not (isinstance(message, list) and len(message) == 2 and isinstance(message[1], dict)):
                continue
            if message[0] == "execution_error":
                raise BackendError(_execution_error_message(message[1]))
            if message[0] == "execution_interrupted":
                raise BackendError(_interrupted_message(message[1]))
        if status.get("status_str") == "error":
            raise BackendError(f"ComfyUI reports that prompt {self.prompt_id} failed (no details in its history)")
        return entry

    def _time_out(self):
        outcome = self._cancel()
        self.settled = True
        raise BackendError(f"the job exceeded its time limit of {self.backend.timeout_seconds:g} s "
                           f"(GAZE_JOB_TIMEOUT_SECONDS) and was stopped; its prompt was {outcome}")

    def _cancel(self) -> str:
        """Stop our prompt — and only ours: delete it while it waits, interrupt it while it runs."""
        try:
            running, pending = self._queue()
            if self.prompt_id in pending:
                self._request("POST", "/queue", json={"delete": [self.prompt_id]}, timeout=PROBE_TIMEOUT)
                return "removed from ComfyUI's queue"
            if self.prompt_id in running:
                self._request("POST", "/interrupt", json={"prompt_id": self.prompt_id}, timeout=PROBE_TIMEOUT)
                return "interrupted on ComfyUI"
            return "no longer queued or running on ComfyUI"
        except (_Unreachable, requests.RequestException, ValueError) as exc:
            return f"not cancelled: ComfyUI did not answer ({exc})"

    def _lost(self) -> bool:
        """Neither in /queue nor (checked again after it) in /history: the server forgot the prompt."""
        try:
            running, pending = self._queue()
        except (_Unreachable, requests.RequestException, ValueError):
            return False
        if self.prompt_id in running:
            self._mark_started()
        return self.prompt_id not in running and self.prompt_id not in pending and self._history() is None

    # ---- the finished picture

    def _result(self, entry: dict) -> GeneratedImage:
        ref = self._pick_image(entry.get("outputs") or {})
        params = {"filename": ref.get("filename", ""), "subfolder": ref.get("subfolder", ""),
                  "type": ref.get("type", "output")}
        response = self._request("GET", "/view", params=params)
        if response.status_code != 200:
            raise BackendError(f"could not fetch the image {params['filename']!r} from ComfyUI at {self.url}: "
                               f"HTTP {response.status_code}")
        try:
            image = Image.open(io.BytesIO(response.content))
            image.load()
        except Exception as exc:  # Pillow raises many kinds for a bad file
            raise BackendError(f"ComfyUI returned an image GAZE cannot read ({params['filename']!r}: {exc})") from None
        metadata = png_metadata(self.spec, BACKEND_NAME)
        log.info("prompt %s: done in %.2fs (%s)", self.prompt_id, time.monotonic() - (self.started or self.created),
                 params["filename"])
        return GeneratedImage(encode_png(image, metadata), image.width, image.height, metadata)

    def _pick_image(self, outputs: dict) -> dict:
        wanted = self.backend.workflow.output_node
        if wanted is not None:
            images = (outputs.get(wanted) or {}).get("images") or []
            if images:
                return images[0]
        everything = [image for output in outputs.values() if isinstance(output, dict)
                      for image in output.get("images") or [] if isinstance(image, dict)]
        saved = [image for image in everything if image.get("type") == "output"]
        if saved or everything:
            return (saved or everything)[0]
        raise BackendError(f"the ComfyUI workflow {self.backend.workflow.source} finished without an image "
                           f"(it needs a SaveImage node)")





def _installed(input_config) -> str:
    choices = _combo_options(input_config) if isinstance(input_config, list) else None
    if choices is None:
        return ""
    if not choices:
        return "; it has no checkpoints at all (check ComfyUI's models/checkpoints or extra_model_paths.yaml)"
    shown = ", ".join(str(choice) for choice in choices[:5])
    more = f" and {len(choices) - 5} more" if len(choices) > 5 else ""
    return f"; installed: {shown}{more}"


def _execution_error_message(data: dict) -> str:
    node = data.get("node_type") or "a node"
    if data.get("node_id") is not None:
        node += f" (node {data['node_id']})"
    exception = data.get("exception_type") or "error"
    message = _shorten(data.get("exception_message") or "", 500)
    return f"ComfyUI failed in {node}: {exception}" + (f": {message}" if message else "")


def _interrupted_message(data: dict) -> str:
    where = data.get("node_type") or "a node"
    if data.get("node_id") is not None:
        where += f" (node {data['node_id']})"
    return f"the prompt was interrupted on ComfyUI in {where} (cancelled on the ComfyUI server)"
