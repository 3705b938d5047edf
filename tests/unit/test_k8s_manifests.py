"""deploy/k8s (Kustomize base + example overlay) rendered and checked offline: every Kubernetes object against
the API schemas of kubernetes-validate (pinned in pyproject.toml), the KEDA ScaledObject against the CRD
committed in deploy/k8s/schemas/, and the properties the deployment relies on (credentials only from
Secrets, probes on the endpoints that tell the truth, a grace period that lets a generator finish its jobs,
GPU requests, selectors that match). No cluster has run these manifests (deploy/k8s/README.md).

Rendering: unit tests start no process (tests/unit/conftest.py), so the overlay is rendered here by
`kustomize()`, a small renderer of the Kustomize features the manifests use (resources, namespace, images,
replicas, JSON 6902 patches); any other field fails the render instead of being ignored."""
from __future__ import annotations

import dataclasses
import importlib.util
import math
import re
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from services.generator.backends import BUNDLED, backend_class
from shared import config, events
from tests.fakes import FakeProbes
from tests.helpers import app_client, gateway_settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAY = K8S / "overlays" / "example"
KEDA_CRD = K8S / "schemas" / "keda.sh_scaledobjects.yaml"
PROBE_SCRIPT = K8S / "probes" / "broker_connected.py"
KUBERNETES_VERSION = "1.32"     # the API the objects are validated against (kubernetes-validate's schemas)

# settings whose values are credentials: a manifest may only take them from a Secret
CREDENTIALS = {"GAZE_AMQP_URI", "GAZE_DATABASE_URL", "GAZE_REDIS_URL", "GAZE_S3_ACCESS_KEY_ID",
               "GAZE_S3_SECRET_ACCESS_KEY", "GAZE_METRICS_TOKEN", "GAZE_ADMIN_PASSWORD"}
WORKLOADS = ("Deployment", "Job")
CLUSTER_SCOPED = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding",
                  "PersistentVolume", "StorageClass", "PriorityClass", "IngressClass"}
WORKER_KILL_SECONDS = 10        # a job past its time limit that does not stop: its worker is killed this much later


# ---- the renderer -----------------------------------------------------------------------------------

class Unsupported(ValueError):
    """A kustomization uses something `kustomize()` does not implement."""


