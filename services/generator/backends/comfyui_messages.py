"""ComfyUI's side of a job, part 4: the words. Every sentence a client or an operator reads about ComfyUI (a
job's error, a health detail, what became of a cancelled prompt) is written here, from plain values: pure
functions, no I/O, so that each wording is tested on its own (tests/unit/test_comfyui_messages.py) and the
code that talks to the server only says which one applies.

A job's error is a `Reason` (services/generator/backends/base.py): its `public` text is the job's `error`,
which API clients read, and never holds the server's URL, a host, a file path or an exception's text; its
`detail` has them all, for the generator's log. The health details and the checkpoint list are the
operator's (the admin's health page, `gaze generator-health`): plain strings that name the server."""
from __future__ import annotations

import os
import re

import requests

from services.generator.backends.base import Reason, public_text

# What became of our prompt when the job stopped it (`Connection.cancel`): the end of "its prompt was ...".
# Public words: what went wrong on the way is logged where it happened.
REMOVED_FROM_QUEUE = "removed from ComfyUI's queue"
INTERRUPTED = "interrupted on ComfyUI"
ALREADY_GONE = "no longer queued or running on ComfyUI"
NOT_CANCELLED = "not cancelled: ComfyUI did not answer"

_ERRNO = re.compile(r"\[Errno (-?\d+)\] ([^'\")\]]+)")


# ---- the pieces the sentences are made of


