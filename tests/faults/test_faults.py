"""Issue 6: fault injection against the real stack (`gaze up --generators 2` under supervisord, real
RabbitMQ, PostgreSQL, Redis and service processes).

Every scenario runs with GAZE_BACKEND=simulated, GAZE_SIMULATED_GPU_SECONDS=0.2 (1 in scenario 1),
GAZE_SIMULATED_LOAD_SECONDS=0.3, GAZE_SCHEDULING=checkpoint, GAZE_SCHEDULER_MAX_WAIT_SECONDS=5,
GAZE_STUCK_JOB_SECONDS=20, GAZE_STUCK_SWEEP_SECONDS=2, GAZE_HEARTBEAT=5, GAZE_DISPATCH_SWEEP_SECONDS=5
(tests/faults/harness.py FAULT_ENV); 40 jobs of 64x64 are posted, 2 per request every 0.5 s, across the
fault, the requests naming the 3 checkpoints of GAZE_CHECKPOINTS in turn (so jobs wait in a line per
checkpoint, and a replica killed or leaving holds a model). After healing, `check_invariants` asserts:
every job done or failed within 150 s; the jobs name all 3 checkpoints; every job accepted (202) is
recorded, and no other row exists (scenarios 2 and 3: a row the client was answered 5xx for is the known
race in UNACKNOWLEDGED_JOBS, an xfail when a run hits it); every done job has exactly one image file, the
one its result names; a job announced done twice only where the jobs service ignored the second
announcement; attempts <= GAZE_MAX_ATTEMPTS.
Figures per scenario go to stdout and <pytest basetemp>/fault_results.json (README, "Reliability").

Scenarios 3 and 4 stop the machine's shared RabbitMQ / restart its PostgreSQL: run this suite alone
(`pytest -m faults tests/faults`), never beside another test run."""
import contextlib
import os
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from urllib.parse import unquote

import pytest

from tests.faults.harness import (
    FAULT_ENV,
    Figures,
    Submitter,
    check_invariants,
    heal_postgres,
    heal_rabbitmq,
    job_rows,
    n_done,
    pg_ctlcluster,
    pg_ready,
    rabbitmqctl,
    service_pid,
    some_processing,
    supervisor_pid,
    wait_for,
    wait_until,
)
from tests.stack import GAZE, generator_pids, running_stack

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(420)]


@contextlib.contextmanager
def fault_stack(tmp_path, generators=2, **env):
    with running_stack(tmp_path, generators=generators, **{**FAULT_ENV, **env}) as stack:
        yield stack


def worker_count(workdir) -> int:
    """Worker processes (services/generator/worker.py) of this stack's replicas, found by their environment."""
    found = subprocess.run(["pgrep", "-f", "services.generator.worker"], capture_output=True, text=True).stdout
    count = 0
    for pid in found.split():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        count += f"GAZE_RUN_DIR={workdir / 'run'}".encode() in environ.split(b"\0")
    return count


def rpc_queue_idle(stack, service) -> bool:
    """Whether `service`'s RPC queue on the stack's vhost has no message waiting and none in handling."""
    vhost = unquote(stack.env["GAZE_AMQP_URI"].rsplit("/", 1)[1])
    listed = rabbitmqctl("list_queues", "-p", vhost, "name", "messages_ready", "messages_unacknowledged",
                         "--no-table-headers").stdout
    for line in listed.splitlines():
        fields = line.split()
        if fields and fields[0] == f"rpc-{service}":
            return fields[1:] == ["0", "0"]
    return False


def record(fault_results, figures):
    fault_results[figures.scenario] = asdict(figures)


UNACKNOWLEDGED_JOBS = (
    "a POST in flight when the broker or the database went away was answered 503 although jobs.create had "
    "committed its "
    "jobs (they still run: the outbox sweep hands them over; each ended with one file, checked). The "
    "create request id now keeps a redelivered request from creating them twice, and a retry with the "
    "same Idempotency-Key gets these jobs back; without a key the client cannot know they exist")


def xfail_if_unacknowledged(figures):
    """Called after every other invariant held: rows the client never got a 202 for are the known bug
    above, reported as an xfail when this run hit the race (not strict: most runs do not)."""
    if figures.unacknowledged:
        pytest.xfail(f"{figures.unacknowledged} unacknowledged job(s): {UNACKNOWLEDGED_JOBS}")


