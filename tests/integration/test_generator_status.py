"""Generator replicas report their backend's health and checkpoints; the jobs service keeps the replica
list (for health checks) and the presets service validates checkpoint overrides against what the
nodes report, falling back to the configured list while none has reported."""
import dataclasses
import time

import pytest
from nameko.standalone.events import event_dispatcher
from nameko.standalone.rpc import ServiceRpcProxy

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


def test_a_generator_reports_its_backend_to_the_jobs_service(container_factory, settings, clean_status):
    node = dataclasses.replace(settings, replica_name="status-node-1", status_interval_seconds=0.5)
    container_factory(JobsService, settings.nameko_config()).start()
    container_factory(GeneratorService, node.nameko_config(max_workers=1)).start()
    with rpc(settings, "jobs") as jobs:
        replica = wait_until(lambda: next((r for r in jobs.replicas() if r["replica"] == "status-node-1"), None),
                             what="the generator's status report")
        assert replica["healthy"] is True and replica["backend"] == "preview"
        # it keeps reporting: two intervals later the latest report is still younger than one second
        time.sleep(1.5)
        assert next(r for r in jobs.replicas() if r["replica"] == "status-node-1")["age_seconds"] < 1.0


def test_checkpoint_overrides_follow_what_the_nodes_report(container_factory, settings, clean_status):
    container_factory(PresetsService, settings.nameko_config()).start()
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
        # an unhealthy node's (empty) list does not wipe out what the healthy one offers
        dispatch(events.EVENT_SOURCE, events.GENERATOR_STATUS, events.GeneratorStatus(
            replica="gpu-8", backend="comfyui", healthy=False, detail="ComfyUI unreachable", checkpoints=[]).model_dump())
        assert "Pony/pony_v6.safetensors" in presets.checkpoints()
