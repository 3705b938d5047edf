"""The ComfyUI backend against a ComfyUI-protocol test server (tests/comfyui_fake) over real HTTP and
websockets: progress, the filled template, ComfyUI's error answers, lost websockets, time limits that
cancel only our own prompt, an unreachable server, and the node's checkpoint list and health.

Needs neither PostgreSQL nor RabbitMQ. The fake runs in a real OS thread; the backend runs here (under
eventlet, as the suite does) and once through the replica's worker process (services/generator/supervisor.py)."""
from __future__ import annotations

import io
import json
import logging
import time

import pytest
import requests
import websocket
from eventlet import patcher
from PIL import Image

from shared.schemas import GenerationSpec
from services.generator.backends import BackendError, CallbackContext, GeneratedImage, JobCancelled
from services.generator.backends.comfyui import DEFAULT_WORKFLOW, ComfyUIBackend
from services.generator.backends.preview import png_metadata
from services.generator.supervisor import WorkerSupervisor
from shared import config
from tests.comfyui_fake import FakeComfyUI, Script, free_port
from tests.helpers import wait_until
from tests.worker_stand_ins import LoadRecorder

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TEMPLATE = json.loads(DEFAULT_WORKFLOW.read_text())


@pytest.fixture
def fake():
    server = FakeComfyUI().start()
    yield server
    server.stop()


def backend_for(url, workflow=None, **settings):
    settings = {"timeout_seconds": 10.0, "retry_seconds": 2.0, "poll_seconds": 0.05, **settings}
    return ComfyUIBackend(url, workflow, **settings)


def make_spec(**changes) -> GenerationSpec:
    fields = dict(preset_slug="example_01", preset_name="Example", prompt="a lighthouse at dusk",
                  negative="blurry, lowres", checkpoint="Illustrious/model.safetensors", width=64, height=48,
                  steps=4, cfg=6.5, sampler="euler_ancestral", seed=1234)
    fields.update(changes)
    return GenerationSpec(**fields)


def submit_foreign(fake, checkpoint=None, **script):
    """A prompt from someone else (another client id), e.g. the ComfyUI web UI's user."""
    graph = json.loads(json.dumps(TEMPLATE))
    graph["5"]["inputs"].update(width=32, height=32)
    if checkpoint is not None:
        graph["4"]["inputs"]["ckpt_name"] = checkpoint
    answer = requests.post(f"{fake.url}/prompt", json={"prompt": graph, "client_id": "someone-else",
                                                       "extra_data": {"fake_script": script}}, timeout=5)
    answer.raise_for_status()
    return answer.json()["prompt_id"]


def text_chunks(png: bytes) -> dict:
    image = Image.open(io.BytesIO(png))
    image.load()
    return dict(image.text)


# ---- a normal job


def test_a_job_reports_progress_and_returns_the_pixels_with_gaze_metadata(fake):
    spec = make_spec()
    progress = []
    image = backend_for(fake.url).generate(spec, lambda value, maximum: progress.append((value, maximum)))

    assert isinstance(image, GeneratedImage)
    assert progress == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert image.png.startswith(PNG_MAGIC) and (image.width, image.height) == (64, 48)
    assert image.metadata == png_metadata(spec, "comfyui")
    # GAZE's text chunks replace ComfyUI's (whose `prompt` chunk is the graph); the pixels are ComfyUI's
    assert text_chunks(image.png) == png_metadata(spec, "comfyui")
    [original] = fake.files.values()
    assert json.loads(Image.open(io.BytesIO(original)).text["prompt"])["6"]["inputs"]["text"] == spec.prompt
    assert Image.open(io.BytesIO(image.png)).tobytes() == Image.open(io.BytesIO(original)).tobytes()


