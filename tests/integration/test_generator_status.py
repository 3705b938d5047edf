"""Generator replicas report their backend's health and checkpoints; the jobs service keeps the replica
list (for health checks) and the presets service validates checkpoint overrides against what the
nodes report, falling back to the configured list while none has reported."""
import dataclasses

import pytest
from nameko.standalone.events import event_dispatcher
from nameko.standalone.rpc import ServiceRpcProxy
from nameko.testing.services import entrypoint_waiter

from shared import events
from shared.errors import InvalidField
from services.generator.service import GeneratorService
from services.jobs.service import JobsService
from services.presets.service import PresetsService
from tests.helpers import wait_until


@pytest.fixture
def clean_status(db):
    db.execute("TRUNCATE jobs.replicas")
    db.execute("TRUNCATE presets.node_checkpoints")


def rpc(settings, service):
    return ServiceRpcProxy(service, {"AMQP_URI": settings.amqp_uri, "serializer": "json"})


def test_a_generator_reports_its_backend_to_the_jobs_service(container_factory, settings, clean_status, db):
    node = dataclasses.replace(settings, replica_name="status-node-1", status_interval_seconds=0.5)
    container_factory(JobsService, settings.nameko_config()).start()
    container_factory(GeneratorService, node.nameko_config(max_workers=1)).start()
    with rpc(settings, "jobs") as jobs:
        replica = wait_until(lambda: next((r for r in jobs.replicas() if r["replica"] == "status-node-1"), None),
                             what="the generator's status report")
        assert replica["healthy"] is True and replica["backend"] == "preview"
        # it keeps reporting (every 0.5 s here): two more reports arrive within a few intervals
        first = seen_at(db, "status-node-1")
        wait_until(lambda: seen_at(db, "status-node-1") - first >= 0.9, timeout=5, what="two later reports")
        assert next(r for r in jobs.replicas() if r["replica"] == "status-node-1")["age_seconds"] < 1.0


def seen_at(db, replica):
    """When the jobs service last heard from `replica` (its report's own time), in epoch seconds."""
    return db.execute("SELECT extract(epoch FROM seen_at)::float8 AS at FROM jobs.replicas WHERE replica = %s",
                      (replica,)).fetchone()["at"]


def test_checkpoint_overrides_follow_what_the_nodes_report(container_factory, settings, clean_status, db):
    container = container_factory(PresetsService, settings.nameko_config())
    container.start()
    dispatch = event_dispatcher({"AMQP_URI": settings.amqp_uri, "serializer": "json"})
    with rpc(settings, "presets") as presets:
        assert presets.checkpoints() == settings.checkpoints          # nobody reported yet: configuration
        dispatch(events.EVENT_SOURCE, events.GENERATOR_STATUS, events.GeneratorStatus(
            replica="gpu-7", backend="comfyui", healthy=True, detail="ok",
            checkpoints=["Illustrious/model.safetensors", "Pony/pony_v6.safetensors"]).model_dump())
        wait_until(lambda: presets.checkpoints() == ["Illustrious/model.safetensors", "Pony/pony_v6.safetensors"],
                   what="the reported checkpoints")
        spec = presets.resolve("example_01", {"checkpoint": "Pony/pony_v6.safetensors"})
        assert spec["checkpoint"] == "Pony/pony_v6.safetensors"
        with pytest.raises(InvalidField) as err:
            presets.resolve("example_01", {"checkpoint": "SDXL/sd_xl_base_1.0.safetensors"})  # configured, not on any node
        assert err.value.field == "checkpoint"
        # an unhealthy node's (empty) list does not wipe out what the healthy one offers: once its report
        # has been handled, nothing of it is stored and the offer is what gpu-7 reported
        with entrypoint_waiter(container, "on_generator_status", timeout=10):
            dispatch(events.EVENT_SOURCE, events.GENERATOR_STATUS, events.GeneratorStatus(
                replica="gpu-8", backend="comfyui", healthy=False, detail="ComfyUI unreachable",
                checkpoints=[]).model_dump())
        stored = db.execute("SELECT replica, checkpoints FROM presets.node_checkpoints ORDER BY replica").fetchall()
        assert [(row["replica"], row["checkpoints"]) for row in stored] == [
            ("gpu-7", ["Illustrious/model.safetensors", "Pony/pony_v6.safetensors"])]
        assert presets.checkpoints() == ["Illustrious/model.safetensors", "Pony/pony_v6.safetensors"]
