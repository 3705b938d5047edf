"""Each service's RPC contract is its typed client (shared/contracts/): every client method is the
service's own `@rpc` method (same name, same parameters), and no code outside the clients calls a
service by strings. Read from the code (AST and signatures), not by review."""
import ast
import inspect
from pathlib import Path

import pytest

from services.jobs.service import JobsService
from services.presets.service import PresetsService
from shared.contracts import jobs, presets

ROOT = Path(__file__).resolve().parents[2]


def rpc_methods(service_cls):
    return {name: fn for name, fn in inspect.getmembers(service_cls, inspect.isfunction)
            if getattr(fn, "nameko_entrypoints", None) and any(type(e).__name__ == "Rpc" for e in fn.nameko_entrypoints)}


@pytest.mark.parametrize("client, service, name", [(jobs.JobsClient, JobsService, jobs.SERVICE),
                                                   (presets.PresetsClient, PresetsService, presets.SERVICE)])
def test_every_client_method_is_the_services_rpc_method(client, service, name):
    assert service.name == name
    served = rpc_methods(service)
    offered = {n: fn for n, fn in inspect.getmembers(client, inspect.isfunction) if not n.startswith("_")}
    assert offered, "a client with no methods"
    for method, fn in offered.items():
        remote = method.removesuffix("_async")
        assert remote in served, f"{client.__name__}.{method}: the {name} service has no rpc method {remote!r}"
        params = list(inspect.signature(fn).parameters)[1:]
        assert params == list(inspect.signature(served[remote]).parameters)[1:], f"{client.__name__}.{method}"
    assert set(served) == {m.removesuffix("_async") for m in offered}, "an rpc method without a client method"


def string_rpc_calls(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        literal_args = [a for a in node.args[:2] if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        if isinstance(func, ast.Attribute) and func.attr in ("call", "call_async") and len(literal_args) == 2:
            yield node.lineno, ast.unparse(node)
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name in ("RpcProxy", "ServiceRpcProxy") and literal_args:
            yield node.lineno, ast.unparse(node)


def test_no_code_outside_the_clients_calls_a_service_by_strings():
    found = [f"{path.relative_to(ROOT)}:{line}: {code}"
             for top in ("services", "shared") for path in sorted((ROOT / top).rglob("*.py"))
             if "contracts" not in path.parts
             for line, code in string_rpc_calls(path)]
    assert found == []


def test_the_check_finds_a_string_call(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text('rpc.call("jobs", "get", 1)\nproxy = RpcProxy("jobs")\nrpc.call(service, method)\n')
    assert [line for line, _ in string_rpc_calls(sample)] == [1, 2]