def test_the_template_is_filled_at_the_mapped_inputs_and_otherwise_left_alone(fake):
    spec = make_spec(checkpoint="SDXL/sd_xl_base_1.0.safetensors", seed=2**63 - 1, steps=3, cfg=4.5,
                     sampler="dpmpp_2m", width=72, height=40, prompt="p", negative="n")
    backend = backend_for(fake.url)
    backend.generate(spec)

    [body] = fake.prompts
    graph = body["prompt"]
    assert graph["4"]["inputs"]["ckpt_name"] == "SDXL/sd_xl_base_1.0.safetensors"
    assert graph["6"]["inputs"]["text"] == "p" and graph["7"]["inputs"]["text"] == "n"
    assert {k: graph["3"]["inputs"][k] for k in ("seed", "steps", "cfg", "sampler_name")} == {
        "seed": 2**63 - 1, "steps": 3, "cfg": 4.5, "sampler_name": "dpmpp_2m"}
    assert (graph["5"]["inputs"]["width"], graph["5"]["inputs"]["height"]) == (72, 40)
    # everything the mapping does not name is the template's
    assert graph["3"]["inputs"]["scheduler"] == TEMPLATE["3"]["inputs"]["scheduler"]
    assert graph["9"] == TEMPLATE["9"] and graph["8"] == TEMPLATE["8"]
    assert set(graph) == set(TEMPLATE)
    # submitted under a client id of its own, on whose websocket it listened
    assert body["client_id"] in fake.ws_connects
    assert backend.workflow.graph == TEMPLATE        # the template itself is never modified


def test_events_go_only_to_the_submitting_clients_websocket(fake):
    bystander = websocket.create_connection(f"ws://127.0.0.1:{fake.port}/ws?clientId=bystander", timeout=2)
    try:
        progress = []
        backend_for(fake.url).generate(make_spec(), lambda v, m: progress.append(v))
        assert progress == [1, 2, 3, 4]
        bystander.settimeout(0.1)
        seen = []
        try:
            while True:
                seen.append(json.loads(bystander.recv())["type"])
        except websocket.WebSocketTimeoutException:
            pass
        assert seen and set(seen) == {"status"}
    finally:
        bystander.close()


def test_a_custom_workflow_with_its_own_mapping(fake, tmp_path):
    graph = json.loads(json.dumps(TEMPLATE))
    graph["12"] = {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}}
    graph["5"]["inputs"].update(width=96, height=80)
    (tmp_path / "mine.json").write_text(json.dumps(graph))
    (tmp_path / "mine.mapping.json").write_text(json.dumps({
        "prompt": [["6", "text"], ["9", "filename_prefix"]], "seed": [["3", "seed"]],
        "checkpoint": [["4", "ckpt_name"]], "output_node": "9"}))
    image = backend_for(fake.url, str(tmp_path / "mine.json")).generate(make_spec(prompt="gaze/custom"))
    submitted = fake.prompts[0]["prompt"]
    assert submitted["9"]["inputs"]["filename_prefix"] == "gaze/custom"
    assert submitted["5"]["inputs"]["width"] == 96            # not mapped here: the template's value
    assert (image.width, image.height) == (96, 80)            # the image ComfyUI made, whatever the spec says


def test_success_is_awaited_until_the_history_entry_exists(fake):
    """ComfyUI sends execution_success before it writes the history entry."""
    fake.script = Script(history_delay=0.2)
    image = backend_for(fake.url).generate(make_spec())
    assert image.png.startswith(PNG_MAGIC)


# ---- ComfyUI's refusals and failures become readable job errors


def test_a_validation_error_names_the_node_class_and_the_input(fake):
    with pytest.raises(BackendError) as err:
        backend_for(fake.url).generate(make_spec(sampler="no_such_sampler"))
    assert str(err.value) == "ComfyUI rejected the workflow: KSampler (node 3) input 'sampler_name': Value not in list"
    assert "no_such_sampler" in err.value.detail and fake.url in err.value.detail    # the operator's
    assert fake.history == {}


