"""The ComfyUI backend: each generator replica drives one ComfyUI server over its HTTP and websocket API.

Its parts, each a module of its own: the workflow template and its mapping (comfyui_workflow.py); the
connection to the server: HTTP, the websocket, /history, /queue and the cancel of one prompt
(comfyui_transport.py); following one prompt's events to its end (comfyui_prompt.py); whether ComfyUI loaded
the job's checkpoint for it (comfyui_loads.py); reading the finished prompt's picture (comfyui_result.py); and
every sentence a user reads (comfyui_messages.py). Here: the backend, and one job (`_Run`), which submits,
follows, resubmits a lost prompt and fetches the picture.

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

import json
import logging
import random
import threading
import time
import uuid
from dataclasses import dataclass
from urllib.parse import quote

import requests

from services.generator.backends.base import BackendError, GeneratedImage, Reason, as_context, encode_png, png_metadata
from services.generator.backends.comfyui_messages import (
    checkpoints_node_missing, checkpoints_not_choices, checkpoints_unanswered, combo_options, gave_up,
    health_nodes_unlisted, health_status, health_unreachable, health_unreadable, healthy, image_not_fetched,
    missing_nodes, prompt_refused, reason, shorten, unreachable, validation_message,
)
from services.generator.backends.comfyui_loads import CACHED
from services.generator.backends.comfyui_prompt import JobClock, Prompt, PromptLost
from services.generator.backends.comfyui_result import pick_image, read_image, view_params
from services.generator.backends.comfyui_transport import (
    CONNECT_TIMEOUT, PROBE_TIMEOUT, Connection, Unreachable, remove_prompts, websocket_url,
)
from services.generator.backends.comfyui_workflow import DEFAULT_WORKFLOW, EXPECTED_FIELDS, Workflow, mapping_path

# what callers import from here; the other modules are this backend's own parts
__all__ = ["BACKEND_NAME", "ComfyUIBackend", "ComfyUISettings", "DEFAULT_WORKFLOW", "EXPECTED_FIELDS", "Workflow",
           "mapping_path"]

BACKEND_NAME = "comfyui"
MAX_BACKOFF = 5.0           # seconds between two tries to submit to an unreachable ComfyUI, at most
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
        self.loader_nodes = self.workflow.checkpoint_nodes()
        # the checkpoint the last of our prompts that ComfyUI ran used, and that prompt's queue number (jobs
        # run on threads of their own, and may learn their ends out of ComfyUI's order): only for the log,
        # beside what ComfyUI says it did (whether a load happened is ComfyUI's word alone, comfyui_loads.py)
        self._last_used = (-1, None)
        self._last_used_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings, comfyui: ComfyUISettings) -> "ComfyUIBackend":
        return cls(comfyui.comfyui_url, comfyui.comfyui_workflow or None,
                   timeout_seconds=settings.job_timeout_seconds,
                   retry_seconds=comfyui.comfyui_retry_seconds,
                   poll_seconds=comfyui.comfyui_poll_seconds)

    @property
    def ws_url(self) -> str:
        return websocket_url(self.url)

    @property
    def loaded_checkpoint(self) -> str | None:
        """The checkpoint the last of our prompts ComfyUI ran used (None before the first): what this worker
        believes ComfyUI holds. Another client's prompt may have changed it since."""
        return self._last_used[1]

    def _prompt_used(self, prompt: Prompt, checkpoint: str):
        """`prompt` went past its loader (loaded or cached): remember its checkpoint, unless a later prompt of
        ours already told its own. A cache hit where this worker believed ComfyUI held another checkpoint
        means another client's prompt (or this worker's predecessor) loaded it: worth a line in the log."""
        number = prompt.number if isinstance(prompt.number, int) else -1
        with self._last_used_lock:
            before = self._last_used[1]
            if number >= self._last_used[0]:
                self._last_used = (number, checkpoint)
        if prompt.loads.outcome == CACHED and before != checkpoint:
            log.info("prompt %s: ComfyUI already held checkpoint %s (the last prompt of this worker used %s): "
                     "no load", prompt.id, checkpoint, before or "none")

    def generate(self, spec, job=None) -> GeneratedImage:
        if spec.seed is None:   # the jobs service always sets one; a direct caller might not
            spec = spec.model_copy(update={"seed": random.getrandbits(50)})
        return _Run(self, spec, as_context(job)).run()

    @classmethod
    def remove_orphans(cls, comfyui: ComfyUISettings, prompt_ids) -> str:
        """Remove the prompts a killed worker left on ComfyUI (comfyui_transport.remove_prompts)."""
        return remove_prompts(comfyui.comfyui_url.rstrip("/"), prompt_ids)

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
            raise BackendError(*checkpoints_unanswered(self.url, reason(exc))) from None
        if not info:
            raise BackendError(*checkpoints_node_missing(self.url, class_type))
        inputs = info.get("input") or {}
        spec = (inputs.get("required") or {}).get(input_name) or (inputs.get("optional") or {}).get(input_name)
        choices = combo_options(spec)
        if choices is None:
            raise BackendError(*checkpoints_not_choices(self.url, class_type, input_name))
        return [str(choice) for choice in choices]

    def health(self) -> tuple[bool, str]:
        """(ok, detail): ComfyUI answers, and has every node class the workflow template uses."""
        try:
            response = requests.get(f"{self.url}/system_stats", timeout=(CONNECT_TIMEOUT, PROBE_TIMEOUT))
        except requests.RequestException as exc:
            return False, health_unreachable(self.url, reason(exc))
        if response.status_code != 200:
            return False, health_status(self.url, response.status_code)
        try:
            stats = response.json()
            system = stats.get("system") or {}
            devices = stats.get("devices") or []
        except (ValueError, AttributeError):
            return False, health_unreadable(self.url)
        missing = []
        try:
            for class_type in self.workflow.class_types():
                info = requests.get(f"{self.url}/object_info/{quote(class_type, safe='')}",
                                    timeout=(CONNECT_TIMEOUT, PROBE_TIMEOUT))
                if info.status_code != 200 or class_type not in (info.json() or {}):
                    missing.append(class_type)
        except (requests.RequestException, ValueError) as exc:
            return False, health_nodes_unlisted(self.url, reason(exc))
        version = system.get("comfyui_version")
        if missing:
            return False, missing_nodes(version, self.url, missing, self.workflow.source)
        return True, healthy(version, self.url, devices)


