"""Reading a finished ComfyUI prompt (services/generator/backends/comfyui_result.py): whether its history
entry says it failed, which picture is the job's, and decoding it. Plain JSON and bytes, no server."""
from __future__ import annotations

import io

import pytest
from PIL import Image

from services.generator.backends import BackendError
from services.generator.backends.comfyui_result import history_failure, pick_image, read_image, view_params
from services.generator.backends.comfyui_workflow import Workflow


def workflow(output_node=None) -> Workflow:
    return Workflow(graph={}, mapping={}, output_node=output_node, source="wf.json")


def image(name, kind="output") -> dict:
    return {"filename": name, "subfolder": "", "type": kind}


def test_a_successful_entry_has_no_failure():
    assert history_failure({"status": {"status_str": "success", "completed": True, "messages": [
        ["execution_start", {"prompt_id": "p"}], ["execution_success", {"prompt_id": "p"}]]}}, "p") is None
    assert history_failure({"outputs": {}}, "p") is None        # older ComfyUI: no status at all


def test_the_entrys_messages_say_why_it_failed():
    error = ["execution_error", {"node_type": "VAEDecode", "node_id": "8", "exception_type": "RuntimeError",
                                 "exception_message": "boom"}]
    failed = history_failure({"status": {"status_str": "error", "messages": [["execution_start", {}], error]}}, "p")
    assert failed.detail == "ComfyUI failed in VAEDecode (node 8): RuntimeError: boom"
    assert failed.public.startswith("ComfyUI failed in VAEDecode (node 8) (") and "boom" not in failed.public
    interrupted = ["execution_interrupted", {"node_type": "KSampler", "node_id": "3"}]
    assert history_failure({"status": {"messages": [interrupted]}}, "p").public.startswith(
        "the prompt was interrupted on ComfyUI in KSampler (node 3)")
    assert history_failure({"status": {"status_str": "error", "messages": ["odd", ["x"]]}}, "p-7").public == (
        "ComfyUI reports that prompt p-7 failed (no details in its history)")


def test_the_mapped_output_node_wins_then_a_saved_image_then_any():
    outputs = {"12": {"images": [image("preview.png", "temp")]}, "9": {"images": [image("saved.png")]},
               "13": {"text": ["not an image"]}}
    assert pick_image(outputs, workflow("12"))["filename"] == "preview.png"
    assert pick_image(outputs, workflow())["filename"] == "saved.png"
    assert pick_image(outputs, workflow("77"))["filename"] == "saved.png"     # the mapped node made none
    assert pick_image({"12": {"images": [image("preview.png", "temp")]}}, workflow())["filename"] == "preview.png"


def test_no_image_at_all_asks_for_a_save_node():
    with pytest.raises(BackendError, match=r"^the generator's ComfyUI workflow finished without an image "
                                           r"\(the operator must give it a SaveImage node\)$") as failed:
        pick_image({"13": {"text": ["x"]}, "14": "junk"}, workflow())
    assert failed.value.detail == "the ComfyUI workflow wf.json finished without an image (it needs a SaveImage node)"


def test_view_params_default_to_an_output_image():
    assert view_params({"filename": "a.png"}) == {"filename": "a.png", "subfolder": "", "type": "output"}
    assert view_params(image("b.png", "temp")) == {"filename": "b.png", "subfolder": "", "type": "temp"}


def test_the_picture_is_decoded_and_a_broken_one_is_named():
    buffer = io.BytesIO()
    Image.new("RGB", (8, 4), "teal").save(buffer, format="PNG")
    picture = read_image(buffer.getvalue(), "a.png")
    assert picture.size == (8, 4) and picture.getpixel((0, 0)) == (0, 128, 128)
    with pytest.raises(BackendError, match=r"^ComfyUI returned an image GAZE cannot read$") as failed:
        read_image(b"not a png", "b.png")
    assert failed.value.detail.startswith("ComfyUI returned an image GAZE cannot read ('b.png': ")