def test_an_unknown_node_class_is_named(fake, tmp_path):
    graph = json.loads(json.dumps(TEMPLATE))
    graph["8"]["class_type"] = "VAEDecodeTiledByMagic"
    (tmp_path / "w.json").write_text(json.dumps(graph))
    (tmp_path / "w.mapping.json").write_text(json.dumps({"prompt": [["6", "text"]]}))
    with pytest.raises(BackendError) as err:
        backend_for(fake.url, tmp_path / "w.json").generate(make_spec())
    assert str(err.value) == ("ComfyUI rejected the workflow: Cannot execute because node VAEDecodeTiledByMagic "
                              "does not exist.")
    assert err.value.detail.endswith("does not exist. (Node ID '#8')")


def test_a_missing_checkpoint_is_named(fake):
    with pytest.raises(BackendError) as err:
        backend_for(fake.url).generate(make_spec(checkpoint="Pony/pony_v6.safetensors"))
    assert str(err.value) == (
        "checkpoint 'Pony/pony_v6.safetensors' is not installed on this node; "
        "installed: Illustrious/model.safetensors, SDXL/sd_xl_base_1.0.safetensors")
    assert err.value.detail.startswith(
        f"checkpoint 'Pony/pony_v6.safetensors' is not installed on this node (ComfyUI at {fake.url}); ")


def test_an_execution_error_fails_the_job_at_once(fake):
    fake.script = Script(fail_at="KSampler", exception_type="torch.OutOfMemoryError",
                         exception_message="CUDA out of memory. Tried to allocate 2.00 GiB")
    started = time.monotonic()
    with pytest.raises(BackendError) as err:
        backend_for(fake.url, timeout_seconds=30).generate(make_spec())
    assert time.monotonic() - started < 2.0       # no waiting for an executing-null that never comes
    assert str(err.value) == "ComfyUI failed in KSampler (node 3): out of GPU memory; try a smaller size"
    assert err.value.detail == ("ComfyUI failed in KSampler (node 3): torch.OutOfMemoryError: "
                                "CUDA out of memory. Tried to allocate 2.00 GiB")
    [prompt_id] = fake.history
    assert ("executing", {"node": None, "prompt_id": prompt_id}) not in fake.events_for(prompt_id)
    assert fake.interrupts == [] and fake.deletes == []


def test_an_execution_error_seen_only_in_the_history(fake):
    """The websocket is gone before the error: /history's messages carry it."""
    fake.script = Script(drop_ws_after_step=1, step_delay=0.01, fail_at="VAEDecode", exception_message="boom")
    with pytest.raises(BackendError, match=r"^ComfyUI failed in VAEDecode \(node 8\) \(") as err:
        backend_for(fake.url).generate(make_spec())
    assert err.value.detail == "ComfyUI failed in VAEDecode (node 8): RuntimeError: boom"


def test_a_prompt_interrupted_by_someone_else_fails_the_job(fake):
    fake.script = Script(steps=50, step_delay=0.01)

    def interrupt_everything(value, maximum):   # the ComfyUI web UI's "cancel" button: no prompt_id
        if value == 2:
            requests.post(f"{fake.url}/interrupt", json={}, timeout=5)

    with pytest.raises(BackendError, match=r"interrupted on ComfyUI in KSampler \(node 3\)"):
        backend_for(fake.url).generate(make_spec(), interrupt_everything)


def test_a_comfyui_server_error_is_reported(fake):
    fake.script = Script(accept=False)
    with pytest.raises(BackendError, match=r"^the generator's image backend \(ComfyUI\) refused the job \(HTTP 500\)$") \
            as err:
        backend_for(fake.url).generate(make_spec())
    assert "answered HTTP 500 to POST /prompt: 500 Internal Server Error" in err.value.detail


# ---- a lost websocket, a lost prompt


def test_a_dropped_websocket_falls_back_to_polling_the_history(fake):
    fake.script = Script(steps=8, step_delay=0.02, drop_ws_after_step=2, refuse_ws_after_drop=True)
    progress = []
    image = backend_for(fake.url).generate(make_spec(), lambda v, m: progress.append(v))
    assert image.png.startswith(PNG_MAGIC) and (image.width, image.height) == (64, 48)
    assert progress == [1, 2]                     # nothing after the drop: the result came from /history
    assert fake.ws_refused                        # it tried to get its socket back, and could not


