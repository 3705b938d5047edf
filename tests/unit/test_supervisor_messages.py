"""What a job's client reads when its worker process goes away under it, when it runs past its time limit, or
when its backend fails (services/generator/supervisor.py, worker.py, service.py): a reason with no signal,
setting, URL, path or exception text in it; the operator's detail travels beside it to the replica's log,
under the job id. No process here: the worker is a stand-in, the watchdog runs on green threads."""
from __future__ import annotations

import logging
import signal
import time
from types import SimpleNamespace

import pytest
from kombu.exceptions import OperationalError
from nameko.testing.services import worker_factory

from services.generator import supervisor as sup
from services.generator import worker as worker_module
from services.generator.backends import BackendError
from services.generator.service import GeneratorService
from shared import events
from shared.schemas import GenerationSpec
from tests.helpers import make_spec, wait_until
from tests.worker_stand_ins import FakeProcess, FakeSock, Link, running_job

INTERNAL = ("SIG", "GAZE_", "exit code", "http://", "/srv/", "Errno", "pid", "ValueError", "secret")


def public_only(text):
    leaked = [word for word in INTERNAL if word in text]
    assert not leaked, f"{text!r} carries {leaked}"
    return text


@pytest.fixture
def supervisor(monkeypatch):
    settings = SimpleNamespace(job_timeout_seconds=5.0, worker_stall_seconds=30.0)
    supervising = sup.WorkerSupervisor(settings, "gpu-3")
    monkeypatch.setattr(supervising, "_launch", lambda first=False: None)     # no new worker process
    return supervising


def test_a_crashed_worker_says_crashed_and_keeps_the_signal_for_the_log(supervisor):
    worker = sup.Incarnation(1, FakeProcess(returncode=-signal.SIGSEGV), FakeSock())
    ticket = running_job(supervisor, worker)
    supervisor._worker_gone(worker)
    kind, public, detail = ticket.inbox.get_nowait()
    assert kind == "lost" and public_only(public) == sup.WORKER_CRASHED
    assert detail == "the worker process exited unexpectedly (killed by SIGSEGV)"


def test_a_stalled_worker_says_it_stopped_responding_and_keeps_the_setting_for_the_log(supervisor, monkeypatch):
    monkeypatch.setattr(sup, "WATCH_INTERVAL", 0.01)
    supervisor.settings.worker_stall_seconds = 0.05
    worker = sup.Incarnation(1, FakeProcess(), FakeSock())
    ticket = running_job(supervisor, worker)
    worker.last_life = time.monotonic() - 1.0
    watchdog = sup.eventlet.spawn(supervisor._watch)
    try:
        wait_until(lambda: worker.kill_reason, what="the watchdog to kill the stalled worker")
    finally:
        watchdog.kill()
    assert worker.process.signals == [signal.SIGKILL]
    supervisor._worker_gone(worker)
    kind, public, detail = ticket.inbox.get_nowait()
    assert kind == "lost" and public_only(public) == sup.WORKER_STALLED
    assert "no sign of life" in detail and "GAZE_WORKER_STALL_SECONDS" in detail


def test_a_job_past_its_time_limit_says_so_without_the_setting(supervisor):
    public, detail = supervisor.timed_out()
    assert public_only(public) == "the job exceeded its time limit of 5 s and was stopped"
    assert detail == "the job exceeded its time limit of 5 s (GAZE_JOB_TIMEOUT_SECONDS) and was stopped"
    worker = sup.Incarnation(1, FakeProcess(returncode=-signal.SIGKILL), FakeSock())
    ticket = running_job(supervisor, worker)
    ticket.cancel_reason = "timeout"
    supervisor._worker_gone(worker)
    assert ticket.inbox.get_nowait() == ("failed", public, False, detail)


def first_message_is(monkeypatch, *message):
    """The next job's ticket gets `message` from its worker at once."""
    original = sup.Ticket

    def ticket(job_id, spec):
        made = original(job_id, spec)
        made.inbox.put(message)
        return made

    monkeypatch.setattr(sup, "Ticket", ticket)


@pytest.mark.parametrize("message, raised, detail", [
    (("lost", sup.WORKER_CRASHED, "exited (killed by SIGSEGV)"), sup.WorkerLost, "exited (killed by SIGSEGV)"),
    (("failed", "checkpoint 'x' is not installed on this node", False, "ComfyUI at http://gpu-3:8188: no x"),
     BackendError, "ComfyUI at http://gpu-3:8188: no x"),
    (("failed", "cancelled: its claim said not to run it", False), BackendError,   # no detail: the same words
     "cancelled: its claim said not to run it"),
])
def test_run_raises_the_public_words_with_the_detail_beside_them(supervisor, monkeypatch, message, raised, detail):
    first_message_is(monkeypatch, *message)
    with pytest.raises(raised) as failure:
        supervisor.run("job-1", GenerationSpec.model_validate(make_spec()), lambda value, maximum: None)
    assert str(failure.value) == failure.value.public == message[1]
    assert failure.value.detail == detail


