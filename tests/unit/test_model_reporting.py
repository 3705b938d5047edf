"""Replicas know the model their worker holds (issue 15): the simulated backend charges a load when the
checkpoint changes, the preview backend reports its switches at no cost, the worker sends them ("loaded"),
the supervisor keeps the model, the loads and their means, and the replica's status carries them.
The backends run in this process here; tests/integration/test_generator_status.py runs them in a worker
process."""
from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from eventlet.event import Event

from services.generator import supervisor as sup
from services.generator.backends import JobCancelled, make_backend
from services.generator.backends.preview import PreviewBackend
from services.generator.backends.simulated import LOAD_SLICE_SECONDS, SimulatedGpuBackend
from services.generator.replica import GpuWorker
from services.generator.worker import WorkerJob
from shared import config
from shared.schemas import GenerationSpec
from tests.helpers import make_spec
from tests.worker_stand_ins import FakeProcess, FakeSock, Link, running_job

A, B = "SDXL/sd_xl_base_1.0.safetensors", "Pony/pony_v6.safetensors"
IMAGE_SECONDS = 0.05
LOAD_SECONDS = 0.3


def spec(checkpoint):
    return GenerationSpec(**make_spec(checkpoint=checkpoint, width=32, height=32, steps=2))


class RecordingJob:
    """A JobContext that remembers what the backend reported, and when; `cancel_when(job)` says when it is
    cancelled."""

    job_id = "job-1"

    def __init__(self, cancel_when=lambda job: False):
        self.began = time.monotonic()
        self.alive_at, self.loaded, self.loaded_at = [], [], None
        self._cancel_when = cancel_when

    def started(self):
        pass

    def progress(self, value, maximum):
        pass

    def alive(self):
        self.alive_at.append(time.monotonic())

    def submitted(self, handle):
        pass

    def model_loaded(self, checkpoint, seconds, resident=None):
        self.loaded.append((checkpoint, seconds, resident))
        self.loaded_at = time.monotonic()

    def cancelled(self):
        return self._cancel_when(self)


def timed(backend, checkpoint, job=None):
    job = job or RecordingJob()
    backend.generate(spec(checkpoint), job)
    return job, time.monotonic() - job.began


# ---- the simulated backend


def test_the_simulated_backend_charges_a_load_only_when_the_checkpoint_changes():
    backend = SimulatedGpuBackend(IMAGE_SECONDS, load_seconds=LOAD_SECONDS)
    first, first_took = timed(backend, A)
    [(checkpoint, seconds, resident)] = first.loaded
    assert (checkpoint, resident) == (A, [A]) and seconds >= LOAD_SECONDS
    assert first_took >= LOAD_SECONDS + IMAGE_SECONDS
    assert time.monotonic() - first.loaded_at >= IMAGE_SECONDS     # the image's T comes after the load, whole
    same, same_took = timed(backend, A)
    assert same.loaded == [] and IMAGE_SECONDS <= same_took < LOAD_SECONDS
    other, other_took = timed(backend, B)
    assert [(name, held) for name, _, held in other.loaded] == [(B, [B])]
    assert other_took >= LOAD_SECONDS + IMAGE_SECONDS


def test_a_long_load_shows_life_all_along():
    backend = SimulatedGpuBackend(0.0, load_seconds=0.6)
    job, _ = timed(backend, A)
    moments = [job.began, *job.alive_at, job.loaded_at]
    assert len(job.alive_at) >= 4
    longest_silence = max(later - earlier for earlier, later in zip(moments, moments[1:]))
    assert longest_silence < LOAD_SLICE_SECONDS * 4     # far within any stall limit


def test_a_cancel_during_a_load_stops_it_at_once_and_keeps_the_model_held_before():
    backend = SimulatedGpuBackend(0.0, load_seconds=0.0)
    timed(backend, A)
    backend.load_seconds = 30.0
    job = RecordingJob(cancel_when=lambda job: len(job.alive_at) >= 2)
    with pytest.raises(JobCancelled):
        backend.generate(spec(B), job)
    assert time.monotonic() - job.began < 2
    assert job.loaded == [] and backend.loaded == A
    assert timed(backend, A)[0].loaded == []     # still holds A: no load


def test_the_load_cost_is_a_setting_of_the_simulated_backend():
    settings = config.load({"GAZE_BACKEND": "simulated"})
    assert make_backend(settings, {"GAZE_SIMULATED_LOAD_SECONDS": "2.5"}).load_seconds == 2.5
    assert make_backend(settings, {}).load_seconds == 0.0


# ---- the preview backend


def test_the_preview_backend_reports_each_switch_at_no_cost():
    backend = PreviewBackend()
    reported = [timed(backend, checkpoint)[0].loaded for checkpoint in (A, A, B, A)]
    assert reported == [[(A, 0.0, [A])], [], [(B, 0.0, [B])], [(A, 0.0, [A])]]


# ---- the worker's message


def test_the_worker_tells_the_replica_what_the_backend_loaded():
    link = Link()
    SimulatedGpuBackend(0.0, load_seconds=0.0).generate(spec(A), WorkerJob("job-1", link))
    [loaded] = [message for message in link.sent if message[0] == "loaded"]
    assert loaded[:3] == ("loaded", "job-1", A) and type(loaded[3]) is float and loaded[4] == [A]


