"""Issue 15 end to end: `gaze up --generators 4` on the simulated backend with a model-load cost, jobs over
3 checkpoints (each request names its checkpoint, as a client overrides the preset's). Every job is done
once; the farm loads each model a few times, not once per job as first come first served would; a job
of a checkpoint nobody serves waits at most GAZE_SCHEDULER_MAX_WAIT_SECONDS + L + T, and its
queue_position counts only its own line; /metrics exports the backlog (total and per checkpoint) and the
replicas' loads."""
import collections
import contextlib
import json
import random
import re
import time

import psycopg
import pytest

from tests.stack import running_stack

pytestmark = pytest.mark.e2e

GPU_SECONDS = 0.1       # T: each image holds its replica this long
LOAD_SECONDS = 0.4      # L: a change of checkpoint holds it this long first
MAX_WAIT = 1.5          # GAZE_SCHEDULER_MAX_WAIT_SECONDS
CHECKPOINTS = ["e2e/common-a.safetensors", "e2e/common-b.safetensors", "e2e/rare-c.safetensors"]
COMMON, OTHER, RARE = CHECKPOINTS
SMALL = {"width": 64, "height": 64}
LOAD_MARGIN = 2         # loads allowed beyond 2 per checkpoint in a batch (the 2 × K)


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("checkpoints"), generators=4,
                       GAZE_BACKEND="simulated", GAZE_SIMULATED_GPU_SECONDS=str(GPU_SECONDS),
                       GAZE_SIMULATED_LOAD_SECONDS=str(LOAD_SECONDS), GAZE_SCHEDULING="checkpoint",
                       GAZE_SCHEDULER_MAX_WAIT_SECONDS=str(MAX_WAIT), GAZE_CHECKPOINTS=",".join(CHECKPOINTS),
                       # every replica reports within a second: the loads are read after the last job
                       GAZE_STATUS_INTERVAL_SECONDS="1") as running:
        yield running


def submit(stack, checkpoint, count=1):
    response = stack.post("/api/v1/generate/example_01", json={"count": count, "checkpoint": checkpoint, **SMALL})
    assert response.status_code == 202, response.text
    return [job["job_id"] for job in response.json()["jobs"]]


