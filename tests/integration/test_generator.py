"""GeneratorService with JobsService: jobs created through RPC run to the end, PNGs land in the media root,
and the job events can be followed by an outside subscriber."""
import dataclasses
import io
import time
import uuid
from pathlib import Path

import pytest
from nameko.standalone.rpc import ServiceRpcProxy
from nameko.testing.services import entrypoint_waiter
from PIL import Image

from services.generator.service import ClaimUnanswered, GeneratorService
from services.jobs.service import JobsService
from shared import events
from shared.entrypoints import rpc
from tests.helpers import files_for_job, job_row, make_spec, start_generator, wait_until


@pytest.fixture
def jobs_config(settings):
    """The jobs service as it runs in production (the `jobs` fixture: tests/integration/conftest.py):
    claims and events from several replicas are handled at once."""
    return settings.nameko_config()


def all_finished(db, ids):
    rows = db.execute("SELECT id::text AS id, status FROM jobs.jobs WHERE id = ANY(%s::uuid[])", (ids,)).fetchall()
    return len(rows) == len(ids) and all(row["status"] in ("done", "failed") for row in rows)


def test_a_created_job_is_generated_stored_and_announced(container_factory, settings, jobs, db, subscribe):
    completions = subscribe(events.JOB_COMPLETED)
    start_generator(container_factory, settings, "gen-solo")

    [job_id] = jobs.create(make_spec(seed=31337, width=160, height=96), 1)

    job = wait_until(lambda: (j := jobs.get(job_id))["status"] in ("done", "failed") and j, what="job finished")
    assert job["status"] == "done", job["error"]
    assert job["attempts"] == 1
    assert job["replica"] == "gen-solo"
    result = job["result"]
    assert result["seed"] == 31337
    assert result["image_url"] == f"/static/uploads/{result['relative_path']}"
    assert (result["width"], result["height"]) == (160, 96)

    path = Path(settings.media_root) / result["relative_path"]
    assert path.is_file()
    assert files_for_job(settings.media_root, job_id) == [path]  # and no temporary file left behind
    with Image.open(io.BytesIO(path.read_bytes())) as image:
        assert image.format == "PNG"
        assert image.size == (160, 96)
        assert image.text["seed"] == "31337"
        assert image.text["backend"] == "preview"

    [announced] = wait_until(lambda: completions.of(events.JOB_COMPLETED, job_id), what="job_completed event")
    assert announced["relative_path"] == result["relative_path"]
    assert announced["seed"] == 31337
    assert announced["replica"] == "gen-solo"
    assert job_row(db, job_id)["seed"] == 31337


def test_two_replicas_share_the_work_queue(container_factory, settings, jobs, db, subscribe, monkeypatch):
    started = subscribe(events.JOB_STARTED, events.JOB_FAILED)
    # The simulated GPU holds a replica for a moment per job, so both replicas are needed to keep up.
    monkeypatch.setenv("GAZE_SIMULATED_GPU_SECONDS", "0.1")     # the backend's own setting: its worker reads it
    for name in ("gen-a", "gen-b"):
        start_generator(container_factory, settings, name, backend="simulated")

    ids = jobs.create(make_spec(width=64, height=64, steps=1), 10)
    wait_until(lambda: all_finished(db, ids), timeout=30, what="10 jobs finished")

    rows = db.execute("SELECT id::text AS id, status, error, attempts, replica, result FROM jobs.jobs"
                      " WHERE id = ANY(%s::uuid[])", (ids,)).fetchall()
    assert [row["error"] for row in rows if row["status"] != "done"] == []
    assert {row["replica"] for row in rows} == {"gen-a", "gen-b"}
    assert all(row["attempts"] == 1 for row in rows)
    for row in rows:
        [path] = files_for_job(settings.media_root, row["id"])
        assert path == Path(settings.media_root) / row["result"]["relative_path"]
    assert sorted(p["job_id"] for p in started.of(events.JOB_STARTED)) == sorted(ids), "each job ran once"
    assert started.of(events.JOB_FAILED) == []