# ---- the supervisor's account


@pytest.fixture
def supervisor(monkeypatch):
    settings = SimpleNamespace(job_timeout_seconds=5.0, worker_stall_seconds=30.0)
    changes = []
    supervising = sup.WorkerSupervisor(settings, "gpu-3",
                                       on_model=lambda: changes.append(supervising.loaded_checkpoint))
    supervising.changes = changes
    monkeypatch.setattr(supervising, "_launch", lambda first=False: None)     # no new worker process
    supervising.current = sup.Incarnation(1, FakeProcess(), FakeSock())
    return supervising


def say(supervising, *message):
    supervising._on_message(supervising.current, message)


def test_the_supervisor_counts_loads_and_keeps_their_means_and_the_jobs_gpu_time_without_them(supervisor):
    assert (supervisor.loaded_checkpoint, supervisor.loads, supervisor.mean_load_seconds,
            supervisor.mean_job_seconds) == (None, 0, None, None)
    running_job(supervisor, supervisor.current, "job-1")
    say(supervisor, "loaded", "job-1", A, 3.0, [A])
    say(supervisor, "done", "job-1", b"png", 8, 8, {}, 3.5)
    assert (supervisor.loaded_checkpoint, supervisor.resident_checkpoints) == (A, [A])
    assert (supervisor.loads, supervisor.load_seconds_total) == (1, 3.0)
    assert (supervisor.mean_load_seconds, supervisor.mean_job_seconds) == (3.0, 0.5)
    running_job(supervisor, supervisor.current, "job-2")
    say(supervisor, "done", "job-2", b"png", 8, 8, {}, 1.5)         # found A loaded: all of it is GPU time
    running_job(supervisor, supervisor.current, "job-3")
    say(supervisor, "loaded", "job-3", B, 1.0, [A, B])
    assert (supervisor.loaded_checkpoint, supervisor.resident_checkpoints) == (B, [A, B])
    assert (supervisor.loads, supervisor.load_seconds_total) == (2, 4.0)
    assert supervisor.mean_load_seconds == pytest.approx(3.0 + sup.MEAN_WEIGHT * (1.0 - 3.0))
    assert supervisor.mean_job_seconds == pytest.approx(0.5 + sup.MEAN_WEIGHT * (1.5 - 0.5))
    assert supervisor.changes == [A, B]


def test_a_load_for_a_job_given_up_on_still_changes_the_model(supervisor):
    say(supervisor, "loaded", "gone-job", A, 2.0, None)
    assert (supervisor.loaded_checkpoint, supervisor.resident_checkpoints, supervisor.loads) == (A, None, 1)


def test_a_worker_that_is_gone_takes_its_model_along_but_not_the_counts(supervisor):
    running_job(supervisor, supervisor.current, "job-1")
    say(supervisor, "loaded", "job-1", A, 3.0, [A])
    say(supervisor, "done", "job-1", b"png", 8, 8, {}, 3.5)
    worker = supervisor.current
    worker.process.kill()
    supervisor._worker_gone(worker)
    assert (supervisor.loaded_checkpoint, supervisor.resident_checkpoints) == (None, None)
    assert (supervisor.loads, supervisor.load_seconds_total, supervisor.mean_load_seconds,
            supervisor.mean_job_seconds) == (1, 3.0, 3.0, 0.5)
    assert supervisor.changes == [A, None]
    # what a dying worker still says about its model is not the replica's model
    supervisor._on_message(worker, ("loaded", "job-1", B, 1.0, [B]))
    assert supervisor.loaded_checkpoint is None and supervisor.loads == 1


# ---- the replica's status


@pytest.fixture
def gpu_worker():
    provider = GpuWorker()
    provider.container = SimpleNamespace(config=config.Settings(replica_name="gpu-3").nameko_config())
    provider.setup()
    provider.supervisor.current = sup.Incarnation(1, FakeProcess(), FakeSock())
    provider.supervisor.state = "idle"
    return provider


def test_the_replicas_status_carries_its_model_its_loads_and_its_line(gpu_worker):
    supervising = gpu_worker.supervisor
    running_job(supervising, supervising.current, "job-1")
    say(supervising, "loaded", "job-1", A, 0.30049, [A])
    say(supervising, "done", "job-1", b"png", 8, 8, {}, 0.50049)
    gpu_worker.serve_line(A)
    status = gpu_worker.status()
    assert (status.loaded_checkpoint, status.resident_checkpoints, status.serving) == (A, [A], A)
    assert (status.loads, status.load_seconds_total) == (1, 0.3)
    assert status.mean_load_seconds == pytest.approx(0.30049)
    assert status.mean_job_seconds == pytest.approx(0.2)
    gpu_worker.serve_line(None)
    assert gpu_worker.status().serving is None


def test_a_model_change_and_a_line_change_each_wake_the_status_reporter(gpu_worker):
    assert not gpu_worker._changed.ready()
    say(gpu_worker.supervisor, "loaded", "gone-job", A, 1.0, [A])
    assert gpu_worker._changed.ready()
    gpu_worker._changed = Event()       # as the reporter does after each publish
    gpu_worker.serve_line(B)
    assert gpu_worker._changed.ready()
    gpu_worker._changed = Event()
    gpu_worker.serve_line(B)       # no change: nothing new to say
    assert not gpu_worker._changed.ready()
