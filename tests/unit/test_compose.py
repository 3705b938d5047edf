"""docker-compose.yml against the Compose specification's JSON schema, plus the properties the stack
relies on. (No Docker engine here: images are not built, containers not run; see deploy/README.md.)

tests/data/compose_spec.json is the Compose specification schema as shipped in docker-compose 1.29.2
(compose/config/compose_spec.json, Apache-2.0)."""
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
NODES = ROOT / "docker-compose.nodes.yml"
PASSWORDS = {"RABBITMQ_PASSWORD": "a-broker-secret", "POSTGRES_PASSWORD": "a-database-secret"}


class Required(LookupError):
    """A ${VAR:?message} whose variable is unset or empty: compose stops with the message."""


def interpolated(text, env=None):
    """Compose substitutes ${VAR}, ${VAR:-default} and ${VAR:?error} in the file's text before it reads
    the YAML and validates it; do the same, with the defaults (or `env`), and stop on a required one."""
    env = {**PASSWORDS, **(env or {})}
    return interpolated_exactly(text, env)


def interpolated_exactly(text, env):
    def value(match):
        name, op, arg = match.group(1), match.group(2), match.group(3) or ""
        if env.get(name):
            return env[name]
        if op == ":?":
            raise Required(f"{name}: {arg}")
        return arg if op == ":-" else ""
    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:-|:\?)([^}]*))?\}", value, text)


def test_valid_against_the_compose_specification():
    schema = json.loads((ROOT / "tests" / "data" / "compose_spec.json").read_text())
    text = (ROOT / "docker-compose.yml").read_text()
    for env in ({}, {"GENERATORS": "4", "GAZE_BACKEND": "comfyui", "GPU_GENERATORS": "2"},
                {"GAZE_MEDIA_STORE": "s3", "GAZE_S3_ENDPOINT_URL": "http://minio:9000",
                 "GAZE_S3_ACCESS_KEY_ID": "gaze", "GAZE_S3_SECRET_ACCESS_KEY": "a-long-secret"}):
        resolved = yaml.safe_load(interpolated(text, env))
        jsonschema.Draft201909Validator(schema).validate(resolved)
        assert resolved["services"]["generator"]["deploy"]["replicas"] == int(env.get("GENERATORS", 1))


def test_every_gaze_service_waits_for_its_dependencies():
    for name in ("gateway", "presets", "jobs", "generator", "generator-gpu"):
        deps = SERVICES[name]["depends_on"]
        assert deps["rabbitmq"]["condition"] == "service_healthy"
        assert deps["postgres"]["condition"] == "service_healthy"
        assert deps["migrate"]["condition"] == "service_completed_successfully"
    for name in ("rabbitmq", "postgres", "gateway"):
        assert SERVICES[name]["healthcheck"]["test"]


def test_replicas_restart_and_gpu_reservation():
    assert SERVICES["generator"]["deploy"]["replicas"] == "${GENERATORS:-1}"
    assert all(SERVICES[n]["restart"] == "unless-stopped" for n in ("gateway", "presets", "jobs", "generator"))
    assert SERVICES["migrate"]["restart"] == "no"
    device = SERVICES["generator-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert SERVICES["generator-gpu"]["profiles"] == ["gpu"]
    assert SERVICES["generator"]["environment"]["GAZE_BACKEND"] == "${GAZE_BACKEND:-preview}"


def test_one_media_volume_is_shared_by_gateway_and_generators():
    for name in ("gateway", "generator", "generator-gpu"):
        assert "media:/data/media" in SERVICES[name]["volumes"]


def test_dockerfile_runs_unprivileged():
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "\nUSER gaze\n" in dockerfile and "useradd" in dockerfile


def test_every_gaze_service_gets_the_media_store_settings():
    text = (ROOT / "docker-compose.yml").read_text()
    local = yaml.safe_load(interpolated(text))["services"]
    s3 = yaml.safe_load(interpolated(text, {"GAZE_MEDIA_STORE": "s3", "GAZE_S3_ENDPOINT_URL": "http://minio:9000",
                                            "GAZE_S3_ACCESS_KEY_ID": "gaze",
                                            "GAZE_S3_SECRET_ACCESS_KEY": "a-long-secret"}))["services"]
    for name in ("migrate", "gateway", "presets", "jobs", "generator", "generator-gpu"):
        assert local[name]["environment"]["GAZE_MEDIA_STORE"] == "local"
        env = s3[name]["environment"]
        assert (env["GAZE_MEDIA_STORE"], env["GAZE_S3_ENDPOINT_URL"], env["GAZE_S3_BUCKET"]) == (
            "s3", "http://minio:9000", "gaze-media")
        assert env["GAZE_S3_ACCESS_KEY_ID"] == "gaze" and env["GAZE_S3_SECRET_ACCESS_KEY"] == "a-long-secret"
    # MinIO's root user is the key GAZE signs with, so the two cannot drift apart
    assert s3["minio"]["environment"] == {"MINIO_ROOT_USER": "gaze", "MINIO_ROOT_PASSWORD": "a-long-secret"}


@pytest.mark.parametrize("missing", sorted(PASSWORDS))
def test_no_password_falls_back_to_a_default(missing):
    text = (ROOT / "docker-compose.yml").read_text()
    with pytest.raises(Required, match=missing):
        interpolated_exactly(text, {name: value for name, value in PASSWORDS.items() if name != missing})
    for path in (ROOT / "docker-compose.yml", NODES, *sorted((ROOT / "deploy").glob("*"))):
        if path.is_file():
            assert not re.search(r"\$\{[A-Z_]*(PASSWORD|SECRET)[A-Z_]*:-[^}]", path.read_text()), path


def test_only_the_gateway_is_published_unless_the_nodes_override_is_used():
    resolved = yaml.safe_load(interpolated((ROOT / "docker-compose.yml").read_text()))["services"]
    assert [name for name, service in resolved.items() if service.get("ports")] == ["gateway"]
    schema = json.loads((ROOT / "tests" / "data" / "compose_spec.json").read_text())
    s3 = {"GAZE_S3_ACCESS_KEY_ID": "gaze", "GAZE_S3_SECRET_ACCESS_KEY": "a-long-secret"}
    nodes = yaml.safe_load(interpolated(NODES.read_text(), s3))
    jsonschema.Draft201909Validator(schema).validate(nodes)
    assert {name: service["ports"] for name, service in nodes["services"].items()} == {
        "rabbitmq": ["5672:5672"], "postgres": ["5432:5432"], "minio": ["9000:9000"]}
    for missing in s3:   # publishing the object store requires its credentials
        with pytest.raises(Required, match=missing):
            interpolated(NODES.read_text(), {name: value for name, value in s3.items() if name != missing})


def test_minio_is_optional_behind_the_s3_profile():
    minio = SERVICES["minio"]
    assert minio["profiles"] == ["s3"]
    assert minio["healthcheck"]["test"] and "minio:/data" in minio["volumes"]
    assert "minio" in COMPOSE["volumes"]
    # nothing that runs without the profile depends on it (compose refuses a dependency on a disabled service)
    for name, service in SERVICES.items():
        if "profiles" not in service:
            assert "minio" not in service.get("depends_on", {}), name
