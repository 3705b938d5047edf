"""The ComfyUI workflow template and its mapping file, the backend's settings, and the trivial
checkpoints()/health() of the preview backend. (The protocol itself: tests/integration/test_comfyui_backend.py.)"""
from __future__ import annotations

import json

import pytest

from shared import config
from shared.schemas import GenerationSpec
from services.generator.backends import make_backend
from services.generator.backends.comfyui import (DEFAULT_WORKFLOW, EXPECTED_FIELDS, ComfyUIBackend, ComfyUISettings,
                                                 Workflow, mapping_path)
from services.generator.backends.preview import PreviewBackend

TEMPLATE = json.loads(DEFAULT_WORKFLOW.read_text())


def make_spec(**changes) -> GenerationSpec:
    fields = dict(preset_slug="example_01", preset_name="Example", prompt="a lighthouse", negative="blurry",
                  checkpoint="SDXL/sd_xl_base_1.0.safetensors", width=832, height=1216, steps=30, cfg=7,
                  sampler="dpmpp_2m", seed=42)
    fields.update(changes)
    return GenerationSpec(**fields)


def write_pair(tmp_path, graph, mapping, name="wf"):
    (tmp_path / f"{name}.json").write_text(json.dumps(graph))
    (tmp_path / f"{name}.mapping.json").write_text(json.dumps(mapping))
    return tmp_path / f"{name}.json"


def test_the_default_template_is_a_plain_sdxl_txt2img_chain():
    workflow = Workflow.load(DEFAULT_WORKFLOW)
    assert workflow.class_types() == sorted(["CheckpointLoaderSimple", "CLIPTextEncode", "EmptyLatentImage",
                                             "KSampler", "VAEDecode", "SaveImage"])
    assert [n["class_type"] for n in TEMPLATE.values()].count("CLIPTextEncode") == 2
    assert set(EXPECTED_FIELDS) <= set(workflow.mapping)
    assert workflow.output_node == "9" and TEMPLATE["9"]["inputs"]["filename_prefix"]
    assert workflow.checkpoint_input() == ("CheckpointLoaderSimple", "ckpt_name")


def test_fill_puts_each_value_at_its_inputs_with_comfyuis_types():
    workflow = Workflow.load(DEFAULT_WORKFLOW)
    graph = workflow.fill(make_spec())
    sampler = graph["3"]["inputs"]
    assert (sampler["seed"], sampler["steps"], sampler["sampler_name"]) == (42, 30, "dpmpp_2m")
    assert sampler["cfg"] == 7.0 and isinstance(sampler["cfg"], float)
    assert graph["4"]["inputs"]["ckpt_name"] == "SDXL/sd_xl_base_1.0.safetensors"
    assert (graph["6"]["inputs"]["text"], graph["7"]["inputs"]["text"]) == ("a lighthouse", "blurry")
    assert (graph["5"]["inputs"]["width"], graph["5"]["inputs"]["height"]) == (832, 1216)
    assert workflow.graph == TEMPLATE                       # a copy was filled


def test_the_mapping_file_sits_next_to_the_template(tmp_path):
    assert mapping_path(tmp_path / "portrait.json") == tmp_path / "portrait.mapping.json"


@pytest.mark.parametrize("change, message", [
    (lambda g, m: m.update(prompt=[["66", "text"]]), "names node '66', which the template does not have"),
    (lambda g, m: m.update(prompt=[["6", "txt"]]), "names input 'txt' of node 6 (CLIPTextEncode), which has no such input"),
    (lambda g, m: m.update(prompt=[["6", "clip"]]), "which is linked to another node"),
    (lambda g, m: m.update(denoise=[["3", "denoise"]]), "unknown mapping key 'denoise'"),
    (lambda g, m: m.update(seed=["3", "seed"]), "must be a list of [node id, input name] pairs"),
    (lambda g, m: m.pop("prompt"), "must route 'prompt'"),
    (lambda g, m: m.update(output_node="99"), "output_node '99' is not a node"),
    (lambda g, m: g["6"].pop("class_type"), "node '6' is not an API-format node"),
])
def test_a_broken_pair_is_a_configuration_error(tmp_path, change, message):
    graph = json.loads(json.dumps(TEMPLATE))
    mapping = json.loads(mapping_path(DEFAULT_WORKFLOW).read_text())
    change(graph, mapping)
    with pytest.raises(ValueError) as err:
        Workflow.load(write_pair(tmp_path, graph, mapping))
    assert message in str(err.value)


def test_a_ui_format_export_is_recognised(tmp_path):
    with pytest.raises(ValueError, match=r"UI-format workflow; export it from ComfyUI with \"Save \(API format\)\""):
        Workflow.load(write_pair(tmp_path, {"nodes": [], "links": [], "version": 0.4}, {"prompt": []}))


def test_missing_files_are_named(tmp_path):
    with pytest.raises(ValueError, match="workflow template .*nope.json does not exist"):
        Workflow.load(tmp_path / "nope.json")
    (tmp_path / "alone.json").write_text(json.dumps(TEMPLATE))
    with pytest.raises(ValueError, match="workflow mapping .*alone.mapping.json does not exist"):
        Workflow.load(tmp_path / "alone.json")


def test_settings_and_the_factory():
    defaults = config.load_settings(ComfyUISettings, {})
    assert (defaults.comfyui_url, defaults.comfyui_workflow, config.load({}).job_timeout_seconds,
            defaults.comfyui_retry_seconds, defaults.comfyui_poll_seconds) == ("http://127.0.0.1:8188", "", 600.0,
                                                                               30.0, 1.0)
    env = {"GAZE_BACKEND": "comfyui", "GAZE_COMFYUI_URL": "http://gpu-3:8188/",
           "GAZE_COMFYUI_WORKFLOW": str(DEFAULT_WORKFLOW), "GAZE_COMFYUI_TIMEOUT_SECONDS": "90",
           "GAZE_COMFYUI_RETRY_SECONDS": "12", "GAZE_COMFYUI_POLL_SECONDS": "0.5"}
    backend = make_backend(config.load(env), env)       # the shared settings, and the backend's own
    assert isinstance(backend, ComfyUIBackend) and backend.name == "comfyui"
    assert (backend.url, backend.ws_url) == ("http://gpu-3:8188", "ws://gpu-3:8188/ws")
    assert (backend.timeout_seconds, backend.retry_seconds, backend.poll_seconds) == (90.0, 12.0, 0.5)
    assert backend.workflow.source == str(DEFAULT_WORKFLOW)
    # GAZE_JOB_TIMEOUT_SECONDS is the one limit of every backend; the old ComfyUI name still works
    assert config.load({"GAZE_JOB_TIMEOUT_SECONDS": "30", "GAZE_COMFYUI_TIMEOUT_SECONDS": "90"}).job_timeout_seconds == 30
    assert ComfyUIBackend("https://comfy.example/base").ws_url == "wss://comfy.example/base/ws"
    with pytest.raises(ValueError, match="must be an http"):
        ComfyUIBackend("gpu-3:8188")


def test_the_preview_backend_reports_the_configured_checkpoints_and_is_always_healthy():
    backend = make_backend(config.load({"GAZE_CHECKPOINTS": "A/a.safetensors,B/b.safetensors"}))
    assert isinstance(backend, PreviewBackend)
    assert backend.checkpoints() == ["A/a.safetensors", "B/b.safetensors"]
    assert backend.health() == (True, "preview backend")