# ---- the worker process's end: a BackendError's two texts, and a bug's traceback only in the log


class Failing:
    name, pipelined = "failing", True

    def __init__(self, exc):
        self.exc = exc

    def generate(self, spec, job):
        raise self.exc


@pytest.mark.parametrize("exc, public, detail", [
    (BackendError("checkpoint 'x' is not installed on this node", "ComfyUI at http://gpu-3:8188: x missing"),
     "checkpoint 'x' is not installed on this node", "ComfyUI at http://gpu-3:8188: x missing"),
    (ValueError("bad value in /srv/secret/config.yaml"), worker_module.CRASHED,
     "the backend crashed: ValueError: bad value in /srv/secret/config.yaml"),
])
def test_the_worker_sends_the_public_reason_and_the_detail(exc, public, detail):
    link = Link()
    worker = worker_module.Worker(Failing(exc), link)
    job = worker_module.WorkerJob("job-1", link)
    worker._run(job, GenerationSpec.model_validate(make_spec()))
    [(kind, job_id, said, crashed, operator)] = link.sent
    assert (kind, job_id, said, operator) == ("failed", "job-1", public, detail)
    public_only(said)
    assert crashed is isinstance(exc, ValueError)


# ---- the replica's last word: what leaves in job_failed, and what stays in its log


def test_a_failed_job_publishes_the_public_words_and_logs_the_detail_under_its_id(caplog):
    service = worker_factory(GeneratorService, replica="gpu-3")
    with caplog.at_level(logging.WARNING, logger="services.generator.service"):
        service._fail("job-1", "a plugged-in backend says: see http://10.0.0.7:8188/x and /srv/models/a.ckpt",
                      "the operator's detail: http://10.0.0.7:8188/x")
    [(name, payload)] = [call.args for call in service.dispatch.call_args_list]
    assert name == events.JOB_FAILED
    assert payload["error"] == "a plugged-in backend says: see [internal] and [internal]"
    [record] = [r for r in caplog.records if getattr(r, "job_id", None) == "job-1"]
    assert "the operator's detail: http://10.0.0.7:8188/x" in record.getMessage()


def test_progress_is_relayed_at_most_every_interval_with_its_latest_value(supervisor):
    """A fast GPU reports a step every few milliseconds: relaying each would be one event per step per replica
    for the jobs service and the broker to carry (issue 16: at 32 replicas, the job_progress queue grew to
    14,000 and the jobs service fell behind). The latest value goes out at most every PROGRESS_INTERVAL."""
    import eventlet

    relayed = []
    job = eventlet.spawn(supervisor.run, "job-1", SimpleNamespace(model_dump=dict),
                         lambda value, maximum: relayed.append((value, time.monotonic())), lambda: True)
    wait_until(lambda: "job-1" in supervisor.tickets, timeout=5, what="the job handed to the supervisor")
    inbox = supervisor.tickets["job-1"].inbox
    steps = 28
    started = time.monotonic()
    for step in range(1, steps + 1):       # the run's pace: 28 steps over ~0.56 s
        inbox.put(("progress", step, steps))
        eventlet.sleep(0.02)
    inbox.put(("done", b"png", 64, 64, {}, 0.56))
    job.wait()
    span = time.monotonic() - started
    assert 2 <= len(relayed) <= span / sup.PROGRESS_INTERVAL + 3, relayed
    assert relayed[0][0] == 1 and relayed[-1][0] == steps          # the first step at once, the last at the end
    gaps = [later - earlier for (_, earlier), (_, later) in zip(relayed[:-1], relayed[1:-1])]
    assert min(gaps) >= sup.PROGRESS_INTERVAL * 0.9, gaps
    assert [value for value, _ in relayed] == sorted({value for value, _ in relayed})


@pytest.mark.parametrize("error", [OperationalError("[Errno 111] ECONNREFUSED"), ConnectionResetError(104, "reset")])
def test_a_job_whose_start_cannot_be_announced_while_the_broker_is_away_is_not_failed(error):
    """The broker went away as the GPU started the job: its job_started cannot be published. That is no fault of
    the job: the handler raises (the job is handled again, or redelivered), it does not fail the job."""
    service = worker_factory(GeneratorService, replica="gpu-3")
    service.worker.run.side_effect = error
    service.jobs.claim.call_async.return_value.result.return_value = {"run": True, "attempt": 1}
    order = events.WorkOrder(job_id="4b0c9a5e-3f7e-4a57-9d8b-0a6f1c2d3e4f", spec=make_spec(), created_at=1.0)
    with pytest.raises(type(error)):
        service.generate(order.model_dump())
    assert not [call for call in service.dispatch.call_args_list if call.args[0] == events.JOB_FAILED]