def query(stack, sql, params=()):
    with psycopg.connect(stack.env["GAZE_DATABASE_URL"], autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def job_rows(stack, ids) -> dict:
    """{job id: (status, replica, attempts, created_at, started_at, finished_at)} in Unix seconds."""
    rows = query(stack, "SELECT id::text, status, replica, attempts, extract(epoch FROM created_at)::float8,"
                        " extract(epoch FROM started_at)::float8, extract(epoch FROM finished_at)::float8"
                        " FROM jobs.jobs WHERE id = ANY(%s::uuid[])", (list(ids),))
    return {row[0]: row[1:] for row in rows}


def wait_for(predicate, timeout, what, interval=0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(interval)


def wait_ended(stack, ids, timeout=60) -> dict:
    return wait_for(lambda: (rows := job_rows(stack, ids)) and len(rows) == len(ids)
                    and all(row[0] in ("done", "failed") for row in rows.values()) and rows,
                    timeout, f"{len(ids)} jobs to end")


def reported_loads(stack, after: float) -> dict:
    """{replica: loads} from a status each of the 4 replicas published after `after` (a load happens inside a
    job, so a report after the last job's end counts them all)."""
    def fresh():
        rows = query(stack, "SELECT replica, loads, extract(epoch FROM seen_at)::float8 FROM jobs.replicas")
        return len(rows) == 4 and all(seen > after for _, _, seen in rows) and {r: n for r, n, _ in rows}
    return wait_for(fresh, 10, "every replica to report after the last job")


def done_announcements(stack) -> collections.Counter:
    """How often a generator announced each job done (its JSON log lines in the stack's log)."""
    counts = collections.Counter()
    for line in stack.log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            parsed = json.loads(line) if line.startswith("{") else {}
            if parsed.get("service") == "generator" and ": done in " in parsed.get("msg", ""):
                counts[parsed.get("job_id")] += 1
    return counts


def assert_done_once(stack, ids, rows):
    assert {row[0] for row in rows.values()} == {"done"}, collections.Counter(row[0] for row in rows.values())
    assert {row[2] for row in rows.values()} == {1}, "a job needed more than one attempt"
    announced = done_announcements(stack)
    assert [job_id for job_id in ids if announced[job_id] != 1] == []
    for job_id in ids:
        files = list(stack.media_root.rglob(f"*{job_id.replace('-', '')}*"))
        assert len(files) == 1, (job_id, files)


def metrics(stack) -> dict:
    """{(name, labels): value} of the gateway's /metrics (loopback: no token needed)."""
    response = stack.get("/metrics", headers={})
    assert response.status_code == 200, response.text
    samples = {}
    for line in response.text.splitlines():
        match = re.match(r"^([a-z_]+)(\{[^}]*\})? (\S+)$", line)
        if match:
            samples[(match.group(1), match.group(2) or "")] = float(match.group(3))
    return samples


def sample(samples, name, **labels):
    wanted = {f'{key}="{value}"' for key, value in labels.items()}
    found = [value for (metric, label_text), value in samples.items()
             if metric == name and wanted <= set(re.findall(r'[a-z_]+="[^"]*"', label_text))]
    return found[0] if len(found) == 1 else None


def test_a_rare_checkpoint_waits_its_own_line_and_at_most_the_maximum_wait(farm):
    """All 4 replicas busy on one checkpoint with ~5 s of its work waiting: two jobs of a checkpoint no
    replica serves are first and second in their own line (not behind the other 200), /metrics shows the
    backlog, and a replica comes to them within GAZE_SCHEDULER_MAX_WAIT_SECONDS + L + T."""
    backlog = [job_id for _ in range(10) for job_id in submit(farm, COMMON, count=20)]
    wait_for(lambda: len({row[1] for row in job_rows(farm, backlog).values() if row[4]}) == 4, 30,
             "every replica to start jobs of the long line")
    rare = submit(farm, RARE, count=2)
    first, second = (farm.get(f"/api/v1/job/{job_id}").json() for job_id in rare)
    assert first["status"] == "pending", "the rare job started at once: nothing left to measure"
    # within its own line: 0 and 1 while waiting (0 once a replica reserved it, None once it runs)
    assert first["queue_position"] in (0, None), first
    assert second["queue_position"] in (0, 1, None), second

    # the autoscaling signal: the total backlog, and the backlog per checkpoint, while the long line waits
    def backlog_exported():
        samples = metrics(farm)
        total, common = sample(samples, "gaze_backlog_jobs"), sample(samples, "gaze_checkpoint_backlog_jobs",
                                                                     checkpoint=COMMON)
        return total and common and (total, common)
    total, common = wait_for(backlog_exported, 10, "/metrics to show the long line's backlog", interval=0.3)
    assert total >= common > 0

    rows = wait_ended(farm, rare, timeout=30)
    assert_done_once(farm, rare, rows)
    waits = [started - created for _, _, _, created, started, _ in rows.values()]
    assert max(waits) <= MAX_WAIT + LOAD_SECONDS + GPU_SECONDS, waits
    assert_done_once(farm, backlog, wait_ended(farm, backlog, timeout=60))


def test_a_mixed_batch_is_done_once_with_a_few_loads_per_checkpoint(farm):
    """60 jobs, a third of each checkpoint, in a shuffled order: every one done once with one image; the
    replicas load at most 2 × 3 (+2) times in all, where first come first served loads for about two jobs
    in three (~40 here)."""
    before = reported_loads(farm, after=time.time())
    order = [CHECKPOINTS[n % 3] for n in range(60)]
    random.Random(15).shuffle(order)
    checkpoint_of = {job_id: checkpoint for checkpoint in order for job_id in submit(farm, checkpoint)}
    rows = wait_ended(farm, list(checkpoint_of))
    assert_done_once(farm, list(checkpoint_of), rows)
    after = reported_loads(farm, after=max(row[5] for row in rows.values()))
    loads = sum(after.values()) - sum(before.values())
    # what the replicas report cannot be fewer than what the jobs' own order shows: a replica that ran two
    # checkpoints one after the other loaded in between, and had loaded (since it started) each it ran
    runs = collections.defaultdict(list)
    for job_id, row in sorted(rows.items(), key=lambda item: item[1][4]):
        runs[row[1]].append(checkpoint_of[job_id])
    switches = sum(a != b for seq in runs.values() for a, b in zip(seq, seq[1:]))
    assert switches <= loads <= 2 * len(CHECKPOINTS) + LOAD_MARGIN, (loads, switches, dict(runs))
    assert all(after[replica] >= len(set(seq)) for replica, seq in runs.items()), (after, dict(runs))

    # /metrics carries each replica's loads as reported
    def loads_exported():
        samples = metrics(farm)
        return all(sample(samples, "gaze_replica_checkpoint_loads_total", replica=replica) == count
                   for replica, count in after.items())
    wait_for(loads_exported, 15, "/metrics to show every replica's loads", interval=0.5)