def kustomize(directory: Path) -> list[dict]:
    """The objects `kubectl kustomize <directory>` prints, for the features listed in the module's docstring."""
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(spec) - {"apiVersion", "kind", "resources", "namespace", "images", "replicas", "patches"}
    if unknown:
        raise Unsupported(f"{directory}: {sorted(unknown)}")
    objects = []
    for entry in spec.get("resources", []):
        path = directory / entry
        objects += kustomize(path) if path.is_dir() else [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for patch in spec.get("patches", []):
        operations = yaml.safe_load(patch["patch"] if "patch" in patch else (directory / patch["path"]).read_text())
        if not isinstance(operations, list):
            raise Unsupported(f"{directory}: only JSON 6902 patches (a list of operations)")
        targets = [obj for obj in objects if _matches(obj, patch["target"])]
        if not targets:
            raise ValueError(f"{directory}: the patch's target {patch['target']} matches nothing")
        for obj in targets:
            for operation in operations:
                _json_patch(obj, operation)
    for image in spec.get("images", []):
        for obj in objects:
            for container in _containers(obj):
                container["image"] = _new_image(container["image"], image)
    for replicas in spec.get("replicas", []):
        matched = [obj for obj in objects if obj["kind"] in ("Deployment", "StatefulSet", "ReplicaSet")
                   and obj["metadata"]["name"] == replicas["name"]]
        if not matched:
            raise ValueError(f"{directory}: replicas for {replicas['name']}, which is not there")
        for obj in matched:
            obj["spec"]["replicas"] = replicas["count"]
    if "namespace" in spec:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = spec["namespace"]
    return objects


def _matches(obj, target):
    group, _, version = obj["apiVersion"].rpartition("/")
    wanted = {"kind": obj["kind"], "name": obj["metadata"]["name"], "group": group, "version": version}
    return all(wanted[key] == value for key, value in target.items())


def _json_patch(obj, operation):
    """One RFC 6902 operation: add, replace or remove."""
    op = operation["op"]
    *parents, last = [part.replace("~1", "/").replace("~0", "~") for part in operation["path"].split("/")[1:]]
    node = obj
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key = (len(node) if last == "-" else int(last)) if isinstance(node, list) else last
    if op in ("remove", "replace") and (key >= len(node) if isinstance(node, list) else key not in node):
        raise KeyError(f"JSON patch: {op} {operation['path']}, which is not there")
    if op == "remove":
        del node[key]
    elif op == "replace" or (op == "add" and not isinstance(node, list)):
        node[key] = operation["value"]
    elif op == "add":
        node.insert(key, operation["value"])
    else:
        raise Unsupported(f"JSON patch operation {op!r}")


def _containers(obj):
    """Every container of a pod template anywhere in the object (Deployment, Job, ...)."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                yield from value
            else:
                yield from _containers(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from _containers(value)


def _new_image(image, change):
    """Kustomize's images transformer: an image whose name (tag and digest aside) is change["name"] gets
    newName, newTag or digest."""
    name, at, digest = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    name, tag = (name[:colon], name[colon + 1:]) if colon > slash else (name, "")
    if name != change["name"]:
        return image
    name = change.get("newName", name)
    if "digest" in change:
        return f"{name}@{change['digest']}"
    tag = change.get("newTag", tag)
    return name + (f":{tag}" if tag else "") + (f"@{digest}" if at and "newTag" not in change else "")


# ---- the rendered overlay -----------------------------------------------------------------------------

OBJECTS = kustomize(OVERLAY)


def objects(kind):
    return [obj for obj in OBJECTS if obj["kind"] == kind]


def the(kind, name):
    [obj] = [obj for obj in objects(kind) if obj["metadata"]["name"] == name]
    return obj


def pod_spec(workload):
    return workload["spec"]["template"]["spec"]


def containers_of(kind):
    """(workload name, container) for every container of every `kind`, init containers included."""
    return [(obj["metadata"]["name"], container) for obj in objects(kind)
            for container in pod_spec(obj).get("initContainers", []) + pod_spec(obj)["containers"]]


def env_of(container):
    return {item["name"]: item for item in container.get("env", [])}


def declared_settings():
    """Every GAZE_ variable the settings declare: the shared ones and each bundled backend's own, with the
    older names still read."""
    classes = [config.Settings, *(backend_class(name).settings_class for name in BUNDLED
                                  if hasattr(backend_class(name), "settings_class"))]
    return {name for cls in classes for spec in dataclasses.fields(cls)
            for name in (config.env_name(spec.name), *spec.metadata.get("aliases", ()))}


def manifest_texts():
    return {path: path.read_text() for path in sorted(K8S.rglob("*"))
            if path.is_file() and path.suffix in (".yaml", ".md", ".py") and path.parent != KEDA_CRD.parent}


# ---- the renderer against what it stands for -----------------------------------------------------------

def test_the_renderer_refuses_what_it_does_not_implement(tmp_path):
    (tmp_path / "kustomization.yaml").write_text("resources: []\ncommonLabels: {team: a}\n")
    with pytest.raises(Unsupported):
        kustomize(tmp_path)


def test_the_renderer_applies_the_overlay():
    kinds = {(obj["kind"], obj["metadata"]["name"]) for obj in OBJECTS}
    assert ("Namespace", "gaze-example") in kinds and ("ScaledObject", "gaze-generator") in kinds
    assert {obj["metadata"].get("namespace") for obj in OBJECTS if obj["kind"] != "Namespace"} == {"gaze-example"}
    images = {container["image"] for _, container in containers_of("Deployment") + containers_of("Job")}
    assert images == {"registry.example.com/gaze:0.1.0", "registry.example.com/gaze-diffusers:0.1.0"}
    assert the("Deployment", "gaze-gateway")["spec"]["replicas"] == 3
    assert the("ScaledObject", "gaze-generator")["spec"]["minReplicaCount"] == 0
    assert _new_image("gaze@sha256:ab", {"name": "gaze", "newName": "r:5000/gaze"}) == "r:5000/gaze@sha256:ab"
    assert _new_image("r:5000/gaze", {"name": "r:5000/gaze", "newTag": "1"}) == "r:5000/gaze:1"


# ---- schemas -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("obj", [obj for obj in OBJECTS if obj["kind"] != "ScaledObject"],
                         ids=lambda obj: f"{obj['kind']}/{obj['metadata']['name']}")
def test_valid_kubernetes_object(obj):
    # strict: a field the API does not know (a typo, a field of another version) fails, as kubectl's
    # server-side field validation would
    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def strict_openapi(schema):
    """The CRD's structural schema as JSON Schema, with unknown fields refused where the API server would
    prune them (kubectl apply's strict field validation rejects them): objects that list their
    properties and keep no others."""
    if isinstance(schema, list):
        return [strict_openapi(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {key: strict_openapi(value) for key, value in schema.items()}
    if ("properties" in schema and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        strict["additionalProperties"] = False
    return strict


def keda_schema():
    [crd] = [doc for doc in yaml.safe_load_all(KEDA_CRD.read_text()) if doc]
    [served] = [version for version in crd["spec"]["versions"] if version["storage"]]
    return crd["spec"]["group"] + "/" + served["name"], strict_openapi(served["schema"]["openAPIV3Schema"])


def test_scaled_object_valid_against_the_keda_crd():
    api_version, schema = keda_schema()
    scaled = the("ScaledObject", "gaze-generator")
    assert scaled["apiVersion"] == api_version
    jsonschema.Draft7Validator(schema).validate(scaled)
    # the CRD's CEL rule (x-kubernetes-validations), which JSON Schema cannot say
    assert scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]
    misspelt = {**scaled, "spec": {**scaled["spec"], "minReplicas": 0}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate(misspelt)


# ---- credentials and settings ----------------------------------------------------------------------------------

def test_no_secret_or_config_map_holds_a_credential():
    for secret in objects("Secret"):
        assert not secret.get("data") and not secret.get("stringData"), secret["metadata"]["name"]
    for config_map in objects("ConfigMap"):
        assert CREDENTIALS.isdisjoint(config_map.get("data", {})), config_map["metadata"]["name"]


def test_every_credential_comes_from_a_required_secret():
    used = set()
    for kind in WORKLOADS:
        for workload, container in containers_of(kind):
            for name, item in env_of(container).items():
                if name in CREDENTIALS:
                    ref = item.get("valueFrom", {}).get("secretKeyRef")
                    assert ref and not ref.get("optional", False), f"{workload}: {name} needs a required secretKeyRef"
                    used.add(name)
    # the credentials the services cannot run without are all there; GAZE_ADMIN_PASSWORD is only read by
    # `gaze init` / `gaze up`, which the cluster does not run
    assert used == CREDENTIALS - {"GAZE_ADMIN_PASSWORD"}


def test_the_readme_creates_every_secret_the_pods_read():
    wanted = {(item["valueFrom"]["secretKeyRef"]["name"], item["valueFrom"]["secretKeyRef"]["key"])
              for kind in WORKLOADS for _, container in containers_of(kind)
              for item in container.get("env", []) if "secretKeyRef" in item.get("valueFrom", {})}
    commands = (K8S / "README.md").read_text().replace("\\\n", " ")
    created = {(name, key) for name, rest in re.findall(r"create secret generic ([\w-]+)([^\n]*)", commands)
               for key in re.findall(r"--from-(?:literal|file)=([\w.-]+)=", rest)}
    assert wanted <= created, sorted(wanted - created)


def readme_section(title):
    text = (K8S / "README.md").read_text()
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def selected_by(selector):
    key, _, value = selector.partition("=")
    return [obj for obj in OBJECTS if obj["metadata"].get("labels", {}).get(key) == value]


@pytest.mark.parametrize("section", ["First start", "Upgrades"])
def test_the_readme_applies_what_the_migration_job_reads_before_waiting_for_it(section):
    """The Job runs before anything else is applied, so the README applies it by label (-l), with the
    ConfigMaps its containers read: a missing one keeps the pod from starting, and the wait times out."""
    steps = readme_section(section).split("wait --for=condition=complete job/gaze-migrate")[0]
    applied = [obj for selector in re.findall(r"apply -k \S+ -l (\S+)", steps) for obj in selected_by(selector)]
    assert ("Job", "gaze-migrate") in {(obj["kind"], obj["metadata"]["name"]) for obj in applied}
    spec = pod_spec(the("Job", "gaze-migrate"))
    read = {ref["configMapRef"]["name"] for container in spec["initContainers"] + spec["containers"]
            for ref in container.get("envFrom", []) if "configMapRef" in ref}
    assert read and read <= {obj["metadata"]["name"] for obj in applied if obj["kind"] == "ConfigMap"}
    assert {obj["kind"] for obj in applied} <= {"Job", "ConfigMap"}   # no service starts before the Job ends


def test_every_container_on_the_broker_reads_one_delivery_limit():
    """Every queue's x-delivery-limit is GAZE_MAX_ATTEMPTS (shared/broker.py) and RabbitMQ refuses a queue
    declared again with another: every container with GAZE_AMQP_URI takes it from the one ConfigMap."""
    assert the("ConfigMap", "gaze-config")["data"]["GAZE_MAX_ATTEMPTS"] == str(config.Settings.max_attempts)
    on_the_broker = [(workload, container) for kind in WORKLOADS for workload, container in containers_of(kind)
                     if "GAZE_AMQP_URI" in env_of(container)]
    assert {workload for workload, _ in on_the_broker} >= {"gaze-gateway", "gaze-generator", "gaze-migrate"}
    for workload, container in on_the_broker:
        assert {"configMapRef": {"name": "gaze-config"}} in container.get("envFrom", []), workload
        assert "GAZE_MAX_ATTEMPTS" not in env_of(container), workload


def test_the_readmes_broker_uri_lists_three_cluster_nodes():
    from kombu import Connection

    [uri] = re.findall(r"printf '%s' '(amqp[^']*)' > amqp-uri", readme_section("Secrets"))
    connection = Connection(uri)    # kombu's failover syntax, as the services read GAZE_AMQP_URI; nothing connects
    hosts = [alternative.split("@", 1)[1].split(":", 1)[0] for alternative in connection.alt]
    assert len(set(hosts)) == 3, hosts
    assert not connection.connected


def test_every_gaze_setting_named_is_declared():
    declared = declared_settings()
    for path, text in manifest_texts().items():
        unknown = sorted(set(re.findall(r"\bGAZE_[A-Z0-9_]+", text)) - declared)
        assert unknown == [], f"{path.relative_to(ROOT)} names settings shared/config.py does not declare"


# ---- workloads -------------------------------------------------------------------------------------------------

def test_every_container_has_resources_and_every_long_running_one_probes():
    for kind in WORKLOADS:
        for workload, container in containers_of(kind):
            resources = container.get("resources", {})
            assert {"cpu", "memory"} <= set(resources.get("requests", {})), workload
            assert "memory" in resources.get("limits", {}), workload
            if kind == "Deployment":
                assert "readinessProbe" in container and "livenessProbe" in container, workload


def test_named_probe_ports_exist_and_selectors_match_their_pods():
    deployments = objects("Deployment")
    for deployment in deployments:
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        for container in pod_spec(deployment)["containers"]:
            ports = {port["name"] for port in container.get("ports", [])}
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                port = container.get(probe, {}).get("httpGet", {}).get("port")
                assert port is None or port in ports, f"{deployment['metadata']['name']} {probe}: {port}"

    def selected(selector):
        return [d["metadata"]["name"] for d in deployments
                if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
    for budget in objects("PodDisruptionBudget"):
        assert selected(budget["spec"]["selector"]["matchLabels"]) == [budget["metadata"]["name"]]
    assert selected(the("Service", "gaze-gateway")["spec"]["selector"]) == ["gaze-gateway"]
    budgets = {budget["metadata"]["name"] for budget in objects("PodDisruptionBudget")}
    assert budgets == {deployment["metadata"]["name"] for deployment in deployments}


def test_the_commands_are_the_projects_own():
    from operations.cli import main
    from operations.registry import NAMEKO_SERVICES

    commands = {(name, container["name"]): container["command"]
                for kind in WORKLOADS for name, container in containers_of(kind)}
    assert commands.pop(("gaze-migrate", "migrate")) == ["gaze", "migrate"]
    assert commands.pop(("gaze-migrate", "migrate-queues")) == ["gaze", "migrate-queues"]
    gateway = commands.pop(("gaze-gateway", "gateway"))
    assert gateway[0] == "gunicorn" and importlib.util.find_spec("services.gateway.asgi") is not None
    assert gateway == ["gunicorn", "--config", "python:services.gateway.gunicorn_conf", "services.gateway.asgi:app"]
    assert {key: command[:2] for key, command in commands.items()} == {key: ["gaze", "service"] for key in commands}
    assert {command[2] for command in commands.values()} == set(NAMEKO_SERVICES)
    for command in [["gaze", "migrate"], ["gaze", "migrate-queues"], *commands.values()]:
        with pytest.raises(SystemExit) as usage:   # argparse: --help exits 0, an unknown command 2
            main([*command[1:], "--help"])
        assert usage.value.code == 0, f"{' '.join(command)}: not a command of operations/cli.py"


def test_the_migration_job_migrates_the_database_then_the_queues():
    """The database first (an init container), then the broker's queues, each step with its own credential
    only; the pod runs once (a failure is a new pod, from the first step again)."""
    job = the("Job", "gaze-migrate")
    spec = pod_spec(job)
    assert spec["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] >= 1
    steps = [(container["command"], set(env_of(container))) for container in spec["initContainers"] + spec["containers"]]
    assert steps == [(["gaze", "migrate"], {"GAZE_DATABASE_URL"}), (["gaze", "migrate-queues"], {"GAZE_AMQP_URI", "GAZE_DATABASE_URL"})]
    assert [container["name"] for container in spec["containers"]] == ["migrate-queues"]


# ---- the gateway -------------------------------------------------------------------------------------------------

def gateway_probe(name):
    [container] = pod_spec(the("Deployment", "gaze-gateway"))["containers"]
    path, _, query = container[name]["httpGet"]["path"].partition("?")
    return path, query


def test_the_gateways_readiness_does_not_wait_for_a_generator(tmp_path):
    """With minReplicaCount 0 no generator runs until a job waits, and jobs arrive only through a ready
    gateway: the probe, asked of the real app, answers 200 with no replica, 503 when this gateway cannot serve."""
    path, query = gateway_probe("readinessProbe")
    no_generator = FakeProbes(answers={("jobs", "replicas"): []})
    client = app_client(gateway_settings(tmp_path / "media"), probes=no_generator)
    assert client.simulate_get(path, query_string=query).status_code == 200
    database_down = FakeProbes(answers={("jobs", "replicas"): []}, database_error=RuntimeError("db down"))
    client = app_client(gateway_settings(tmp_path / "media"), probes=database_down)
    assert client.simulate_get(path, query_string=query).status_code == 503


def test_the_gateways_liveness_touches_nothing(tmp_path):
    path, query = gateway_probe("livenessProbe")
    probes = FakeProbes(database_error=RuntimeError("db down"))
    result = app_client(gateway_settings(tmp_path / "media"), probes=probes).simulate_get(path, query_string=query)
    assert result.status_code == 200 and probes.calls == []


def test_the_gateway_service_exposes_port_5782():
    [port] = the("Service", "gaze-gateway")["spec"]["ports"]
    [container] = pod_spec(the("Deployment", "gaze-gateway"))["containers"]
    assert port["port"] == 5782
    assert {p["name"]: p["containerPort"] for p in container["ports"]}[port["targetPort"]] == 5782


# ---- generators ------------------------------------------------------------------------------------------------

def generator():
    deployment = the("Deployment", "gaze-generator")
    [container] = pod_spec(deployment)["containers"]
    plain_values = {name: item["value"] for name, item in env_of(container).items() if "value" in item}
    return deployment, container, config.load(plain_values)


def test_the_generator_asks_for_a_gpu_node():
    deployment, container, _ = generator()
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1   # extended resources: limit = request
    assert pod_spec(deployment)["nodeSelector"]
    assert any(t["key"] == "nvidia.com/gpu" for t in pod_spec(deployment)["tolerations"])


def test_a_stopping_generator_has_time_to_finish_the_jobs_it_holds():
    deployment, _, settings = generator()
    # it finishes every job it holds, one after the other, each stopped at the time limit (its worker
    # killed a little later if it does not stop)
    longest = settings.generator_prefetch * (settings.job_timeout_seconds + WORKER_KILL_SECONDS)
    assert pod_spec(deployment)["terminationGracePeriodSeconds"] >= longest + 30


def test_the_generators_probes_ask_its_own_health_endpoint():
    _, container, settings = generator()
    assert settings.generator_health_bind
    port = int(settings.generator_health_bind.rpartition(":")[2])
    assert {p["name"]: p["containerPort"] for p in container["ports"]}["health"] == port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == "health"
    # liveness gives the replica time to replace a stuck worker itself before the pod is restarted
    liveness = container["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] > settings.worker_stall_seconds


def test_keda_owns_the_generators_count_and_scales_on_the_backlog():
    deployment, _, _ = generator()
    assert "replicas" not in deployment["spec"]
    scaled = the("ScaledObject", "gaze-generator")
    assert scaled["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gaze-generator"}
    [trigger] = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    query = trigger["metadata"]["query"]
    assert "gaze_backlog_jobs" in query
    # the metrics and label values it reads are the gateway's
    metrics_source = (ROOT / "services" / "gateway" / "ops" / "metrics.py").read_text()
    for metric in re.findall(r"\b(gaze_\w+)", query):
        assert f'"{metric}"' in metrics_source, metric
    for state in re.findall(r'state="(\w+)"', query):
        assert state in events.REPLICA_STATES
    assert math.isclose(float(trigger["metadata"]["threshold"]), 1.0)


# ---- the nameko services' probe ---------------------------------------------------------------------------------

def load_probe_script():
    spec = importlib.util.spec_from_file_location("broker_connected", PROBE_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_services_probe_is_in_the_image():
    # deploy/Dockerfile copies deploy/ to /app/deploy in the image every component runs
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert re.search(r"^COPY (--chown=\S+ )?deploy /app/deploy$", dockerfile, re.M)
    for name in ("gaze-presets", "gaze-jobs", "gaze-webhooks"):
        [container] = pod_spec(the("Deployment", name))["containers"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            command = container[probe]["exec"]["command"]
            assert command[1] == "/app/" + str(PROBE_SCRIPT.relative_to(ROOT)), (name, probe)


# /proc/net/tcp rows: local address, remote address (hex IP:port), state (01 = established, 0A = listening)
TCP_TABLE = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1628 00000000:0000 0A 00000000:00000000 00:00000000 00000000   106        0 233066 1
   1: 0A00000B:C350 0A000007:{port} {state} 00000000:00000000 00:00000000 00000000 10001        0 433066 1
"""


@pytest.mark.parametrize("uri, port, state, healthy", [
    ("amqp://gaze:pw@rabbitmq:5672/", "1628", "01", True),              # 5672, established
    ("amqp://gaze:pw@rabbitmq/", "1628", "01", True),                   # the default port
    ("amqp://gaze:pw@rabbitmq:5672/", "1628", "08", False),             # CLOSE_WAIT: the broker hung up
    ("amqp://gaze:pw@rabbitmq:5672/", "1538", "01", False),             # connected to something else
    ("amqps://gaze:pw@a:5671/;amqps://gaze:pw@b:5671/", "1627", "01", True),   # a cluster over TLS
])
def test_the_services_probe_wants_an_established_broker_connection(tmp_path, monkeypatch, capsys,
                                                                   uri, port, state, healthy):
    probe = load_probe_script()
    table = tmp_path / "tcp"
    table.write_text(TCP_TABLE.format(port=port, state=state))
    monkeypatch.setattr(probe, "TCP_TABLES", (str(table), str(tmp_path / "no-tcp6")))
    monkeypatch.setenv("GAZE_AMQP_URI", uri)
    assert probe.main() == (0 if healthy else 1)
    assert ("no established connection" in capsys.readouterr().out) is not healthy