def test_a_replica_claims_its_next_job_while_the_gpu_runs_one_at_a_time(container_factory, settings, jobs, db,
                                                                         monkeypatch):
    """Prefetch 2: the next job is claimed (reserved, still pending) during the current one, and the
    backend never runs two jobs at once."""
    replica_settings = dataclasses.replace(settings, replica_name="gen-pipelined", backend="simulated")
    monkeypatch.setenv("GAZE_SIMULATED_GPU_SECONDS", "0.4")     # the backend's own setting: its worker reads it
    container_factory(GeneratorService, replica_settings.nameko_config(max_workers=2)).start()
    ids = jobs.create(make_spec(width=64, height=64), 3)

    def reserved_while_another_runs():
        rows = {r["id"]: r for r in jobs.get_many(ids)}
        running = [i for i in ids if rows[i]["status"] == "processing"]
        waiting = [i for i in ids if rows[i]["status"] == "pending" and rows[i]["attempts"] == 1]
        return (running, waiting) if len(running) == 1 and waiting else None

    running, [waiting] = wait_until(reserved_while_another_runs, what="one running, the next one claimed")
    assert jobs.get(waiting)["started_at"] is None, "a claimed job waiting for the GPU has not started"
    wait_until(lambda: all_finished(db, ids), timeout=30, what="all finished")
    rows = sorted(jobs.get_many(ids), key=lambda r: r["started_at"])
    assert [r["status"] for r in rows] == ["done"] * 3
    assert all(r["attempts"] == 1 for r in rows)
    for earlier, later in zip(rows, rows[1:]):
        # one GPU: the next run starts only after the previous run's backend time is over (started_at is
        # when the jobs service recorded the job_started event, a few ms after the start: hence the slack;
        # two runs at once would start ~0.4 s apart less)
        assert later["started_at"] >= earlier["started_at"] + earlier["result"]["generation_seconds"] - 0.1


def test_a_jobs_log_lines_are_json_with_its_job_id_as_a_field(container_factory, settings, jobs, capfd):
    """Issue 5: the jobs and generator services' lines for a job (queued, started, the backend's own
    lines in the worker process, done) are JSON objects carrying job_id (and replica, attempt) as fields."""
    import json
    import logging

    from shared import logs

    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logs.formatter("generator", "json"))
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)   # setLevel, not .level =: it clears the loggers' cached isEnabledFor
    try:
        start_generator(container_factory, settings, "gen-logs", backend="tests.backends:ScriptedBackend")
        [job_id] = jobs.create(make_spec(width=64, height=64), 1)
        wait_until(lambda: jobs.get(job_id)["status"] == "done", what="job done")
        wait_until(lambda: f"job {job_id}: done" in buffer.getvalue(), what="the done line")
    finally:
        root.removeHandler(handler)
        root.setLevel(level)

    lines = [json.loads(line) for line in buffer.getvalue().splitlines()]   # every line is one JSON object
    mine = {line["msg"].split(": ", 1)[-1].split(" ")[0]: line for line in lines if line.get("job_id") == job_id}
    # the worker process writes its lines to the stderr it inherited: a backend logging like comfyui's
    worker_lines = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith("{")]
    mine.update({"rendering": line for line in worker_lines
                 if line.get("job_id") == job_id and line["msg"].startswith("job started in the backend")})
    assert {"queued", "started", "rendering", "done"} <= set(mine), [line["msg"] for line in lines]
    assert mine["queued"]["logger"] == "services.jobs.service"
    assert mine["started"]["msg"] == f"job {job_id}: started on gen-logs (attempt 1)"
    assert mine["done"]["msg"].startswith(f"job {job_id}: done in ")
    for name in ("started", "done"):
        assert (mine[name]["replica"], mine[name]["attempt"]) == ("gen-logs", 1), mine[name]
    # the backend's own lines: the GPU starts before the claim's answer tells the attempt number
    assert mine["rendering"]["replica"] == "gen-logs" and mine["rendering"]["service"] == "generator-worker"
    assert mine["rendering"]["logger"] == "tests.backends"


