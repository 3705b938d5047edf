"""ComfyUI's side of a job, part 3: following one submitted prompt to its end. Its events come on the job's
websocket; /history has the last word (and the only one while the socket is down); /queue tells a prompt
that is still waiting or running from one the server lost. The job's clock starts at the prompt's
execution_start, and every event about it is a sign of life for the replica's stall watchdog."""
from __future__ import annotations

import logging
import math
import time
import uuid
from dataclasses import dataclass, field

import requests

from services.generator.backends.base import BackendError, JobCancelled
from services.generator.backends.comfyui_messages import (
    cancelled, done_without_history, execution_error_message, interrupted_message, prompt_lost, timed_out,
)
from services.generator.backends.comfyui_loads import LoadWatch
from services.generator.backends.comfyui_result import history_failure
from services.generator.backends.comfyui_transport import Unreachable

log = logging.getLogger("services.generator.backends.comfyui")


class PromptLost(BackendError):
    """ComfyUI answers but knows nothing of our prompt any more (it restarted): submit it again."""


@dataclass
class JobClock:
    """A job's time: it exists from `created`, runs from ComfyUI's execution_start, and must end by `deadline`."""

    limit_seconds: float
    created: float = field(default_factory=time.monotonic)
    started: float | None = None
    deadline: float = math.inf  # until ComfyUI starts the prompt: waiting in its queue costs no limit

    def start(self) -> bool:
        """The time limit counts from now; True only the first time."""
        if self.started is not None:
            return False
        self.started = time.monotonic()
        self.deadline = self.started + self.limit_seconds
        return True


class Prompt:
    """One submission of the job's workflow to `server` (a Connection), followed to its end. The job sets
    `submitted` once the server may hold it; `settled` says it has ended there (or is known gone), so that
    there is nothing left to cancel. `loads` tells whether ComfyUI loaded `checkpoint` for it (its
    `loader_nodes`, comfyui_loads.py)."""

    def __init__(self, server, job, clock: JobClock, *, poll_seconds: float, loader_nodes=(), checkpoint=""):
        self.server = server
        self.job = job              # the JobContext
        self.clock = clock
        self.poll_seconds = poll_seconds
        self.id = str(uuid.uuid4())
        self.number = None          # its place in ComfyUI's queue (POST /prompt's answer): ComfyUI runs them in order
        self.submitted = False
        self.settled = False
        self.outputs = {}           # from `executed` events, should /history lose the entry
        self.loads = LoadWatch(loader_nodes, checkpoint, job, self.id)

    def follow(self) -> dict:
        """Until the prompt ends: its history entry on success; BackendError on failure or timeout,
        PromptLost when the server forgot it, JobCancelled when the replica asked to stop the job."""
        server, poll = self.server, self.poll_seconds
        next_history = time.monotonic() + 5 * poll
        misses = 0
        while True:
            now = time.monotonic()
            if now >= self.clock.deadline:
                self._time_out()
            if self.job.cancelled():
                outcome = self.cancel()
                self.settled = True
                raise JobCancelled(*cancelled(outcome))
            if server.ws is not None:
                event = server.receive(min(self.clock.deadline - now, poll), self.id)
                if event is not None:
                    entry = self._handle(event)
                    if entry is not None:
                        return entry
                    continue
                if server.ws is not None and time.monotonic() < next_history:
                    continue
                # a quiet socket is normal (a slow node, a long queue): look at the server now and then
            entry = self._history()
            if entry is not None:
                self._started()
                self._drain()
                self.loads.history(entry, self.clock.started)
                return self._settle(entry)
            misses = misses + 1 if self._lost() else 0
            if misses >= 2:
                self.settled = True
                raise PromptLost(*prompt_lost(server.url, self.id))
            if server.ws is None:
                time.sleep(max(0.0, min(poll, self.clock.deadline - time.monotonic())))
                server.reopen_ws()
            next_history = time.monotonic() + 5 * poll

    def cancel(self) -> str:
        """Stop this prompt (and no other); what became of it, as words."""
        return self.server.cancel(self.id)

    # ---- the events

    def _handle(self, event) -> dict | None:
        """One websocket event: the history entry once the prompt succeeded, else None; raises on failure.
        Never trusts executing-null alone after an error: execution_error ends the prompt first."""
        kind, data = event.get("type"), event.get("data")
        if not isinstance(data, dict):
            return None
        if data.get("prompt_id") not in (None, self.id):
            return None     # our socket only gets our prompt's events, but be sure
        self.job.alive()
        if data.get("prompt_id") == self.id:    # what ComfyUI did for this prompt, and no other
            self.loads.event(kind, data)
        if kind == "execution_start":
            self._started()
        elif kind == "progress":
            value, maximum = data.get("value"), data.get("max")
            if isinstance(value, (int, float)) and isinstance(maximum, (int, float)):
                self._started()
                self.job.progress(int(value), int(maximum))
        elif kind == "executed":
            output = data.get("output")
            if isinstance(output, dict) and data.get("node") is not None:
                self.outputs[str(data["node"])] = output
        elif kind == "execution_error":
            self.settled = True
            raise BackendError(*execution_error_message(data))
        elif kind == "execution_interrupted":
            self.settled = True
            raise BackendError(*interrupted_message(data))
        elif kind == "execution_success" or (kind == "executing" and data.get("node") is None
                                             and data.get("prompt_id") == self.id):
            self.settled = True
            return self._await_history()
        return None

    def _started(self):
        """ComfyUI began our prompt: the job turns `processing` and its time limit starts now."""
        if self.clock.start():
            self.job.started()

    def _drain(self):
        """Relay the progress still waiting on the socket when /history already says the prompt is done."""
        while self.server.ws is not None:
            event = self.server.receive(0.01, self.id)
            if event is None:
                return
            data = event.get("data")
            if (event.get("type") == "progress" and isinstance(data, dict)
                    and data.get("prompt_id") in (None, self.id)):
                self._handle(event)

    # ---- the server's word

    def _history(self) -> dict | None:
        answered, entry = self.server.history(self.id)
        if answered:
            self.job.alive()    # ComfyUI answered about our prompt
        return entry

    def _await_history(self) -> dict:
        """ComfyUI sends execution_success before it writes the history entry: wait for the entry."""
        until = time.monotonic() + max(10.0, 5 * self.poll_seconds)
        pause = 0.02
        while True:
            entry = self._history()
            if entry is not None:
                return self._settle(entry)
            if time.monotonic() >= until:
                break
            time.sleep(pause)
            pause = min(pause * 2, 0.5)
        if self.outputs:
            log.warning("prompt %s: no history entry; using the outputs seen on the websocket", self.id)
            return {"outputs": self.outputs}
        raise BackendError(*done_without_history(self.server.url, self.id))

    def _settle(self, entry: dict) -> dict:
        self.settled = True
        failure = history_failure(entry, self.id)
        if failure is not None:
            raise BackendError(*failure)
        return entry

    def _lost(self) -> bool:
        """Neither in /queue nor (checked again after it) in /history: the server forgot the prompt."""
        try:
            running, pending = self.server.queue()
        except (Unreachable, requests.RequestException, ValueError):
            return False
        if self.id in running:
            self._started()
        return self.id not in running and self.id not in pending and self._history() is None

    def _time_out(self):
        outcome = self.cancel()
        self.settled = True
        raise BackendError(*timed_out(self.clock.limit_seconds, outcome))
