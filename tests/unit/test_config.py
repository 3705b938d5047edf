"""Settings are declared once (shared/config.py): each field is read from GAZE_<FIELD NAME>, parsed by its
type or its own parser, and documented in the README."""
import dataclasses
from pathlib import Path

import pytest

from shared import config

ROOT = Path(__file__).resolve().parents[2]


def test_no_environment_means_the_declared_defaults():
    loaded, declared = config.load({}), config.Settings()
    for spec in dataclasses.fields(config.Settings):
        expected = getattr(declared, spec.name)
        if spec.name in ("media_root", "models_dir"):
            expected = str(Path(expected).resolve())
        assert getattr(loaded, spec.name) == expected, spec.name


@pytest.mark.parametrize("name, raw, value", [
    ("gateway_workers", "5", 5), ("rpc_timeout", "2.5", 2.5), ("gateway_workers", "", 2),
    ("checkpoints", " a.safetensors , b/c.ckpt ,", ["a.safetensors", "b/c.ckpt"]),
    ("metrics_token", "", ""), ("media_store", " S3 ", "s3"), ("log_format", "", "json"),
    ("s3_prefix", "/gaze/media/", "gaze/media"), ("rate_limit_submit", " 5/second ", "5/second"),
    ("media_root", "rel/media", str(Path("rel/media").resolve())), ("diffusers_config_dir", "", ""),
])
def test_each_field_comes_from_its_own_variable(name, raw, value):
    extra = {"GAZE_MEDIA_STORE": "s3", "GAZE_S3_BUCKET": "b"} if name == "media_store" else {}
    assert getattr(config.load({config.env_name(name): raw, **extra}), name) == value


def test_an_old_name_is_still_read_and_the_new_one_wins():
    assert config.load({"GAZE_COMFYUI_TIMEOUT_SECONDS": "90"}).job_timeout_seconds == 90
    assert config.load({"GAZE_COMFYUI_TIMEOUT_SECONDS": "90", "GAZE_JOB_TIMEOUT_SECONDS": "30"}).job_timeout_seconds == 30


def test_every_setting_is_documented():
    text = (ROOT / "README.md").read_text() + (ROOT / "deploy" / "README.md").read_text()
    missing = [config.env_name(f.name) for f in dataclasses.fields(config.Settings) if config.env_name(f.name) not in text]
    assert missing == []
