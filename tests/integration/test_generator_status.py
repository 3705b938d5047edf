"""Generator replicas report their backend's health and checkpoints; the jobs service keeps the replica
list (for health checks) and the presets service validates checkpoint overrides against what the
nodes report, falling back to the configured list while none has reported. A replica knows the model its
worker process holds and what its loads cost (issue 15), and forgets the model with the worker."""
import dataclasses
import os
import signal
import uuid

import pytest
from nameko.standalone.events import event_dispatcher
from nameko.standalone.rpc import ServiceRpcProxy
from nameko.testing.services import entrypoint_waiter

from services.generator.supervisor import WorkerSupervisor
from shared import config, events
from shared.schemas import GenerationSpec
from shared.errors import InvalidField
from services.generator.service import GeneratorService
from services.jobs.service import JobsService
from services.presets.service import PresetsService
from tests.helpers import make_spec, wait_until


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


# ---- the model a replica's worker holds


IMAGE_SECONDS, LOAD_SECONDS = 0.05, 0.3


@pytest.fixture
def simulated_supervisor(monkeypatch):
    """A replica's supervisor over a real worker process with the simulated GPU (its settings reach the
    worker through the environment it inherits); `models` records what the supervisor said at each change."""
    monkeypatch.setenv("GAZE_SIMULATED_GPU_SECONDS", str(IMAGE_SECONDS))
    monkeypatch.setenv("GAZE_SIMULATED_LOAD_SECONDS", str(LOAD_SECONDS))
    models = []
    supervisor = WorkerSupervisor(dataclasses.replace(config.load({}), backend="simulated"), "model-replica",
                                  on_model=lambda: models.append(supervisor.loaded_checkpoint))
    supervisor.start()
    yield supervisor, models
    supervisor.stop()


def run_on(supervisor, checkpoint):
    spec = GenerationSpec(**make_spec(checkpoint=checkpoint, width=32, height=32, steps=2))
    return supervisor.run(str(uuid.uuid4()), spec, lambda value, maximum: None)[1]


def test_a_replica_counts_its_workers_loads_and_forgets_the_model_with_the_worker(simulated_supervisor):
    supervisor, models = simulated_supervisor
    a, b = "SDXL/sd_xl_base_1.0.safetensors", "Pony/pony_v6.safetensors"
    assert (supervisor.loaded_checkpoint, supervisor.loads) == (None, 0)
    seconds = [run_on(supervisor, checkpoint) for checkpoint in (a, a, b)]
    assert seconds[0] >= LOAD_SECONDS + IMAGE_SECONDS and seconds[1] < LOAD_SECONDS    # the load is in its job
    assert (supervisor.loaded_checkpoint, supervisor.resident_checkpoints, supervisor.loads) == (b, [b], 2)
    assert models == [a, b]
    assert 2 * LOAD_SECONDS <= supervisor.load_seconds_total < 2 * LOAD_SECONDS + 0.5
    assert LOAD_SECONDS <= supervisor.mean_load_seconds < LOAD_SECONDS + 0.25
    assert IMAGE_SECONDS <= supervisor.mean_job_seconds < LOAD_SECONDS       # without the loads
    means = supervisor.mean_load_seconds, supervisor.mean_job_seconds
    dead = supervisor.worker_pid
    os.kill(dead, signal.SIGKILL)
    wait_until(lambda: supervisor.serving and supervisor.worker_pid != dead, what="a fresh worker")
    assert (supervisor.loaded_checkpoint, supervisor.resident_checkpoints) == (None, None)
    assert (supervisor.loads, (supervisor.mean_load_seconds, supervisor.mean_job_seconds)) == (2, means)
    assert models == [a, b, None]
    assert run_on(supervisor, b) >= LOAD_SECONDS        # the fresh worker loads it again
    assert (supervisor.loaded_checkpoint, supervisor.loads) == (b, 3)