def test_kill_9_a_generator_mid_job(tmp_path, fault_results):
    """1. SIGKILL the generator replica running a job. Its unacked jobs (the running one and the one it
    had claimed) go back to the queue; the other replica, and the replacement supervisord starts, take
    them as a new attempt (redelivery). Limits: see the module docstring. Jobs of 1 s here: with 0.2 s
    the job seen `processing` in the database had often ended (its `done` not yet recorded) by the time
    of the kill, and the killed replica held nothing to retry."""
    with fault_stack(tmp_path, GAZE_SIMULATED_GPU_SECONDS="1") as stack:
        figures = Figures("kill -9 generator", "SIGKILL the replica running a job; supervisord restarts it")
        pids = generator_pids(supervisor_pid(tmp_path))     # before: the kill must follow the sighting at once
        submitter = Submitter(stack).start()
        rows = wait_until(stack, lambda rows: some_processing(rows) and rows, 30, "a job in processing")
        replica = rows[some_processing(rows)[0]]["replica"]
        os.kill(pids[replica], signal.SIGKILL)
        healed_at = time.monotonic()
        # supervisord starts a replacement under the same replica name
        wait_for(lambda: generator_pids(supervisor_pid(tmp_path)).get(replica) not in (None, pids[replica]),
                 30, "supervisord to restart the killed generator")
        # the killed replica's worker process left with it (its socket closed): one worker per live replica
        wait_for(lambda: worker_count(tmp_path) == 2, 15, "the killed replica's worker process to exit")
        submitter.join()
        check_invariants(stack, submitter, figures, healed_at)
        record(fault_results, figures)
        assert figures.done == figures.accepted
        assert figures.retried >= 1          # the killed job ran again


def test_kill_9_the_jobs_service_while_jobs_complete(tmp_path, fault_results):
    """2. SIGKILL the jobs service while generators complete jobs; supervisord restarts it (autorestart).
    Events and claims wait in their durable queues meanwhile; submissions in the gap are refused (503).
    Limits: see the module docstring."""
    with fault_stack(tmp_path) as stack:
        figures = Figures("kill -9 jobs service", "SIGKILL `gaze service jobs` while jobs complete; supervisord restarts it")
        submitter = Submitter(stack).start()
        wait_until(stack, n_done(6), 30, "jobs completing")
        pid = service_pid(tmp_path, "jobs")
        assert pid
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: service_pid(tmp_path, "jobs") not in (None, pid), 30, "supervisord to restart jobs")
        healed_at = time.monotonic()
        submitter.join()
        check_invariants(stack, submitter, figures, healed_at, strict_rows=False)
        record(fault_results, figures)
        assert figures.done == figures.rows
        xfail_if_unacknowledged(figures)


def test_rabbitmq_stop_app_and_start_app_mid_run(tmp_path, fault_results):
    """3. `rabbitmqctl stop_app` mid-run, 5 s down, `start_app`: every service reconnects by itself (no
    process is restarted by the test). Healed in `finally:` whatever happens. Limits: see the module
    docstring."""
    with fault_stack(tmp_path) as stack:
        figures = Figures("RabbitMQ stop_app 5 s", "`rabbitmqctl stop_app`, 5 s, `start_app` mid-run")
        submitter = Submitter(stack).start()
        try:
            wait_until(stack, n_done(6), 30, "jobs completing")
            before = {name: service_pid(tmp_path, name) for name in ("jobs", "presets")}
            generators_before = generator_pids(supervisor_pid(tmp_path))
            rabbitmqctl("stop_app")
            time.sleep(5)   # the scenario, not a wait: the broker stays down 5 s while jobs are submitted
        finally:
            heal_rabbitmq()
        healed_at = time.monotonic()
        submitter.join()
        # rows == accepted: see xfail_if_unacknowledged below
        check_invariants(stack, submitter, figures, healed_at, strict_rows=False)
        record(fault_results, figures)
        # they reconnected: the same processes, nobody restarted
        assert {name: service_pid(tmp_path, name) for name in ("jobs", "presets")} == before
        assert generator_pids(supervisor_pid(tmp_path)) == generators_before
        assert figures.done == figures.rows
        xfail_if_unacknowledged(figures)


