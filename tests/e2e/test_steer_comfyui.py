"""Cancel through the whole stack with the ComfyUI backend (issue 11), against the ComfyUI-protocol test
server (tests/comfyui_fake): a queued prompt of ours is deleted from ComfyUI's queue, a running one is
interrupted by its own prompt_id, and a prompt of somebody else's on the same ComfyUI is never touched.

Prompts hang on the test server until interrupted, so jobs stay where the test puts them.
"""
import json

import pytest
import requests

from services.generator.backends.comfyui import DEFAULT_WORKFLOW
from tests.comfyui_fake import FakeComfyUI, Script
from tests.helpers import wait_until
from tests.stack import running_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    fake = FakeComfyUI().start()
    fake.script = Script(hang=True)
    try:
        with running_stack(tmp_path_factory.mktemp("steer-comfyui"), generators=1, GAZE_BACKEND="comfyui",
                           GAZE_COMFYUI_URL=fake.url) as stack:
            yield stack, fake
    finally:
        fake.stop()


def submit(stack, word):
    response = stack.post("/api/v1/generate/example_01", json={"extra_positive": word, "width": 64, "height": 64})
    assert response.status_code == 202, response.text
    return response.json()["jobs"][0]["job_id"]


def prompt_id_of(fake, word):
    """Our prompt on the test server whose text holds `word` (each job's extra_positive is unique)."""
    for body in fake.prompts:
        if word in json.dumps(body.get("prompt")) and body.get("client_id") != "someone-else":
            return body["prompt_id"]
    return None


def submit_foreign(fake):
    """A prompt from someone else (another client id), e.g. the ComfyUI web UI's user: it finishes."""
    graph = json.loads(DEFAULT_WORKFLOW.read_text())
    graph["5"]["inputs"].update(width=32, height=32)
    answer = requests.post(f"{fake.url}/prompt", json={"prompt": graph, "client_id": "someone-else",
                                                       "extra_data": {"fake_script": {"hang": False}}}, timeout=5)
    answer.raise_for_status()
    return answer.json()["prompt_id"]


def status(stack, job_id):
    return stack.get(f"/api/v1/job/{job_id}").json()["status"]


def test_cancel_deletes_our_queued_prompt_and_interrupts_only_our_running_one(comfy):
    stack, fake = comfy
    running = submit(stack, "alpha")
    wait_until(lambda: status(stack, running) == "processing", timeout=30, what="the first job to start")
    queued = submit(stack, "bravo")
    # the replica keeps the next job in ComfyUI's own queue (pipelining): it is there, waiting
    queued_prompt = wait_until(lambda: prompt_id_of(fake, "bravo"), timeout=30, what="the second prompt")
    foreign = submit_foreign(fake)   # somebody else's, behind ours

    assert stack.post(f"/api/v1/job/{queued}/cancel").status_code == 202
    wait_until(lambda: any(queued_prompt in batch for batch in fake.deletes), timeout=15,
               what="our queued prompt deleted from ComfyUI's queue")
    running_prompt = prompt_id_of(fake, "alpha")
    assert stack.post(f"/api/v1/job/{running}/cancel").status_code == 202
    wait_until(lambda: {"prompt_id": running_prompt} in fake.interrupts, timeout=15,
               what="our running prompt interrupted by its id")

    # somebody else's prompt then runs to its end on the freed ComfyUI, untouched
    wait_until(lambda: fake.history.get(foreign), timeout=30, what="the foreign prompt to finish")
    assert all(body.get("prompt_id") in (running_prompt, queued_prompt) for body in fake.interrupts), \
        f"an interrupt that was not for our own prompt: {fake.interrupts}"
    assert all(foreign not in batch for batch in fake.deletes)
    assert status(stack, running) == "cancelled" and status(stack, queued) == "cancelled"
    # the replica serves again: a new job reaches ComfyUI
    fake.script = Script()
    after = submit(stack, "charlie")
    wait_until(lambda: status(stack, after) == "done", timeout=30, what="the next job to finish")