def shorten(text, limit=300) -> str:
    """`text` on one line, cut to `limit` characters (an ellipsis says it was cut)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def reason(exc) -> str:
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
    return shorten(text or type(exc).__name__, 200)


def combo_options(spec):
    """The choices of a combo input, in the old ([choices], {...}) and the newer ("COMBO", {options}) form."""
    if not isinstance(spec, list) or not spec:
        return None
    if isinstance(spec[0], list):
        return spec[0]
    if spec[0] == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
        options = spec[1].get("options")
        return options if isinstance(options, list) else None
    return None


def installed(input_config, operator=False) -> str:
    """"; installed: a, b and 3 more", from the input config a value_not_in_list error carries (the
    checkpoint names are the users' own vocabulary); where to look when there are none is the operator's."""
    choices = combo_options(input_config) if isinstance(input_config, list) else None
    if choices is None:
        return ""
    if not choices:
        if not operator:
            return "; it has no checkpoints installed"
        return "; it has no checkpoints at all (check ComfyUI's models/checkpoints or extra_model_paths.yaml)"
    shown = ", ".join(str(choice) for choice in choices[:5])
    more = f" and {len(choices) - 5} more" if len(choices) > 5 else ""
    return f"; installed: {shown}{more}"


def describe_devices(devices) -> str:
    """The devices of a /system_stats answer: "NVIDIA H100 (70.1/79.2 GiB free), cpu"."""
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


def _node(data: dict) -> str:
    where = data.get("node_type") or "a node"
    if data.get("node_id") is not None:
        where += f" (node {data['node_id']})"
    return where


# ---- a job's errors: each a Reason, its `public` text for the job's client (no URL, host, file path or
# exception text: what they can act on), its `detail` for the operator (the replica logs it under the job id)


def _scrubbed(text, limit=200) -> str:
    """A short text ComfyUI wrote (a validation message), fit for a client: one line, no internals."""
    return shorten(public_text(text), limit)


def validation_message(answer: dict, *, graph: dict, checkpoint_inputs, checkpoint, url) -> Reason:
    """Why ComfyUI refused the prompt (its HTTP 400 answer to POST /prompt). A checkpoint it does not have
    is said as such, with the ones it has; `checkpoint_inputs` are the (node id, input name) pairs the
    workflow's mapping routes the checkpoint to. Node ids, node types, input names and ComfyUI's own short
    message are public; its `details` (values, exception text of a custom node) only in the detail."""
    error = answer.get("error")
    if not isinstance(error, dict):
        error = {"message": str(error or "invalid prompt")}
    node_errors = answer.get("node_errors")
    node_errors = node_errors if isinstance(node_errors, dict) else {}
    checkpoint_inputs = set(checkpoint_inputs)
    public, detail = [], []
    for node_id, found in node_errors.items():
        class_type = found.get("class_type") or graph.get(node_id, {}).get("class_type", "?")
        for err in found.get("errors") or []:
            info = err.get("extra_info") or {}
            input_name = info.get("input_name")
            if err.get("type") == "value_not_in_list" and (
                    (str(node_id), input_name) in checkpoint_inputs or input_name == "ckpt_name"):
                choices = info.get("input_config")
                return Reason(f"checkpoint '{checkpoint}' is not installed on this node{installed(choices)}",
                              f"checkpoint '{checkpoint}' is not installed on this node "
                              f"(ComfyUI at {url}){installed(choices, operator=True)}")
            where = f"{class_type} (node {node_id})" + (f" input '{input_name}'" if input_name else "")
            text = err.get("message") or err.get("type") or "invalid"
            details = err.get("details")
            public.append(f"{where}: {_scrubbed(text)}")
            detail.append(f"{where}: {text}" + (f" ({shorten(details, 200)})" if details else ""))
    if not public:
        message = error.get("message") or error.get("type") or "invalid prompt"
        details = error.get("details")
        public.append(_scrubbed(message))
        detail.append(message + (f" ({shorten(details, 200)})" if details else ""))
    return Reason("ComfyUI rejected the workflow: " + "; ".join(public),
                  f"ComfyUI at {url} rejected the workflow: " + "; ".join(detail))


def _out_of_memory(data: dict) -> bool:
    said = f"{data.get('exception_type') or ''} {data.get('exception_message') or ''}".lower()
    return "outofmemory" in said or "out of memory" in said


def execution_error_message(data: dict) -> Reason:
    """An execution_error event (or history message) of our prompt. The client reads where it failed (and
    that the GPU ran out of memory, which they can act on); the exception itself goes to the log."""
    exception = data.get("exception_type") or "error"
    message = shorten(data.get("exception_message") or "", 500)
    detail = f"ComfyUI failed in {_node(data)}: {exception}" + (f": {message}" if message else "")
    if _out_of_memory(data):
        return Reason(f"ComfyUI failed in {_node(data)}: out of GPU memory; try a smaller size", detail)
    return Reason(f"ComfyUI failed in {_node(data)} (the generator's log has the details under this job's id)",
                  detail)


def interrupted_message(data: dict) -> Reason:
    """An execution_interrupted event (or history message): someone stopped it on the ComfyUI server."""
    return _same(f"the prompt was interrupted on ComfyUI in {_node(data)} (cancelled on the ComfyUI server)")


def failed_without_details(prompt_id) -> Reason:
    return _same(f"ComfyUI reports that prompt {prompt_id} failed (no details in its history)")


def unreachable(url, cause, attempts: int, seconds: float) -> Reason:
    """The job gave up submitting after GAZE_COMFYUI_RETRY_SECONDS."""
    return Reason(f"the generator could not reach its image backend (ComfyUI); tried {attempts} times over "
                  f"{seconds:.1f} s",
                  f"ComfyUI at {url} is unreachable: {cause} (tried {attempts} times over {seconds:.1f}s)")


def unreachable_during_job(url, cause) -> Reason:
    return Reason("the generator's image backend (ComfyUI) stopped answering during the job",
                  f"ComfyUI at {url} became unreachable during the job: {cause}")


def no_answer_in_time(url, method, path, cause) -> Reason:
    return Reason("the generator's image backend (ComfyUI) did not answer in time",
                  f"ComfyUI at {url} did not answer {method} {path} in time ({cause})")


def prompt_refused(url, status: int, body) -> Reason:
    """POST /prompt answered neither 200 nor a readable 400."""
    return Reason(f"the generator's image backend (ComfyUI) refused the job (HTTP {status})",
                  f"ComfyUI at {url} answered HTTP {status} to POST /prompt: {shorten(body, 300)}")


def prompt_lost(url, prompt_id) -> Reason:
    return Reason(f"ComfyUI lost prompt {prompt_id}: it is neither queued, running nor in its history "
                  f"(was the server restarted?)",
                  f"ComfyUI at {url} lost prompt {prompt_id}: it is neither queued, running nor in its "
                  f"history (was the server restarted?)")


def gave_up(lost: Reason, submissions: int) -> Reason:
    """The server lost the prompt again after the last submission GAZE makes."""
    return Reason(f"{lost.public}; gave up after submitting it {submissions} times",
                  f"{lost.detail}; gave up after submitting it {submissions} times")


def done_without_history(url, prompt_id) -> Reason:
    return Reason(f"ComfyUI reported prompt {prompt_id} done but kept no record of its result",
                  f"ComfyUI at {url} reported prompt {prompt_id} done but has no record of it in /history")


def timed_out(limit_seconds: float, outcome) -> Reason:
    """The job ran past GAZE_JOB_TIMEOUT_SECONDS; `outcome` is what became of its prompt (public words:
    REMOVED_FROM_QUEUE, INTERRUPTED, ALREADY_GONE or NOT_CANCELLED)."""
    return Reason(f"the job exceeded its time limit of {limit_seconds:g} s and was stopped; its prompt was "
                  f"{outcome}",
                  f"the job exceeded its time limit of {limit_seconds:g} s (GAZE_JOB_TIMEOUT_SECONDS) and was "
                  f"stopped; its prompt was {outcome}")


def cancelled(outcome) -> Reason:
    return _same(f"cancelled; its prompt was {outcome}")


def no_image(workflow_source) -> Reason:
    return Reason("the generator's ComfyUI workflow finished without an image (the operator must give it a "
                  "SaveImage node)",
                  f"the ComfyUI workflow {workflow_source} finished without an image (it needs a SaveImage node)")


def image_not_fetched(filename, url, status: int) -> Reason:
    return Reason(f"could not fetch the finished image from ComfyUI (HTTP {status})",
                  f"could not fetch the image {filename!r} from ComfyUI at {url}: HTTP {status}")


def image_unreadable(filename, error) -> Reason:
    return Reason("ComfyUI returned an image GAZE cannot read",
                  f"ComfyUI returned an image GAZE cannot read ({filename!r}: {error})")


def checkpoints_unanswered(url, cause) -> Reason:
    return Reason("cannot list checkpoints: ComfyUI did not answer",
                  f"cannot list checkpoints: ComfyUI at {url}: {cause}")


def checkpoints_node_missing(url, class_type) -> Reason:
    return Reason(f"cannot list checkpoints: ComfyUI has no {class_type} node",
                  f"cannot list checkpoints: ComfyUI at {url} has no {class_type} node")


def checkpoints_not_choices(url, class_type, input_name) -> Reason:
    return Reason(f"cannot list checkpoints: {class_type}.{input_name} on ComfyUI is not a list of choices",
                  f"cannot list checkpoints: {class_type}.{input_name} on ComfyUI at {url} is not a list of choices")


def _same(text: str) -> Reason:
    """A failure whose words hold nothing internal: the client and the operator read the same."""
    return Reason(text, text)


# ---- the operator's: health, the checkpoint list, a killed worker's prompts


def orphans_removed(queued: int, interrupted: int, finished: int) -> str:
    return f"{queued} removed from ComfyUI's queue, {interrupted} interrupted, {finished} already finished"


def orphans_not_removed(cause) -> str:
    return f"ComfyUI did not answer ({cause}); they may still run there"


def health_unreachable(url, cause) -> str:
    return f"ComfyUI at {url} is unreachable: {cause}"


def health_status(url, status: int) -> str:
    return f"ComfyUI at {url} answered HTTP {status} to /system_stats"


def health_unreadable(url) -> str:
    return f"ComfyUI at {url} sent an unreadable /system_stats"


def health_nodes_unlisted(url, cause) -> str:
    return f"ComfyUI at {url} failed while listing its nodes: {cause}"


def healthy(version, url, devices) -> str:
    return f"ComfyUI {version or '(version unknown)'} at {url}; devices: {describe_devices(devices)}"


def missing_nodes(version, url, missing, workflow_source) -> str:
    return (f"ComfyUI {version or '(version unknown)'} at {url} lacks node type(s) {', '.join(missing)} used "
            f"by the workflow {workflow_source}")
