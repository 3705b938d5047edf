"""The words a client or an operator reads about ComfyUI (services/generator/backends/comfyui_messages.py),
each from the plain values ComfyUI sends: no server here. (That the backend says them at the right moment:
tests/integration/test_comfyui_backend.py.)"""
from __future__ import annotations

import pytest
import requests

from services.generator.backends import comfyui_messages as words

URL = "http://gpu-3:8188"
GRAPH = {"4": {"class_type": "CheckpointLoaderSimple", "inputs": {}}, "3": {"class_type": "KSampler", "inputs": {}}}


def rejected(node_errors=None, error=None) -> str:
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
    assert rejected(not_in_list("4", "ckpt_name", ["a.safetensors", "b.safetensors"])) == (
        f"checkpoint 'Pony/pony_v6.safetensors' is not installed on this node (ComfyUI at {URL}); "
        f"installed: a.safetensors, b.safetensors")


def test_the_installed_list_is_cut_after_five_and_an_empty_one_says_where_to_look():
    seven = [f"c{i}" for i in range(7)]
    assert words.installed([seven, {}]) == "; installed: c0, c1, c2, c3, c4 and 2 more"
    assert words.installed(["COMBO", {"options": ["new"]}]) == "; installed: new"
    assert words.installed([[], {}]).startswith("; it has no checkpoints at all (check ComfyUI's models/checkpoints")
    assert words.installed(None) == "" and words.installed(["INT", {}]) == ""


def test_a_value_not_in_list_at_an_input_the_checkpoint_is_not_mapped_to_is_a_plain_rejection():
    assert rejected(not_in_list("3", "sampler_name")) == (
        "ComfyUI rejected the workflow: KSampler (node 3) input 'sampler_name': Value not in list "
        "(sampler_name: 'x' not in [...])")


def test_each_node_error_is_listed_and_without_any_the_top_error_is_said():
    two = {"3": {"class_type": "KSampler", "errors": [{"type": "required_input_missing"}]},
           "9": {"errors": [{"message": "bad", "extra_info": {"input_name": "images"}}]}}
    assert rejected(two) == ("ComfyUI rejected the workflow: KSampler (node 3): required_input_missing; "
                             "? (node 9) input 'images': bad")
    assert rejected(error={"message": "Cannot execute because node X does not exist.", "details": "Node ID '#9'"}) == (
        "ComfyUI rejected the workflow: Cannot execute because node X does not exist. (Node ID '#9')")
    answer = {"error": "no prompt", "node_errors": []}
    assert words.validation_message(answer, graph={}, checkpoint_inputs=(), checkpoint="c", url=URL) == (
        "ComfyUI rejected the workflow: no prompt")


def test_an_execution_error_names_the_node_and_the_exception():
    data = {"node_type": "KSampler", "node_id": "3", "exception_type": "torch.OutOfMemoryError",
            "exception_message": "CUDA out\n of   memory"}
    assert words.execution_error_message(data) == (
        "ComfyUI failed in KSampler (node 3): torch.OutOfMemoryError: CUDA out of memory")
    assert words.execution_error_message({}) == "ComfyUI failed in a node: error"
    long = words.execution_error_message({"exception_message": "x" * 600})
    assert long.endswith("x…") and len(long) == len("ComfyUI failed in a node: error: ") + 500


def test_an_interruption_says_it_came_from_the_comfyui_server():
    assert words.interrupted_message({"node_type": "KSampler", "node_id": 3}) == (
        "the prompt was interrupted on ComfyUI in KSampler (node 3) (cancelled on the ComfyUI server)")
    assert words.interrupted_message({}) == (
        "the prompt was interrupted on ComfyUI in a node (cancelled on the ComfyUI server)")


def test_the_ends_of_a_job_say_what_became_of_its_prompt():
    assert words.timed_out(0.5, words.INTERRUPTED) == (
        "the job exceeded its time limit of 0.5 s (GAZE_JOB_TIMEOUT_SECONDS) and was stopped; "
        "its prompt was interrupted on ComfyUI")
    assert words.cancelled(words.REMOVED_FROM_QUEUE) == "cancelled; its prompt was removed from ComfyUI's queue"
    assert words.not_cancelled("Connection refused") == "not cancelled: ComfyUI did not answer (Connection refused)"
    lost = words.prompt_lost(URL, "p-1")
    assert lost == (f"ComfyUI at {URL} lost prompt p-1: it is neither queued, running nor in its history "
                    f"(was the server restarted?)")
    assert words.gave_up(lost, 3) == lost + "; gave up after submitting it 3 times"
    assert words.unreachable(URL, "Connection refused", 4, 0.61) == (
        f"ComfyUI at {URL} is unreachable: Connection refused (tried 4 times over 0.6s)")
    assert words.prompt_refused(URL, 500, "Internal\nServer   Error") == (
        f"ComfyUI at {URL} answered HTTP 500 to POST /prompt: Internal Server Error")


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
