"""ComfyUI's side of a job, part 1: the workflow template (ComfyUI's API format) and the mapping that says
which node inputs take which of the job's values (`<template>.mapping.json` beside `<template>.json`).
Checked once, when the backend is built; filled once per job."""
from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from pathlib import Path

WORKFLOWS_DIR = Path(__file__).with_name("workflows")
DEFAULT_WORKFLOW = WORKFLOWS_DIR / "txt2img_sdxl.json"

# GenerationSpec fields a mapping may route into the graph, and the JSON type each is sent as.
MAPPABLE_FIELDS = {
    "checkpoint": str, "prompt": str, "negative": str, "seed": int, "width": int, "height": int,
    "steps": int, "cfg": float, "sampler": str, "preset_slug": str, "preset_name": str,
}
# Worth a warning when a template leaves them out: the job's parameters would be silently ignored.
EXPECTED_FIELDS = ("checkpoint", "prompt", "negative", "seed", "width", "height", "steps", "cfg", "sampler")

log = logging.getLogger("services.generator.backends.comfyui")



def mapping_path(workflow_path: Path) -> Path:
    """`x/txt2img.json` → `x/txt2img.mapping.json`."""
    name = workflow_path.name
    stem = name[:-len(".json")] if name.endswith(".json") else name
    return workflow_path.with_name(stem + ".mapping.json")


@dataclass(frozen=True)
class Workflow:
    graph: dict
    mapping: dict                       # field -> ((node id, input name), ...)
    output_node: str | None = None
    source: str = "<memory>"

    @classmethod
    def load(cls, path) -> "Workflow":
        """Read and check a template and its mapping file; a broken pair is a configuration error
        (ValueError), found when the generator starts rather than on every job."""
        path = Path(path)
        graph = _read_json(path, "workflow template")
        mapping = _read_json(mapping_path(path), "workflow mapping")
        return cls.from_dicts(graph, mapping, source=str(path))

    @classmethod
    def from_dicts(cls, graph, mapping, source="<memory>") -> "Workflow":
        if not isinstance(graph, dict) or not graph:
            raise ValueError(f"{source}: the workflow template must be a JSON object of nodes")
        if "nodes" in graph and "links" in graph:
            raise ValueError(f"{source}: this is a UI-format workflow; export it from ComfyUI with "
                             f"\"Save (API format)\" instead")
        for node_id, node in graph.items():
            if not isinstance(node, dict) or "class_type" not in node or not isinstance(node.get("inputs"), dict):
                raise ValueError(f"{source}: node {node_id!r} is not an API-format node "
                                 f"({{\"class_type\": ..., \"inputs\": {{...}}}})")
        if not isinstance(mapping, dict):
            raise ValueError(f"{source}: the mapping must be a JSON object")
        targets, output_node = {}, None
        for key, value in mapping.items():
            if key.startswith("_"):
                continue
            if key == "output_node":
                output_node = str(value)
                if output_node not in graph:
                    raise ValueError(f"{source}: output_node {output_node!r} is not a node of the template")
                continue
            if key not in MAPPABLE_FIELDS:
                raise ValueError(f"{source}: unknown mapping key {key!r}; use {', '.join(MAPPABLE_FIELDS)} "
                                 f"or output_node")
            if (not isinstance(value, list) or not value
                    or not all(isinstance(t, list) and len(t) == 2 for t in value)):
                raise ValueError(f"{source}: mapping {key!r} must be a list of [node id, input name] pairs")
            pairs = []
            for node_id, input_name in value:
                node_id = str(node_id)
                node = graph.get(node_id)
                if node is None:
                    raise ValueError(f"{source}: mapping {key!r} names node {node_id!r}, which the template "
                                     f"does not have")
                if input_name not in node["inputs"]:
                    raise ValueError(f"{source}: mapping {key!r} names input {input_name!r} of node {node_id} "
                                     f"({node['class_type']}), which has no such input")
                if isinstance(node["inputs"][input_name], list):
                    raise ValueError(f"{source}: mapping {key!r} names input {input_name!r} of node {node_id} "
                                     f"({node['class_type']}), which is linked to another node; map that node")
                pairs.append((node_id, input_name))
            targets[key] = tuple(pairs)
        if "prompt" not in targets:
            raise ValueError(f"{source}: the mapping must route 'prompt' to at least one node input")
        missing = [name for name in EXPECTED_FIELDS if name not in targets]
        if missing:
            log.warning("%s: the mapping does not route %s; those job parameters will be ignored",
                        source, ", ".join(missing))
        return cls(graph=graph, mapping=targets, output_node=output_node, source=source)

    def fill(self, spec) -> dict:
        """A copy of the template with the spec's values at the mapped inputs."""
        graph = copy.deepcopy(self.graph)
        for key, pairs in self.mapping.items():
            value = MAPPABLE_FIELDS[key](getattr(spec, key))
            for node_id, input_name in pairs:
                graph[node_id]["inputs"][input_name] = value
        return graph

    def checkpoint_input(self) -> tuple[str, str]:
        """(node class, input name) where the checkpoint goes: where ComfyUI lists the installed ones."""
        pairs = self.mapping.get("checkpoint")
        if not pairs:
            return "CheckpointLoaderSimple", "ckpt_name"
        node_id, input_name = pairs[0]
        return self.graph[node_id]["class_type"], input_name

    def checkpoint_nodes(self) -> frozenset[str]:
        """The nodes the checkpoint goes to (its loaders): ComfyUI loads the checkpoint where it executes one."""
        return frozenset(node_id for node_id, _ in self.mapping.get("checkpoint", ()))

    def class_types(self) -> list[str]:
        return sorted({node["class_type"] for node in self.graph.values()})


def _read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{what} {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{what} {path} is not readable JSON: {exc}") from None