def test_a_post_during_a_broker_outage_is_answered_truthfully(tmp_path):
    """3b. A POST /generate sent while RabbitMQ is stopped, the broker started 2 s later: either the jobs
    were created (202) or they were not (503) - never a 503 for jobs that exist and run."""
    with fault_stack(tmp_path) as stack:
        answer = {}

        def post():
            try:
                answer["response"] = stack.post("/api/v1/generate/example_01",
                                                json={"count": 2, "width": 64, "height": 64})
            except Exception as exc:  # noqa: BLE001 - reported below
                answer["error"] = exc

        try:
            rabbitmqctl("stop_app")
            thread = threading.Thread(target=post, daemon=True)
            thread.start()
            time.sleep(2)   # the scenario, not a wait: the POST meets a broker that stays down 2 s
        finally:
            heal_rabbitmq()
        thread.join(60)
        assert not thread.is_alive(), "the POST got no answer within 60 s of the broker's return"
        response = answer.get("response")
        # The jobs service has reconnected (backoff) and handled what was queued for it: it answers an RPC
        # the gateway sends now, after the POST's (a poll of an unknown job is a jobs.get: 404 from it),
        # and its RPC queue holds nothing, delivered or not (nameko acks a request once it is handled).
        wait_for(lambda: stack.get(f"/api/v1/job/{uuid.uuid4()}").status_code == 404, 90,
                 "the jobs service to answer again after the outage", interval=0.5)
        wait_for(lambda: rpc_queue_idle(stack, "jobs"), 30, "the jobs service's RPC queue to be empty")
        rows = job_rows(stack)
        print(f"\n[faults] POST during outage: {response.status_code if response is not None else answer}, "
              f"rows created: {len(rows)}")
        if response is not None and response.status_code == 202:
            assert len(rows) == 2
        else:
            assert rows == {}, f"answered {response.status_code if response is not None else answer} but created {len(rows)} jobs"


def test_postgresql_restart_mid_run(tmp_path, fault_results):
    """4. `pg_ctlcluster <version> main restart` mid-run: the services' pools reconnect by themselves.
    Healed in `finally:` (PostgreSQL started again if it is not up). Limits: see the module docstring."""
    with fault_stack(tmp_path) as stack:
        figures = Figures("PostgreSQL restart", "`pg_ctlcluster ... main restart` mid-run")
        submitter = Submitter(stack).start()
        try:
            wait_until(stack, n_done(6), 30, "jobs completing")
            before = {name: service_pid(tmp_path, name) for name in ("jobs", "presets")}
            result = pg_ctlcluster("restart")
            assert result.returncode == 0, result.stderr
        finally:
            heal_postgres()
        assert pg_ready()
        healed_at = time.monotonic()
        submitter.join()
        # rows == accepted: see xfail_if_unacknowledged below (a commit whose answer is lost with the
        # database's connections; the known cause, a failing mark_dispatched, no longer fails a create)
        check_invariants(stack, submitter, figures, healed_at, strict_rows=False)
        record(fault_results, figures)
        assert {name: service_pid(tmp_path, name) for name in ("jobs", "presets")} == before
        assert figures.failed == 0 and figures.done == len(job_rows(stack)), "every job recorded ran and is done"
        xfail_if_unacknowledged(figures)


def start_generator(stack, workdir, name):
    log = workdir / f"{name}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([GAZE, "service", "generator"], env=dict(stack.env, GAZE_REPLICA_NAME=name),
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, log


def stop(proc, timeout=60):
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_replicas_leave_and_join_while_jobs_flow(tmp_path, fault_results):
    """5. Replicas come and go: SIGTERM one supervised generator (it finishes its job and leaves), start
    a new one (`gaze service generator`, as a GPU node runs it), later start a third and SIGTERM that
    first newcomer too. No job is lost or run twice. Limits: see the module docstring."""
    with fault_stack(tmp_path) as stack:
        figures = Figures("replicas leave and join",
                          "SIGTERM a generator, start a new one, start another, SIGTERM the first newcomer")
        extra = []
        submitter = Submitter(stack).start()
        try:
            wait_until(stack, some_processing, 30, "a job in processing")
            pids = generator_pids(supervisor_pid(tmp_path))
            leaving = min(pids)
            os.kill(pids[leaving], signal.SIGTERM)
            extra.append(start_generator(stack, tmp_path, "faults-joiner-1"))
            wait_until(stack, n_done(12), 60, "more jobs done")
            extra.append(start_generator(stack, tmp_path, "faults-joiner-2"))
            wait_until(stack, lambda rows: any(r["replica"] == "faults-joiner-1" for r in rows.values()), 60,
                       "the first newcomer to take a job")
            stop(extra[0][0])
            healed_at = time.monotonic()
            submitter.join()
            check_invariants(stack, submitter, figures, healed_at, extra_logs=[log for _, log in extra])
        finally:
            for proc, _ in extra:
                stop(proc)
        record(fault_results, figures)
        assert figures.done == figures.accepted