def test_a_duplicate_work_order_runs_speculatively_but_leaves_no_trace(container_factory, settings, jobs, db,
                                                                          subscribe):
    """A first delivery starts on the GPU before the claim answers. For a job another replica has taken,
    the claim says no: the result is thrown away, no file, no event, and the other replica's claim stands."""
    seen = subscribe(events.JOB_STARTED, events.JOB_PROGRESS, events.JOB_COMPLETED, events.JOB_FAILED)
    [taken] = jobs.create(make_spec(width=64, height=64), 1)
    assert jobs.claim(taken, "gen-elsewhere", False)["run"] is True
    # the jobs service already published this job's order; the duplicate below is the outbox's kind
    order = events.WorkOrder(job_id=taken, spec=make_spec(width=64, height=64), created_at=1.0)
    start_generator(container_factory, settings, "gen-dup")
    from kombu import Connection, Producer
    with Connection(settings.amqp_uri) as conn:
        Producer(conn.default_channel).publish(order.model_dump(), exchange=events.WORK_EXCHANGE,
                                               routing_key=events.WORK_ROUTING_KEY, serializer="json",
                                               declare=[events.work_queue(settings.max_attempts)])
    [marker] = jobs.create(make_spec(width=64, height=64), 1)   # queued behind both copies of `taken`
    wait_until(lambda: all_finished(db, [marker]), timeout=30, what="the marker job finished")
    wait_until(lambda: len(seen.of(events.JOB_COMPLETED, marker)) == 1, what="marker completed event")

    row = job_row(db, taken)
    assert (row["status"], row["attempts"], row["replica"]) == ("pending", 1, "gen-elsewhere")
    assert files_for_job(settings.media_root, taken) == []
    assert [kind for kind, payload in seen.collect() if payload.get("job_id") == taken] == []


def test_a_job_goes_back_to_the_queue_while_the_jobs_service_is_down(container_factory, settings, db, clean_jobs,
                                                                       work_queue):
    """The claim cannot reach the jobs service: the order is handled again by the same replica after a
    pause (held, never acked and lost, nor returned to the queue, which would count against its delivery
    limit); once the jobs service is back the job is claimed as a redelivery and finishes. The unanswered
    claim waited in the jobs service's queue and counts as attempt 1 when it is finally handled; the
    redelivery's claim is attempt 2, the one that runs. On the shared line (GAZE_SCHEDULING=fcfs): a replica
    that cannot reach the jobs service is never given a checkpoint's line (tests/unit/test_scheduling.py)."""
    settings = dataclasses.replace(settings, scheduling="fcfs")
    jobs_container = container_factory(JobsService, settings.nameko_config())
    jobs_container.start()
    with ServiceRpcProxy("jobs", {"AMQP_URI": settings.amqp_uri, "serializer": "json"}, timeout=10) as proxy:
        [job_id] = proxy.create(make_spec(width=64, height=64), 1)
    jobs_container.stop()
    # the order's handling ends in an unanswered claim, which sends it back to the queue (after a 2 s
    # pause: the jobs service is back before its redelivery is claimed)
    with unanswered_claims(start_generator(container_factory, settings, "gen-orphan", rpc_timeout=1.0), 1):
        pass
    assert job_row(db, job_id)["status"] == "pending"
    # one worker: the claims are handled in the order they were sent (the unanswered one first)
    container_factory(JobsService, settings.nameko_config(max_workers=1)).start()
    wait_until(lambda: all_finished(db, [job_id]), timeout=30, what="the job finished after all")
    row = job_row(db, job_id)
    assert (row["status"], row["attempts"], row["replica"]) == ("done", 2, "gen-orphan")
    assert len(files_for_job(settings.media_root, job_id)) == 1


def unanswered_claims(generator, count):
    """A context manager that, on exit, has waited until `count` handlings of a work order by `generator`
    ended with an unanswered claim (ClaimUnanswered: the order goes back to the queue)."""
    failures = []

    def claim_failed(worker_ctx, result, exc_info):
        if exc_info is not None and issubclass(exc_info[0], ClaimUnanswered):
            failures.append(worker_ctx.args[0]["job_id"])
        return len(failures) >= count

    return entrypoint_waiter(generator, "generate", timeout=30, callback=claim_failed)


