"""ComfyUI's side of a job, part 6: whether ComfyUI loaded the job's checkpoint for it, and how long that took
(JobContext.model_loaded, which the replica reports and the checkpoint-aware scheduler routes by).

The workflow's loader nodes are the nodes its mapping routes `checkpoint` to ("4", CheckpointLoaderSimple, in
the bundled template). For each prompt ComfyUI either answers a loader from its cache (the node is listed in
the prompt's `execution_cached`: ComfyUI's default cache keeps the outputs of the prompt it ran last, so the
previous prompt used the same checkpoint) or executes it (`executing` for the node): a load. ComfyUI puts no
timestamp on `executing`, so a load lasts from the loader's `executing` to the prompt's next `executing` (the
next node, or node null at its end) or its end, as the job's thread receives them; it is reported then, once
per prompt (the seconds of every loader of the prompt that executed before that moment). That is the loader
node's own work: reading the checkpoint from disk (or the page cache) and building the model. On a GPU,
ComfyUI moves the weights to VRAM later, inside the first node that uses them (the text encoder, the
sampler); the messages do not tell that part apart from the node's own work, so it counts as the job's time.

Only this prompt's messages count: the caller hands over the events of the job's own prompt only (ComfyUI may
be shared with other clients, and in pipelined mode several prompts of ours are queued there, each followed
by its own thread on its own websocket). When the websocket was down and /history told the prompt's end,
its messages still say which loaders were cached (`execution_cached`) or ran (`executed` of an error), but
not when a load ended: the seconds are then an upper bound, the whole prompt's run by ComfyUI's own
timestamps (execution_start to its end), and the log says so. (With ComfyUI's `--cache-lru N` several
checkpoints stay cached and a loader may be answered from the cache after other prompts: what is reported
is still what the messages say; which checkpoints are resident is not told, `resident` stays None.)
"""
from __future__ import annotations

import logging
import time

log = logging.getLogger("services.generator.backends.comfyui")

CACHED = "cached"       # every loader the prompt needed was answered from ComfyUI's cache
LOADED = "loaded"       # ComfyUI executed a loader for this prompt: a load


class LoadWatch:
    """Follows one prompt's loader nodes; calls `job.model_loaded(checkpoint, seconds, None)` once when
    ComfyUI loaded the checkpoint for it. Once the prompt ended, `outcome` is LOADED, CACHED or None (not
    known: the prompt failed before or in its loader, or its messages were lost)."""

    def __init__(self, loader_nodes, checkpoint: str, job, prompt_id: str, clock=time.monotonic):
        self.nodes = frozenset(str(node) for node in loader_nodes)
        self.checkpoint = checkpoint
        self.job = job              # the JobContext
        self.prompt_id = prompt_id
        self.clock = clock
        self.cached: set[str] = set()
        self.loading: str | None = None     # the loader node executing now
        self.loading_since: float | None = None
        self.loads: list[str] = []          # loader nodes that executed to their end
        self.seconds = 0.0
        self.exact = True                   # False: the seconds are an upper bound (the history told the end)
        self.reported = False
        self.outcome: str | None = None

    # ---- the websocket's events of our prompt

    def event(self, kind, data: dict):
        """One event of this prompt (the caller checked its prompt_id), as it arrives."""
        now = self.clock()
        if kind == "execution_cached":
            self.cached |= self.nodes & {str(node) for node in data.get("nodes") or []}
        elif kind == "executing":
            node = data.get("node")
            self._loader_done(now)
            if node is None:
                self._finish()      # the prompt ended
            elif str(node) in self.nodes:
                self.loading, self.loading_since = str(node), now
            else:
                self._report()      # the prompt moved past its loaders
        elif kind == "execution_success":
            self._loader_done(now)
            self._finish()
        elif kind in ("execution_error", "execution_interrupted"):
            if self.loading is not None and str(data.get("node_id")) == self.loading:
                self.loading = self.loading_since = None     # it failed in the loader: nothing was loaded
            self._loader_done(now)
            self._finish()

    def _loader_done(self, now):
        if self.loading is None:
            return
        self.seconds += now - self.loading_since
        self.loads.append(self.loading)
        self.loading = self.loading_since = None

    # ---- /history, when it told the prompt's end

    def history(self, entry: dict, started: float | None):
        """The prompt ended and /history told it (the websocket was down or quiet): its messages say which
        loaders were cached and which ran. `started`: when the job saw the prompt start (monotonic), if it did."""
        if self.outcome is not None:
            return
        status = entry.get("status") if isinstance(entry.get("status"), dict) else {}
        messages = {}
        for message in status.get("messages") or []:
            if isinstance(message, list) and len(message) == 2 and isinstance(message[1], dict):
                messages[message[0]] = message[1]
        cached = messages.get("execution_cached")
        if cached is not None:
            self.cached |= self.nodes & {str(node) for node in cached.get("nodes") or []}
        failure = messages.get("execution_error") or messages.get("execution_interrupted")
        if failure is not None:     # `executed`: the nodes that finished before it failed
            ran = self.nodes & {str(node) for node in failure.get("executed") or []}
        elif status.get("status_str") == "success":
            ran = self.nodes - self.cached
        else:
            ran = set()
        ran -= set(self.loads)
        if ran:
            # when the load ended is not known: ComfyUI's own span of the whole prompt bounds it, else the
            # time since the loader (or the prompt) was seen starting
            span = _span(messages.get("execution_start"), messages.get("execution_success") or failure or {})
            since = self.loading_since if self.loading is not None else started
            if span is None:
                span = self.clock() - since if since is not None else 0.0
            self.seconds += span
            self.exact = False
            self.loads += sorted(ran)
        self.loading = self.loading_since = None
        self._finish()

    # ---- the outcome

    def _report(self):
        if self.reported or not self.loads:
            return
        self.reported = True
        bound = "" if self.exact else " at most (its end was seen in /history only)"
        log.info("prompt %s: ComfyUI loaded checkpoint %s for it in %.2f s%s", self.prompt_id, self.checkpoint,
                 self.seconds, bound)
        self.job.model_loaded(self.checkpoint, self.seconds, None)

    def _finish(self):
        self._report()
        if self.outcome is None:
            self.outcome = LOADED if self.loads else CACHED if self.cached else None


def _span(start: dict | None, end: dict) -> float | None:
    """Seconds between two history messages, from ComfyUI's own millisecond timestamps."""
    if not start:
        return None
    first, last = start.get("timestamp"), end.get("timestamp")
    if not isinstance(first, (int, float)) or not isinstance(last, (int, float)):
        return None
    return max(0.0, (last - first) / 1000.0)
