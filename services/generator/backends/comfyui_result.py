"""ComfyUI's side of a job, part 5: reading what a finished prompt left. Its history entry says whether it
failed; its outputs name the picture, which /view then serves. Plain functions over ComfyUI's JSON and the
picture's bytes: no I/O (tests/unit/test_comfyui_result.py)."""
from __future__ import annotations

import io

from PIL import Image

from services.generator.backends.base import BackendError, Reason
from services.generator.backends.comfyui_messages import (
    execution_error_message, failed_without_details, image_unreadable, interrupted_message, no_image,
)


def history_failure(entry: dict, prompt_id) -> Reason | None:
    """Why the prompt failed, from its history entry (the job's error); None when it did not."""
    status = entry.get("status") if isinstance(entry.get("status"), dict) else {}
    for message in status.get("messages") or []:
        if not (isinstance(message, list) and len(message) == 2 and isinstance(message[1], dict)):
            continue
        if message[0] == "execution_error":
            return execution_error_message(message[1])
        if message[0] == "execution_interrupted":
            return interrupted_message(message[1])
    if status.get("status_str") == "error":
        return failed_without_details(prompt_id)
    return None


def pick_image(outputs: dict, workflow) -> dict:
    """The image reference ({"filename", "subfolder", "type"}) of the job's picture: the first image of the
    workflow's output_node when its mapping names one, else the first saved image, else the first at all."""
    wanted = workflow.output_node
    if wanted is not None:
        images = (outputs.get(wanted) or {}).get("images") or []
        if images:
            return images[0]
    everything = [image for output in outputs.values() if isinstance(output, dict)
                  for image in output.get("images") or [] if isinstance(image, dict)]
    saved = [image for image in everything if image.get("type") == "output"]
    if saved or everything:
        return (saved or everything)[0]
    raise BackendError(*no_image(workflow.source))


def view_params(image_ref: dict) -> dict:
    """The query of GET /view for an image reference."""
    return {"filename": image_ref.get("filename", ""), "subfolder": image_ref.get("subfolder", ""),
            "type": image_ref.get("type", "output")}


def read_image(content: bytes, filename) -> Image.Image:
    """The picture /view sent, decoded (so that GAZE can write its own PNG of it)."""
    try:
        image = Image.open(io.BytesIO(content))
        image.load()
    except Exception as exc:  # Pillow raises many kinds for a bad file
        raise BackendError(*image_unreadable(filename, exc)) from None
    return image
