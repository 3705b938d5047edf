"""deploy/k8s rendered the way deploy/k8s/README.md documents (`kubectl kustomize`, which needs no cluster,
or `kustomize build`) is exactly what the unit tests' renderer checks (tests/unit/test_k8s_manifests.py);
and the nameko services' probe (deploy/k8s/probes/broker_connected.py) against a real TCP connection.
Both start processes or connect, hence here and not in tests/unit.

kubectl is on this project's machines (so CI renders with it) but nothing in the repository installs it:
on a machine with neither binary the render test is skipped, and the unit tests' renderer, which runs
everywhere, is the check that remains."""
import shutil
import socket
import subprocess

import pytest
import yaml

from tests.unit.test_k8s_manifests import OVERLAY, kustomize, load_probe_script


def documented_render():
    if shutil.which("kustomize"):
        command = ["kustomize", "build", str(OVERLAY)]
    elif shutil.which("kubectl"):
        command = ["kubectl", "kustomize", str(OVERLAY)]
    else:
        pytest.skip("neither kubectl nor kustomize is installed: the documented render is not compared with "
                    "tests/unit/test_k8s_manifests.py's renderer here (nothing in the repository installs them)")
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def keyed(objects):
    return {(obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"]): obj for obj in objects}


def test_the_documented_render_is_what_the_unit_tests_check():
    assert keyed(documented_render()) == keyed(kustomize(OVERLAY))


def test_the_services_probe_sees_a_real_broker_connection(monkeypatch):
    probe = load_probe_script()
    with socket.create_server(("127.0.0.1", 0)) as broker:
        port = broker.getsockname()[1]
        monkeypatch.setenv("GAZE_AMQP_URI", f"amqp://guest:guest@127.0.0.1:{port}/")
        assert probe.main() == 1
        with socket.create_connection(("127.0.0.1", port)):
            accepted, _ = broker.accept()
            with accepted:
                assert probe.main() == 0
