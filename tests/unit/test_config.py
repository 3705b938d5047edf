"""Settings are declared once: the shared ones in shared/config.py, each backend's own beside it
(services/generator/backends: its `settings_class`). Each field is read from GAZE_<FIELD NAME> by the one
loader, parsed by its type or its own parser, and documented in the README; no GAZE_ variable is read
anywhere else."""
import ast
import dataclasses
from pathlib import Path

import pytest

from services.generator.backends import BUNDLED, backend_class, make_backend, own_settings
from services.generator.backends.comfyui import ComfyUIBackend, ComfyUISettings
from services.generator.backends.diffusers_backend import DiffusersBackend, DiffusersSettings
from services.generator.backends.preview import PreviewBackend
from services.generator.backends.simulated import SimulatedGpuBackend, SimulatedSettings
from shared import config

ROOT = Path(__file__).resolve().parents[2]
BACKEND_SETTINGS = [backend_class(name).settings_class for name in BUNDLED
                    if hasattr(backend_class(name), "settings_class")]
EVERY_SETTINGS_CLASS = [config.Settings, *BACKEND_SETTINGS]
SCANNED = ("services", "shared", "operations")
# (file, variable) -> why it is read there and not declared as a setting; none so far
ALLOWED_READS = {}


def test_the_bundled_backends_declare_their_own_settings():
    assert BACKEND_SETTINGS == [SimulatedSettings, ComfyUISettings, DiffusersSettings]
    assert own_settings(PreviewBackend) is None     # its only option, GAZE_CHECKPOINTS, is shared
    shared = {spec.name for spec in dataclasses.fields(config.Settings)}
    for cls in BACKEND_SETTINGS:
        assert shared.isdisjoint(spec.name for spec in dataclasses.fields(cls)), cls.__name__


@pytest.mark.parametrize("cls", EVERY_SETTINGS_CLASS, ids=lambda cls: cls.__name__)
def test_no_environment_means_the_declared_defaults(cls):
    loaded, declared = config.load_settings(cls, {}), cls()
    for spec in dataclasses.fields(cls):
        expected = getattr(declared, spec.name)
        if spec.metadata.get("parse") is config.resolved_path:
            expected = str(Path(expected).resolve())
        assert getattr(loaded, spec.name) == expected, spec.name
    if cls is config.Settings:
        assert config.load({}) == loaded


@pytest.mark.parametrize("name, raw, value", [
    ("gateway_workers", "5", 5), ("rpc_timeout", "2.5", 2.5), ("gateway_workers", "", 2),
    ("checkpoints", " a.safetensors , b/c.ckpt ,", ["a.safetensors", "b/c.ckpt"]),
    ("metrics_token", "", ""), ("media_store", " S3 ", "s3"), ("log_format", "", "json"),
    ("s3_prefix", "/gaze/media/", "gaze/media"), ("rate_limit_submit", " 5/second ", "5/second"),
    ("media_root", "rel/media", str(Path("rel/media").resolve())),
    ("run_dir", "rel/run", str(Path("rel/run").resolve())), ("admin_password", "s3cret", "s3cret"),
])
def test_each_field_comes_from_its_own_variable(name, raw, value):
    extra = {"GAZE_MEDIA_STORE": "s3", "GAZE_S3_BUCKET": "b"} if name == "media_store" else {}
    assert getattr(config.load({config.env_name(name): raw, **extra}), name) == value


@pytest.mark.parametrize("cls, name, raw, value", [
    (ComfyUISettings, "comfyui_url", "http://gpu-3:8188/", "http://gpu-3:8188/"),
    (ComfyUISettings, "comfyui_retry_seconds", "12", 12.0), (ComfyUISettings, "comfyui_poll_seconds", "", 1.0),
    (SimulatedSettings, "simulated_gpu_seconds", "0.05", 0.05),
    (DiffusersSettings, "models_dir", "rel/models", str(Path("rel/models").resolve())),
    (DiffusersSettings, "diffusers_config_dir", "", ""),
    (DiffusersSettings, "diffusers_config_dir", "rel/configs", str(Path("rel/configs").resolve())),
    (DiffusersSettings, "diffusers_device", "cuda:1", "cuda:1"),
])
def test_each_backend_field_comes_from_its_own_variable(cls, name, raw, value):
    assert getattr(config.load_settings(cls, {config.env_name(name): raw}), name) == value