class SilentJobs:
    """A `jobs` service whose claim never answers in time: like a reply lost with the broker. Its RPC queue
    is declared as the jobs service declares it (a quorum queue, shared/entrypoints.py)."""
    name = "jobs"

    @rpc
    def claim(self, job_id, replica, redelivered=False):
        time.sleep(30)   # the scenario, not a wait: an answer that comes far too late


def test_a_claim_without_an_answer_sends_the_order_back_and_frees_the_gpu(container_factory, settings,
                                                                         work_queue):
    """nameko's RPC proxy would wait for ever for a lost reply, holding the replica's GPU: the claim is
    given GAZE_RPC_TIMEOUT, then the order goes back to the queue (requeued, never acked) and the
    replica stays free for the next one."""
    container_factory(SilentJobs, settings.nameko_config()).start()
    replica = dataclasses.replace(settings, replica_name="gen-unanswered", rpc_timeout=1.0)
    generator = container_factory(GeneratorService, replica.nameko_config(max_workers=2))
    generator.start()
    from kombu import Connection, Producer
    ids = [str(uuid.uuid4()) for _ in range(2)]
    # both claims time out (1 s each, one after the other on the one GPU)
    with unanswered_claims(generator, 2), Connection(settings.amqp_uri) as conn:
        for job_id in ids:
            order = events.WorkOrder(job_id=job_id, spec=make_spec(width=64, height=64), created_at=1.0)
            Producer(conn.default_channel).publish(order.model_dump(), exchange=events.WORK_EXCHANGE,
                                                   routing_key=events.WORK_ROUTING_KEY, serializer="json",
                                                   declare=[events.work_queue(settings.max_attempts)])
    started = time.monotonic()
    generator.stop()         # returns once the workers have requeued their orders
    assert time.monotonic() - started < 15, "no worker hung on the lost reply"
    orders = work_queue.take(2, timeout=10)
    assert sorted(o.payload["job_id"] for o in orders) == sorted(ids), "both orders back in the queue"
    assert files_for_job(settings.media_root, ids[0]) == [] and files_for_job(settings.media_root, ids[1]) == []


def test_a_replica_answers_its_own_health_endpoint_with_its_workers_truth(container_factory, settings, jobs,
                                                                           monkeypatch):
    """GAZE_GENERATOR_HEALTH_BIND: 200 with the status while the replica serves; 503 once its worker is
    frozen (found stuck), then 200 again with a fresh worker."""
    import os
    import signal

    import requests

    from services.generator import supervisor
    from tests.comfyui_fake import free_port

    monkeypatch.setattr(supervisor, "PING_INTERVAL", 0.2)
    port = free_port()
    start_generator(container_factory, settings, "gen-health", generator_health_bind=f"127.0.0.1:{port}",
                    worker_stall_seconds=1.0)
    url = f"http://127.0.0.1:{port}/"
    first = wait_until(lambda: (r := requests.get(url, timeout=5)).status_code == 200 and r.json(), what="200")
    assert first["replica"] == "gen-health" and first["state"] in ("idle", "busy") and first["healthy"]
    os.kill(first["worker_pid"], signal.SIGSTOP)
    try:
        frozen = wait_until(lambda: (r := requests.get(url, timeout=5)).status_code == 503 and r.json(),
                            timeout=10, what="503 while the frozen worker is replaced")
        assert frozen["state"] in ("stuck", "restarting") and not frozen["healthy"]
        again = wait_until(lambda: (r := requests.get(url, timeout=5)).status_code == 200 and r.json(),
                           timeout=15, what="200 with a fresh worker")
        assert again["worker_pid"] != first["worker_pid"] and again["restarts"] == 1
    finally:
        try:
            os.kill(first["worker_pid"], signal.SIGCONT)
        except ProcessLookupError:
            pass