def test_a_websocket_that_comes_back_resumes_progress(fake):
    fake.script = Script(steps=12, step_delay=0.03, drop_ws_after_step=2, refuse_ws_after_drop=False)
    progress = []
    backend_for(fake.url).generate(make_spec(), lambda v, m: progress.append(v))
    assert len(fake.ws_connects) == 2 and progress[-1] == 12


def test_a_prompt_the_server_forgot_is_submitted_again(fake):
    """ComfyUI restarted mid-job: its queue and history are gone, the websocket comes back empty. The job
    goes in again under a new prompt_id and completes."""
    fake.script = Script(hang=True)
    restarted = []

    def restart_once(value, maximum):
        if not restarted:
            restarted.append(True)
            fake.script = Script(steps=2)
            fake.restart()

    image = backend_for(fake.url).generate(make_spec(), restart_once)
    assert image.png.startswith(PNG_MAGIC)
    assert len({prompt["prompt_id"] for prompt in fake.prompts}) == 2


def test_a_server_that_keeps_forgetting_the_prompt_fails_the_job(fake):
    fake.script = Script(hang=True)

    def restart_every_time(value, maximum):
        fake.restart()

    with pytest.raises(BackendError, match=r"lost prompt .*: it is neither queued.*gave up after submitting it 3"):
        backend_for(fake.url).generate(make_spec(), restart_every_time)


# ---- time limits cancel our prompt, and only ours


def test_a_timeout_interrupts_our_running_prompt_and_not_the_next_one(fake):
    fake.script = Script(hang=True)
    foreign = []

    def queue_someone_elses_prompt(value, maximum):
        if not foreign:
            foreign.append(submit_foreign(fake, hang=False))

    started = time.monotonic()
    with pytest.raises(BackendError) as err:
        backend_for(fake.url, timeout_seconds=0.5).generate(make_spec(), queue_someone_elses_prompt)
    assert 0.5 <= time.monotonic() - started < 2.0
    assert "exceeded its time limit of 0.5 s" in str(err.value) and "interrupted on ComfyUI" in str(err.value)
    ours = fake.prompts[0]["prompt_id"]
    assert fake.interrupts == [{"prompt_id": ours}] and fake.deletes == []
    # ours ends as interrupted; the other client's prompt then runs to success
    wait_until(lambda: fake.history.get(foreign[0]), timeout=5, what="the foreign prompt to finish")
    assert fake.history[foreign[0]]["status"]["status_str"] == "success"
    assert fake.history[ours]["status"]["status_str"] == "error"


class CancelLater(CallbackContext):
    """A job the replica cancels `after` seconds in; records when the backend said it started."""

    def __init__(self, after):
        super().__init__()
        self.until = time.monotonic() + after
        self.began = None

    def started(self):
        self.began = time.monotonic()

    def cancelled(self):
        return time.monotonic() >= self.until


def test_waiting_in_comfyuis_queue_spends_no_time_limit_and_a_cancel_removes_only_our_prompt(fake):
    foreign = submit_foreign(fake, hang=True)
    wait_until(lambda: fake.running_id == foreign, timeout=5, what="the foreign prompt to run")
    job = CancelLater(after=1.2)
    with pytest.raises(JobCancelled, match=r"removed from ComfyUI's queue"):
        # a limit of 0.4 s: had the wait in the queue counted, it would have fired long before the cancel
        backend_for(fake.url, timeout_seconds=0.4).generate(make_spec(), job)
    assert job.began is None        # never started: never `processing`
    ours = fake.prompts[-1]["prompt_id"]
    assert fake.deletes == [[ours]] and fake.interrupts == []
    assert fake.running_id == foreign and fake.pending_ids == []     # the other prompt still runs


# ---- which jobs made ComfyUI load their checkpoint