def test_the_backend_is_built_from_its_own_settings_in_the_environment_it_is_given():
    simulated = make_backend(config.load({"GAZE_BACKEND": "simulated"}), {"GAZE_SIMULATED_GPU_SECONDS": "0.7"})
    assert isinstance(simulated, SimulatedGpuBackend) and simulated.seconds == 0.7
    assert make_backend(config.load({"GAZE_BACKEND": "simulated"}), {}).seconds == 0.2
    diffusers = make_backend(config.load({"GAZE_BACKEND": "diffusers"}),
                             {"GAZE_MODELS_DIR": "/srv/models", "GAZE_DIFFUSERS_DEVICE": "cpu"})
    assert isinstance(diffusers, DiffusersBackend)
    assert (diffusers.models_dir, diffusers.config_dir) == (Path("/srv/models"), Path("/srv/models/diffusers-configs"))
    assert diffusers.device == "cpu"
    comfyui = make_backend(config.load({"GAZE_BACKEND": "comfyui", "GAZE_JOB_TIMEOUT_SECONDS": "45"}),
                           {"GAZE_COMFYUI_URL": "http://gpu-3:8188/", "GAZE_COMFYUI_RETRY_SECONDS": "12"})
    assert isinstance(comfyui, ComfyUIBackend)
    assert (comfyui.url, comfyui.timeout_seconds, comfyui.retry_seconds) == ("http://gpu-3:8188", 45.0, 12.0)


def test_an_old_name_is_still_read_and_the_new_one_wins():
    assert config.load({"GAZE_COMFYUI_TIMEOUT_SECONDS": "90"}).job_timeout_seconds == 90
    assert config.load({"GAZE_COMFYUI_TIMEOUT_SECONDS": "90", "GAZE_JOB_TIMEOUT_SECONDS": "30"}).job_timeout_seconds == 30
    # the old ComfyUI-only name still sets the ComfyUI backend's limit, now every backend's
    comfyui = make_backend(config.load({"GAZE_BACKEND": "comfyui", "GAZE_COMFYUI_TIMEOUT_SECONDS": "90"}), {})
    assert comfyui.timeout_seconds == 90


def test_the_loader_takes_any_settings_dataclass():
    @dataclasses.dataclass(frozen=True)
    class PluginSettings:       # annotations as real types here, strings under `from __future__ import annotations`
        plugin_seconds: float = 1.5
        plugin_hosts: list = config.setting(default_factory=list)
        plugin_mode: str = config.setting("fast", parse=config.choice, aliases=("GAZE_OLD_PLUGIN_MODE",))

    assert config.load_settings(PluginSettings, {}) == PluginSettings()
    loaded = config.load_settings(PluginSettings, {"GAZE_PLUGIN_SECONDS": "2", "GAZE_PLUGIN_HOSTS": "a, b",
                                                   "GAZE_OLD_PLUGIN_MODE": " Slow "})
    assert loaded == PluginSettings(2.0, ["a", "b"], "slow")


def test_each_setting_is_declared_once():
    names = [name for cls in EVERY_SETTINGS_CLASS for spec in dataclasses.fields(cls)
             for name in (config.env_name(spec.name), *spec.metadata.get("aliases", ()))]
    assert sorted({name for name in names if names.count(name) > 1}) == []
    assert "GAZE_COMFYUI_TIMEOUT_SECONDS" in names and "GAZE_SIMULATED_GPU_SECONDS" in names


def test_every_setting_is_documented():
    text = (ROOT / "README.md").read_text() + (ROOT / "deploy" / "README.md").read_text()
    missing = [config.env_name(spec.name) for cls in EVERY_SETTINGS_CLASS for spec in dataclasses.fields(cls)
               if config.env_name(spec.name) not in text]
    assert missing == []


# ---- no GAZE_ variable read outside the settings


def gaze_reads(source: str) -> list[str]:
    """The GAZE_ variables `source` reads by name: os.environ.get / getenv / pop / setdefault, env["..."],
    "..." in env; writes (dict(os.environ, GAZE_X=...), env["GAZE_X"] = ...) are not reads."""
    def gaze(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("GAZE_"):
            return node.value
        if isinstance(node, ast.JoinedStr) and node.values and gaze(node.values[0]):
            return ast.unparse(node)
        return None

    reads = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in ("get", "getenv", "pop", "setdefault") and gaze(node.args[0]):
                reads.append(gaze(node.args[0]))
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and gaze(node.slice):
            reads.append(gaze(node.slice))
        elif (isinstance(node, ast.Compare) and isinstance(node.ops[0], (ast.In, ast.NotIn))
              and gaze(node.left)):
            reads.append(gaze(node.left))
    return reads


def test_the_scan_finds_every_way_of_reading_a_variable():
    source = '''import os
from os import environ, getenv
a = os.environ.get("GAZE_A") or os.getenv("GAZE_B") or getenv("GAZE_C", "")
b = os.environ["GAZE_D"], environ.pop("GAZE_E", None), "GAZE_F" in os.environ, env.get(f"GAZE_{name}")
env = dict(os.environ, GAZE_WRITTEN="1")
env["GAZE_ALSO_WRITTEN"] = "1"
os.environ.get("PATH")
'''
    assert gaze_reads(source) == ["GAZE_A", "GAZE_B", "GAZE_C", "GAZE_D", "GAZE_E", "GAZE_F", "f'GAZE_{name}'"]


def test_no_gaze_variable_is_read_outside_the_settings():
    found = {}
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            for name in gaze_reads(path.read_text()):
                if (relative, name) not in ALLOWED_READS:
                    found.setdefault(relative, []).append(name)
    assert found == {}, "declare these as settings (shared/config.py, or beside their backend) and read those"