# --------------------------------------------------------------------------------------------------
# one job


class _Run:
    """One job on ComfyUI: submit its prompt (retrying while the server is unreachable, and again when the
    server lost it), follow it (comfyui_prompt.Prompt), fetch the picture; on the way out, cancel the
    prompt if it is still there."""

    def __init__(self, backend: ComfyUIBackend, spec, job):
        self.backend = backend
        self.spec = spec
        self.job = job      # the JobContext
        self.graph = backend.workflow.fill(spec)
        self.clock = JobClock(backend.timeout_seconds)
        self.server = Connection(backend.url, uuid.uuid4().hex, retry_seconds=backend.retry_seconds,
                                 clock=self.clock)
        self.prompt = None  # the current submission

    def run(self) -> GeneratedImage:
        try:
            for submission in range(1, MAX_SUBMISSIONS + 1):
                self.prompt = Prompt(self.server, self.job, self.clock, poll_seconds=self.backend.poll_seconds,
                                     loader_nodes=self.backend.loader_nodes, checkpoint=self.spec.checkpoint)
                self._submit(self.prompt)
                try:
                    entry = self.prompt.follow()
                except PromptLost as exc:
                    if submission == MAX_SUBMISSIONS:
                        raise BackendError(*gave_up(Reason(exc.public, exc.detail), submission)) from None
                    log.warning("%s; submitting it again", exc.detail)     # the same job, under a new prompt_id
                    continue
                return self._result(entry)
        except BaseException:
            prompt = self.prompt
            if prompt is not None and prompt.submitted and not prompt.settled:
                outcome = prompt.cancel()
                log.warning("prompt %s: abandoned, %s", prompt.id, outcome)
            raise
        finally:
            if self.prompt is not None and self.prompt.loads.outcome is not None:
                self.backend._prompt_used(self.prompt, self.spec.checkpoint)
            self.server.close()

    def _submit(self, prompt: Prompt):
        """POST /prompt, retried while ComfyUI is unreachable (GAZE_COMFYUI_RETRY_SECONDS)."""
        server = self.server
        body = {"prompt": self.graph, "client_id": server.client_id, "prompt_id": prompt.id}
        self.job.submitted(prompt.id)       # before it is sent: the answer may be lost on the way
        give_up = min(time.monotonic() + self.backend.retry_seconds, self.clock.deadline)
        delay = min(0.25, max(0.01, self.backend.retry_seconds / 8))
        attempts = 0
        while True:
            attempts += 1
            server.open_ws()
            try:
                response = server.request("POST", "/prompt", json=body)
                break
            except BackendError:
                prompt.submitted = True     # no answer in time: it may be queued there, so cancel it on the way out
                raise
            except Unreachable as exc:
                now = time.monotonic()
                if now + delay > give_up:
                    raise BackendError(*unreachable(server.url, exc, attempts, now - self.clock.created)) from None
                log.warning("ComfyUI at %s unreachable (%s); retrying in %.2fs", server.url, exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
        if response.status_code == 200:
            self._accepted(prompt, response)
            return
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if response.status_code == 400 and isinstance(answer, dict):
            raise BackendError(*validation_message(
                answer, graph=self.graph, checkpoint_inputs=self.backend.workflow.mapping.get("checkpoint", ()),
                checkpoint=self.spec.checkpoint, url=server.url))
        raise BackendError(*prompt_refused(server.url, response.status_code, response.text))

    def _accepted(self, prompt: Prompt, response):
        prompt.submitted = True
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        answer = answer if isinstance(answer, dict) else {}
        if str(answer.get("prompt_id") or prompt.id) != prompt.id:
            prompt.id = prompt.loads.prompt_id = str(answer["prompt_id"])
            self.job.submitted(prompt.id)
        if isinstance(answer.get("number"), int):
            prompt.number = answer["number"]
        if answer.get("node_errors"):
            log.warning("prompt %s: ComfyUI accepted it with node errors: %s", prompt.id,
                        shorten(json.dumps(answer["node_errors"]), 500))
        log.info("prompt %s: submitted to %s (client %s)", prompt.id, self.server.url, self.server.client_id)

    def _result(self, entry: dict) -> GeneratedImage:
        """The picture of a finished prompt, as GAZE's PNG."""
        params = view_params(pick_image(entry.get("outputs") or {}, self.backend.workflow))
        response = self.server.request("GET", "/view", params=params)
        if response.status_code != 200:
            raise BackendError(*image_not_fetched(params["filename"], self.server.url, response.status_code))
        image = read_image(response.content, params["filename"])
        metadata = png_metadata(self.spec, BACKEND_NAME)
        log.info("prompt %s: done in %.2fs (%s)", self.prompt.id,
                 time.monotonic() - (self.clock.started or self.clock.created), params["filename"])
        return GeneratedImage(encode_png(image, metadata), image.width, image.height, metadata)