A, B = "Illustrious/model.safetensors", "SDXL/sd_xl_base_1.0.safetensors"
LOAD_SECONDS = 0.15     # the fake's time per executed loader
MEASURED_LOAD = 0.8 * LOAD_SECONDS      # the least a job may measure for it (events are timed as they arrive)





def loader_cached(fake, prompt_id) -> bool:
    """ComfyUI's own word, from the prompt's /history messages: was the loader (node 4) answered from cache?"""
    messages = dict((kind, data) for kind, data in fake.history[prompt_id]["status"]["messages"])
    return "4" in messages["execution_cached"]["nodes"]


def run_jobs(backend, checkpoints, seed=100):
    recorders = []
    for n, checkpoint in enumerate(checkpoints):
        recorders.append(LoadRecorder())
        backend.generate(make_spec(checkpoint=checkpoint, seed=seed + n), recorders[-1])
    return recorders


def test_a_switch_is_reported_once_per_change_and_not_for_a_repeated_checkpoint(fake):
    fake.script = Script(load_delay=LOAD_SECONDS)
    backend = backend_for(fake.url)
    sequence = [A, A, B, B, A, B]
    recorders = run_jobs(backend, sequence)

    assert [[checkpoint for checkpoint, _, _ in job.loads] for job in recorders] == [[A], [], [B], [], [A], [B]]
    for job in recorders:
        for _, seconds, resident in job.loads:
            assert MEASURED_LOAD <= seconds < LOAD_SECONDS + 1.0 and resident is None
    # the same as ComfyUI's own record of what it did
    prompt_ids = [body["prompt_id"] for body in fake.prompts]
    assert [not loader_cached(fake, pid) for pid in prompt_ids] == [bool(job.loads) for job in recorders]
    assert backend.loaded_checkpoint == B


def test_loads_are_told_from_the_history_when_there_is_no_websocket(fake, monkeypatch):
    """Without its websocket a job learns its prompt's end from /history: its messages still say whether
    the loader was cached, and ComfyUI's own timestamps bound the load's seconds."""
    monkeypatch.setattr("services.generator.backends.comfyui_transport.websocket_url",
                        lambda url: f"ws://127.0.0.1:{free_port()}/ws")
    fake.script = Script(load_delay=LOAD_SECONDS)
    recorders = run_jobs(backend_for(fake.url), [A, A, B])
    assert fake.ws_connects == []
    assert [[checkpoint for checkpoint, _, _ in job.loads] for job in recorders] == [[A], [], [B]]
    assert all(seconds >= MEASURED_LOAD for job in recorders for _, seconds, _ in job.loads)


def test_a_prompt_that_fails_after_its_load_reports_it_and_one_that_fails_in_its_loader_does_not(fake):
    backend = backend_for(fake.url)
    fake.script = Script(fail_at="KSampler")
    failed_late = LoadRecorder()
    with pytest.raises(BackendError):
        backend.generate(make_spec(checkpoint=A), failed_late)
    assert [checkpoint for checkpoint, _, _ in failed_late.loads] == [A]     # ComfyUI holds A now

    fake.script = Script(fail_at="CheckpointLoaderSimple")
    failed_in_loader = LoadRecorder()
    with pytest.raises(BackendError, match=r"CheckpointLoaderSimple \(node 4\)"):
        backend.generate(make_spec(checkpoint=B), failed_in_loader)
    assert failed_in_loader.loads == []

    fake.script = Script()
    [next_job] = run_jobs(backend, [B])
    assert [checkpoint for checkpoint, _, _ in next_job.loads] == [B]       # nothing of B was held


