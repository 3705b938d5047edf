"""The words a client or an operator reads about ComfyUI (services/generator/backends/comfyui_messages.py),
each from the plain values ComfyUI sends: no server here. A job's error is said twice: what its client reads
(`public`: never a URL, host, file path or exception text) and the operator's `detail`. (That the backend
says them at the right moment: tests/integration/test_comfyui_backend.py.)"""
from __future__ import annotations

import pytest
import requests

from services.generator.backends import comfyui_messages as words

URL = "http://gpu-3:8188"
GRAPH = {"4": {"class_type": "CheckpointLoaderSimple", "inputs": {}}, "3": {"class_type": "KSampler", "inputs": {}}}


def rejected(node_errors=None, error=None) -> words.Reason:
    answer = {"error": error or {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed"},
              "node_errors": node_errors or {}}
    return words.validation_message(answer, graph=GRAPH, checkpoint_inputs=[("4", "ckpt_name")],
                                    checkpoint="Pony/pony_v6.safetensors", url=URL)


def not_in_list(node_id, input_name, choices=None) -> dict:
    info = {"input_name": input_name}
    if choices is not None:
        info["input_config"] = [choices, {}]
    return {node_id: {"errors": [{"type": "value_not_in_list", "message": "Value not in list",
                                  "details": f"{input_name}: 'x' not in [...]", "extra_info": info}]}}


def test_a_missing_checkpoint_is_named_with_the_installed_ones():
    said = rejected(not_in_list("4", "ckpt_name", ["a.safetensors", "b.safetensors"]))
    assert said.public == ("checkpoint 'Pony/pony_v6.safetensors' is not installed on this node; "
                           "installed: a.safetensors, b.safetensors")
    assert said.detail == (f"checkpoint 'Pony/pony_v6.safetensors' is not installed on this node (ComfyUI at {URL}); "
                           f"installed: a.safetensors, b.safetensors")


def test_the_installed_list_is_cut_after_five_and_an_empty_one_says_where_to_look():
    seven = [f"c{i}" for i in range(7)]
    assert words.installed([seven, {}]) == "; installed: c0, c1, c2, c3, c4 and 2 more"
    assert words.installed(["COMBO", {"options": ["new"]}]) == "; installed: new"
    assert words.installed([[], {}]) == "; it has no checkpoints installed"
    assert words.installed([[], {}], operator=True).startswith(
        "; it has no checkpoints at all (check ComfyUI's models/checkpoints")
    assert words.installed(None) == "" and words.installed(["INT", {}]) == ""


def test_a_value_not_in_list_at_an_input_the_checkpoint_is_not_mapped_to_is_a_plain_rejection():
    said = rejected(not_in_list("3", "sampler_name"))
    assert said.public == "ComfyUI rejected the workflow: KSampler (node 3) input 'sampler_name': Value not in list"
    assert said.detail == (f"ComfyUI at {URL} rejected the workflow: KSampler (node 3) input 'sampler_name': "
                           f"Value not in list (sampler_name: 'x' not in [...])")


def test_each_node_error_is_listed_and_without_any_the_top_error_is_said():
    two = {"3": {"class_type": "KSampler", "errors": [{"type": "required_input_missing"}]},
           "9": {"errors": [{"message": "bad", "extra_info": {"input_name": "images"}}]}}
    assert rejected(two).public == ("ComfyUI rejected the workflow: KSampler (node 3): required_input_missing; "
                                    "? (node 9) input 'images': bad")
    top = rejected(error={"message": "Cannot execute because node X does not exist.", "details": "Node ID '#9'"})
    assert top.public == "ComfyUI rejected the workflow: Cannot execute because node X does not exist."
    assert top.detail.endswith("Cannot execute because node X does not exist. (Node ID '#9')")
    answer = {"error": "no prompt", "node_errors": []}
    assert words.validation_message(answer, graph={}, checkpoint_inputs=(), checkpoint="c", url=URL).public == (
        "ComfyUI rejected the workflow: no prompt")


def test_an_execution_error_names_the_node_and_says_out_of_memory_but_not_the_exception():
    data = {"node_type": "KSampler", "node_id": "3", "exception_type": "torch.OutOfMemoryError",
            "exception_message": "CUDA out\n of   memory"}
    said = words.execution_error_message(data)
    assert said.public == "ComfyUI failed in KSampler (node 3): out of GPU memory; try a smaller size"
    assert said.detail == "ComfyUI failed in KSampler (node 3): torch.OutOfMemoryError: CUDA out of memory"
    boom = words.execution_error_message({"node_type": "VAEDecode", "node_id": "8", "exception_type": "RuntimeError",
                                          "exception_message": "boom"})
    assert boom.public == ("ComfyUI failed in VAEDecode (node 8) (the generator's log has the details under "
                           "this job's id)")
    assert words.execution_error_message({}).detail == "ComfyUI failed in a node: error"
    long = words.execution_error_message({"exception_message": "x" * 600}).detail
    assert long.endswith("x…") and len(long) == len("ComfyUI failed in a node: error: ") + 500


def test_an_interruption_says_it_came_from_the_comfyui_server():
    assert words.interrupted_message({"node_type": "KSampler", "node_id": 3}).public == (
        "the prompt was interrupted on ComfyUI in KSampler (node 3) (cancelled on the ComfyUI server)")
    assert words.interrupted_message({}).public == (
        "the prompt was interrupted on ComfyUI in a node (cancelled on the ComfyUI server)")


def test_the_ends_of_a_job_say_what_became_of_its_prompt():
    limit = words.timed_out(0.5, words.INTERRUPTED)
    assert limit.public == ("the job exceeded its time limit of 0.5 s and was stopped; "
                            "its prompt was interrupted on ComfyUI")
    assert limit.detail == ("the job exceeded its time limit of 0.5 s (GAZE_JOB_TIMEOUT_SECONDS) and was stopped; "
                            "its prompt was interrupted on ComfyUI")
    assert words.cancelled(words.REMOVED_FROM_QUEUE).public == "cancelled; its prompt was removed from ComfyUI's queue"
    lost = words.prompt_lost(URL, "p-1")
    assert lost.public == ("ComfyUI lost prompt p-1: it is neither queued, running nor in its history "
                           "(was the server restarted?)")
    assert lost.detail == (f"ComfyUI at {URL} lost prompt p-1: it is neither queued, running nor in its history "
                           f"(was the server restarted?)")
    assert words.gave_up(lost, 3) == (lost.public + "; gave up after submitting it 3 times",
                                      lost.detail + "; gave up after submitting it 3 times")
    unreachable = words.unreachable(URL, "Connection refused", 4, 0.61)
    assert unreachable.public == "the generator could not reach its image backend (ComfyUI); tried 4 times over 0.6 s"
    assert unreachable.detail == f"ComfyUI at {URL} is unreachable: Connection refused (tried 4 times over 0.6s)"
    refused = words.prompt_refused(URL, 500, "Internal\nServer   Error")
    assert refused.public == "the generator's image backend (ComfyUI) refused the job (HTTP 500)"
    assert refused.detail == f"ComfyUI at {URL} answered HTTP 500 to POST /prompt: Internal Server Error"


# ---- no job error a client reads carries the server's URL, a host, a file path or an exception's text

HOST = "gpu-node-7.internal.example"
SERVER = f"http://{HOST}:8188/comfy"
FILE = "/srv/comfyui/models/checkpoints/secret_dir/model.safetensors"
EXCEPTION = (f"HTTPConnectionPool(host='{HOST}', port=8188): Max retries exceeded with url: /prompt "
             f"(Caused by NewConnectionError: [Errno 111] Connection refused; see {FILE})")
INTERNALS = (SERVER, HOST, "8188", FILE, "secret_dir", "/srv/", "Errno", "Connection refused", "HTTPConnectionPool",
             "Max retries", "kaboom")


# ComfyUI's validation `message` is its own short phrase (masked all the same); the exception text of a
# node (`details`, `exception_message`) never reaches the client


def _everything_internal():
    """The node event / answer ComfyUI might send, every text field of it full of internals."""
    return {"node_type": "KSampler", "node_id": "3", "exception_type": "RuntimeError",
            "exception_message": f"kaboom: {EXCEPTION}", "traceback": [FILE]}


JOB_ERRORS = {
    "validation, checkpoint": lambda: words.validation_message(
        {"node_errors": not_in_list("4", "ckpt_name", [])}, graph=GRAPH, checkpoint_inputs=[("4", "ckpt_name")],
        checkpoint="mine.safetensors", url=SERVER),
    "validation, node errors": lambda: words.validation_message(
        {"node_errors": {"3": {"errors": [{"type": "custom_validation_failed",
                                           "message": f"Custom validation failed for {FILE}",
                                           "details": EXCEPTION, "extra_info": {"input_name": "seed"}}]}}},
        graph=GRAPH, checkpoint_inputs=[], checkpoint="c", url=SERVER),
    "validation, top error": lambda: words.validation_message(
        {"error": {"message": f"invalid prompt for {SERVER}", "details": EXCEPTION}}, graph=GRAPH, checkpoint_inputs=[],
        checkpoint="c", url=SERVER),
    "validation, a string": lambda: words.validation_message(
        {"error": f"no prompt at {FILE} on {HOST}:8188"}, graph=GRAPH, checkpoint_inputs=[], checkpoint="c",
        url=SERVER),
    "execution error": lambda: words.execution_error_message(_everything_internal()),
    "out of memory": lambda: words.execution_error_message(
        dict(_everything_internal(), exception_type="torch.OutOfMemoryError")),
    "interrupted": lambda: words.interrupted_message(_everything_internal()),
    "failed without details": lambda: words.failed_without_details("p-1"),
    "unreachable": lambda: words.unreachable(SERVER, EXCEPTION, 3, 30.0),
    "unreachable during the job": lambda: words.unreachable_during_job(SERVER, EXCEPTION),
    "no answer in time": lambda: words.no_answer_in_time(SERVER, "POST", "/prompt", EXCEPTION),
    "prompt refused": lambda: words.prompt_refused(SERVER, 500, f"<pre>{EXCEPTION}</pre>"),
    "prompt lost": lambda: words.prompt_lost(SERVER, "p-1"),
    "gave up": lambda: words.gave_up(words.prompt_lost(SERVER, "p-1"), 3),
    "done without history": lambda: words.done_without_history(SERVER, "p-1"),
    "timed out": lambda: words.timed_out(10, words.NOT_CANCELLED),
    "cancelled": lambda: words.cancelled(words.ALREADY_GONE),
    "no image": lambda: words.no_image(FILE),
    "image not fetched": lambda: words.image_not_fetched(FILE, SERVER, 404),
    "image unreadable": lambda: words.image_unreadable(FILE, EXCEPTION),
    "checkpoints unanswered": lambda: words.checkpoints_unanswered(SERVER, EXCEPTION),
    "checkpoints node missing": lambda: words.checkpoints_node_missing(SERVER, "CheckpointLoaderSimple"),
    "checkpoints not choices": lambda: words.checkpoints_not_choices(SERVER, "CheckpointLoaderSimple", "ckpt_name"),
}


@pytest.mark.parametrize("build", JOB_ERRORS.values(), ids=JOB_ERRORS.keys())
def test_no_job_error_a_client_reads_carries_a_url_host_path_or_exception_text(build):
    said = build()
    assert isinstance(said, words.Reason)
    leaked = [internal for internal in INTERNALS if internal in said.public]
    assert not leaked, f"{said.public!r} carries {leaked}"
    assert said.public.strip() and "GAZE_" not in said.public     # a reason, not the operator's settings


def test_the_operator_still_reads_every_internal_detail():
    assert SERVER in words.unreachable(SERVER, EXCEPTION, 3, 30.0).detail
    assert EXCEPTION in words.unreachable_during_job(SERVER, EXCEPTION).detail
    assert FILE in words.no_image(FILE).detail and FILE in words.image_unreadable(FILE, "x").detail
    assert "kaboom" in words.execution_error_message(_everything_internal()).detail


def test_public_text_masks_urls_paths_and_host_ports_and_keeps_the_users_own_words():
    from services.generator.backends.base import HIDDEN, public_text

    masked = public_text(f"at {SERVER} and 10.0.0.7:8188 and {HOST}:8188, [::1]:8188, file {FILE}, C:\\models\\a.ckpt")
    assert [internal for internal in (SERVER, "10.0.0.7", HOST, "::1", FILE, "C:\\") if internal in masked] == []
    assert masked.count(HIDDEN) == 6
    kept = "checkpoint 'Pony/pony_v6.safetensors' is not installed; KSampler (node 3): 1024/768 at 0.5 s, HTTP 500"
    assert public_text(kept) == kept


@pytest.mark.parametrize("exc, cause", [
    (requests.ConnectionError("HTTPConnectionPool(...): Max retries exceeded (Caused by NewConnectionError("
                              "'<urllib3...>: Failed to establish a new connection: [Errno 111] Connection refused'))"),
     "Connection refused"),
    (requests.ConnectionError("[Errno -3] Temporary failure in name resolution')"), "Temporary failure in name resolution"),
    (requests.ConnectTimeout("pool timed out"), "connection timed out"),
    (requests.ReadTimeout("read timed out"), "no answer in time"),
    (requests.ConnectionError("Failed to resolve: Name or service not known"), "unknown host"),
    (ValueError(""), "ValueError"),
])
def test_a_cause_is_short(exc, cause):
    assert words.reason(exc) == cause


def test_the_health_detail_names_version_and_devices():
    devices = [{"name": "cpu", "vram_total": 16 * 2**30, "vram_free": 8 * 2**30}, {"type": "cuda"}, "junk"]
    assert words.healthy("0.8.0", URL, devices) == f"ComfyUI 0.8.0 at {URL}; devices: cpu (8.0/16.0 GiB free), cuda"
    assert words.healthy(None, URL, []) == f"ComfyUI (version unknown) at {URL}; devices: none reported"
    assert words.missing_nodes("0.8.0", URL, ["A", "B"], "wf.json") == (
        f"ComfyUI 0.8.0 at {URL} lacks node type(s) A, B used by the workflow wf.json")


def test_a_combo_input_lists_its_choices_in_either_form():
    assert words.combo_options([["a", "b"], {}]) == ["a", "b"]
    assert words.combo_options(["COMBO", {"options": ["c"]}]) == ["c"]
    assert words.combo_options(["COMBO", {}]) is None and words.combo_options(["INT"]) is None
    assert words.combo_options([]) is None and words.combo_options(None) is None