def test_another_clients_prompt_changes_what_comfyui_holds_and_its_load_is_not_ours(fake):
    """ComfyUI shared with someone else: their prompt's load is not reported to us; our next job on the
    checkpoint they loaded finds it cached (no load), and the one after, back on ours, loads it again."""
    backend = backend_for(fake.url)
    [first] = run_jobs(backend, [A])
    foreign = submit_foreign(fake, checkpoint=B)
    wait_until(lambda: fake.history.get(foreign), timeout=5, what="the foreign prompt to finish")
    assert not loader_cached(fake, foreign)
    after_foreign, back = run_jobs(backend, [B, A], seed=200)
    assert [c for c, _, _ in first.loads] == [A]
    assert after_foreign.loads == []
    assert [c for c, _, _ in back.loads] == [A]
    assert backend.loaded_checkpoint == A


def test_queued_prompts_each_report_their_own_load_to_the_replica(fake, monkeypatch):
    """The pipelined worker process: several prompts of ours wait in ComfyUI's queue, each followed by its
    own thread; each load is told to the replica (WorkerSupervisor) once, under the job it was made for."""
    import eventlet

    fake.script = Script(steps=3, step_delay=0.1, load_delay=LOAD_SECONDS)
    settings = config.Settings(backend="comfyui")
    monkeypatch.setenv("GAZE_COMFYUI_URL", fake.url)
    supervisor = WorkerSupervisor(settings, "gen-comfy")
    supervisor.start()
    sequence = [A, B, B, A]
    try:
        threads = []
        for n, checkpoint in enumerate(sequence):
            threads.append(eventlet.spawn(supervisor.run, f"job-{n}", make_spec(checkpoint=checkpoint, seed=n),
                                          lambda v, m: None))
            wait_until(lambda: len(fake.prompts) == n + 1, timeout=5, what=f"prompt {n} submitted")
        assert fake.pending_ids       # they did wait in ComfyUI's queue behind each other
        for thread in threads:
            thread.wait()
        assert supervisor.loads == 3 and supervisor.loaded_checkpoint == A
        assert supervisor.load_seconds_total >= 3 * MEASURED_LOAD
    finally:
        supervisor.stop()
    prompt_ids = [body["prompt_id"] for body in fake.prompts]
    assert [loader_cached(fake, pid) for pid in prompt_ids] == [False, False, True, False]


# ---- an unreachable ComfyUI


def test_an_unreachable_server_is_retried_then_reported_within_the_retry_window(caplog):
    url = f"http://127.0.0.1:{free_port()}"
    caplog.set_level(logging.WARNING, logger="services.generator.backends.comfyui")
    started = time.monotonic()
    with pytest.raises(BackendError) as err:
        backend_for(url, retry_seconds=0.6).generate(make_spec())
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 1.5
    assert str(err.value).startswith("the generator could not reach its image backend (ComfyUI); tried ")
    assert err.value.detail.startswith(f"ComfyUI at {url} is unreachable: Connection refused (tried ")
    assert len([r for r in caplog.records if "retrying" in r.getMessage()]) >= 2


def test_a_server_that_comes_up_within_the_retry_window_gets_the_job():
    port = free_port()
    late = FakeComfyUI(port=port)
    timer = patcher.original("threading").Timer(0.2, late.start)
    timer.start()
    try:
        image = backend_for(f"http://127.0.0.1:{port}", retry_seconds=2).generate(make_spec())
        assert image.png.startswith(PNG_MAGIC)
        assert len(late.prompts) == 1
    finally:
        timer.join()
        late.stop()


# ---- the node's checkpoints and health


def test_checkpoints_come_from_the_node(fake):
    fake.checkpoints[:] = ["Illustrious/model.safetensors", "Pony/pony_v6.safetensors"]
    assert backend_for(fake.url).checkpoints() == ["Illustrious/model.safetensors", "Pony/pony_v6.safetensors"]


def test_health_reports_the_server_and_its_devices(fake):
    ok, detail = backend_for(fake.url).health()
    assert ok is True
    assert detail == f"ComfyUI 0.8.0-fake at {fake.url}; devices: cpu (8.0/16.0 GiB free)"


def test_health_fails_when_the_node_lacks_a_class_the_workflow_uses(fake, tmp_path):
    graph = json.loads(json.dumps(TEMPLATE))
    graph["8"]["class_type"] = "VAEDecodeTiledByMagic"
    (tmp_path / "w.json").write_text(json.dumps(graph))
    (tmp_path / "w.mapping.json").write_text(json.dumps({"prompt": [["6", "text"]]}))
    ok, detail = backend_for(fake.url, tmp_path / "w.json").health()
    assert ok is False and "lacks node type(s) VAEDecodeTiledByMagic" in detail


def test_health_and_checkpoints_of_an_unreachable_node():
    url = f"http://127.0.0.1:{free_port()}"
    backend = backend_for(url)
    assert backend.health() == (False, f"ComfyUI at {url} is unreachable: Connection refused")
    with pytest.raises(BackendError, match="^cannot list checkpoints: ComfyUI did not answer$") as err:
        backend.checkpoints()
    assert err.value.detail == f"cannot list checkpoints: ComfyUI at {url}: Connection refused"


# ---- as the generator service runs it


def test_the_replicas_worker_process_drives_it_and_reports_its_start_and_prompts(fake, monkeypatch):
    fake.script = Script(steps=6, step_delay=0.03)
    settings = config.Settings(backend="comfyui")
    monkeypatch.setenv("GAZE_COMFYUI_URL", fake.url)     # the worker process reads it from the environment
    supervisor = WorkerSupervisor(settings, "gen-comfy")
    supervisor.start()
    published, handles = [], []
    try:
        def started():
            handles.extend(supervisor.tickets["job-1"].handles)
            return True

        image, seconds = supervisor.run("job-1", make_spec(), lambda v, m: published.append((v, m)), started)
    finally:
        supervisor.stop()
    assert image.png.startswith(PNG_MAGIC) and seconds > 0
    assert published and published[-1] == (6, 6)
    assert len(handles) == 1        # its prompt_id, known to the replica before the prompt started


def test_a_killed_worker_leaves_nothing_on_comfyui_and_its_queued_job_runs_on_the_next_worker(fake, monkeypatch):
    """The worker keeps the next job's prompt in ComfyUI's queue. When the replica kills the worker, it
    removes both prompts itself: interrupts the running one, deletes the queued one (ours only; a
    foreign prompt waiting behind them stays); the job that never started goes to the fresh worker."""
    import os
    import signal

    import eventlet

    from services.generator.supervisor import WorkerLost

    fake.script = Script(hang=True)
    settings = config.Settings(backend="comfyui")
    monkeypatch.setenv("GAZE_COMFYUI_URL", fake.url)     # for the worker process and the replica's clean-up
    supervisor = WorkerSupervisor(settings, "gen-comfy")
    supervisor.start()
    try:
        running = eventlet.spawn(supervisor.run, "job-1", make_spec(seed=1), lambda v, m: None)
        wait_until(lambda: fake.running_id is not None, timeout=5, what="our first prompt running")
        queued = eventlet.spawn(supervisor.run, "job-2", make_spec(seed=2), lambda v, m: None)
        wait_until(lambda: len(fake.pending_ids) == 1, timeout=5, what="our second prompt queued behind it")
        ours_running, [ours_queued] = fake.running_id, fake.pending_ids
        foreign = submit_foreign(fake, hang=False)
        fake.script = Script(steps=2)       # what the next worker submits runs normally
        os.kill(supervisor.worker_pid, signal.SIGKILL)
        with pytest.raises(WorkerLost) as lost:
            running.wait()
        assert "SIGKILL" in lost.value.detail and "SIGKILL" not in str(lost.value)
        with eventlet.Timeout(20, AssertionError("the queued job never ran: our old prompt still blocks ComfyUI")):
            image, _ = queued.wait()
        assert image.png.startswith(PNG_MAGIC)
        assert {"prompt_id": ours_running} in fake.interrupts
        assert [ours_queued] in fake.deletes
        assert all(foreign not in deleted for deleted in fake.deletes)
        wait_until(lambda: fake.history.get(foreign), timeout=10, what="the foreign prompt to run")
    finally:
        supervisor.stop()
