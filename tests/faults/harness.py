"""The harness of the fault-injection scenarios (tests/faults/test_faults.py) against the real stack (`gaze
up` under supervisord: real RabbitMQ, PostgreSQL, Redis and service processes; see tests/stack.py). Each
scenario submits a stream of jobs spread over 3 checkpoints (so they wait in per-checkpoint lines and the
replicas load and switch models: issue 15), injects one fault while they run, heals it, and checks the
invariants in `check_invariants`.

Scenarios 3 and 4 restart the machine's shared RabbitMQ / PostgreSQL: never run this suite beside another
test run. Every scenario heals in a `finally:` (start_app, PostgreSQL back up) whatever happened."""
import collections
import contextlib
import json
import os
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psycopg
import requests

from shared.config import DEFAULT_CHECKPOINTS


# the jobs name these checkpoints in turn, so every scenario runs with a line per checkpoint (issue 15)
FAULT_CHECKPOINTS = list(DEFAULT_CHECKPOINTS)
# the limits every fault stack runs with (stated in each scenario's docstring too)
FAULT_ENV = {
    "GAZE_BACKEND": "simulated",
    "GAZE_SIMULATED_GPU_SECONDS": "0.2",      # each job holds its replica's "GPU" for 0.2 s ...
    "GAZE_SIMULATED_LOAD_SECONDS": "0.3",     # ... after 0.3 s more when its checkpoint is not the one loaded
    "GAZE_CHECKPOINTS": ",".join(FAULT_CHECKPOINTS),
    "GAZE_SCHEDULING": "checkpoint",
    # 3 checkpoints on 2 replicas: a line nobody serves gets one within 5 s (the default 60 s would hold the
    # last jobs of a scenario that long)
    "GAZE_SCHEDULER_MAX_WAIT_SECONDS": "5",
    "GAZE_STUCK_JOB_SECONDS": "20",           # a job with no sign of life for 20 s is taken back ...
    "GAZE_STUCK_SWEEP_SECONDS": "2",          # ... looked for every 2 s
    "GAZE_HEARTBEAT": "5",                    # AMQP heartbeat: a dead broker connection is noticed in ~10 s
    "GAZE_DISPATCH_SWEEP_SECONDS": "5",       # outbox sweep: jobs written but never published
}
TOTAL_JOBS = 40
PER_REQUEST = 2
SUBMIT_INTERVAL = 0.5        # 2 jobs every 0.5 s: the 40 jobs arrive over ~10 s, across the fault
TERMINAL_DEADLINE = 150      # seconds after healing for every job to be done or failed
MAX_ATTEMPTS = 3
RESULTS_FILE = "fault_results.json"


# --- processes under supervisord -------------------------------------------------------------------

def supervisor_pid(workdir: Path) -> int:
    return int((workdir / "run" / "supervisord.pid").read_text())


def service_pid(workdir: Path, service: str) -> int | None:
    """The pid of `gaze service <service>` under supervisord (one process: presets or jobs)."""
    children = subprocess.run(["pgrep", "-P", str(supervisor_pid(workdir))], capture_output=True,
                              text=True, check=False).stdout.split()
    for pid in children:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"service" in argv and service.encode() in argv:
            return int(pid)
    return None


def wait_for(predicate, timeout, what, interval=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# --- shared infrastructure, healed in finally -----------------------------------------------------

def rabbitmqctl(*args, check=True, timeout=120):
    return subprocess.run(["rabbitmqctl", "-q", *args], check=check, capture_output=True, text=True,
                          timeout=timeout)


def heal_rabbitmq():
    """start_app whatever state the node is in (a no-op when it runs), then wait until it answers."""
    rabbitmqctl("start_app", check=False)
    rabbitmqctl("await_startup", check=False)


def pg_cluster():
    versions = sorted(os.listdir("/etc/postgresql"))
    return versions[-1], "main"


def pg_ready() -> bool:
    return subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-t", "2"], check=False).returncode == 0


def pg_ctlcluster(action):
    version, cluster = pg_cluster()
    return subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, cluster, action],
                          capture_output=True, text=True, timeout=120, check=False)


def heal_postgres():
    """Make sure PostgreSQL is up and accepting connections."""
    if not pg_ready():
        pg_ctlcluster("start")
    wait_for(pg_ready, 60, "PostgreSQL to accept connections", interval=0.5)


# --- the workload -------------------------------------------------------------------------------------

class Submitter:
    """Posts PER_REQUEST jobs every SUBMIT_INTERVAL until TOTAL_JOBS were accepted (or time runs out),
    across the fault, each request naming the next of FAULT_CHECKPOINTS. Counts every answer: a 202's jobs
    are accepted; anything else is a refusal (503 while a dependency is down is the expected one). A
    timeout or any 5xx may still have created its jobs (see README, "Reliability": a request sent while the
    broker is down is published once it is back, and then answered 503 because the gateway's reply
    consumer died): `uncertain_jobs` counts the jobs those requests asked for."""

    def __init__(self, stack, total=TOTAL_JOBS, max_seconds=90, per_request=PER_REQUEST):
        self.stack, self.total, self.max_seconds, self.per_request = stack, total, max_seconds, per_request
        self.accepted: list[str] = []
        self.answers = collections.Counter()
        self.uncertain_jobs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def _run(self):
        deadline = time.monotonic() + self.max_seconds
        sent = 0
        while len(self.accepted) < self.total and time.monotonic() < deadline and not self._stop.is_set():
            count = min(self.per_request, self.total - len(self.accepted))
            checkpoint = FAULT_CHECKPOINTS[sent % len(FAULT_CHECKPOINTS)]
            sent += 1
            try:
                response = requests.post(self.stack.url + "/api/v1/generate/example_01",
                                         headers=self.stack.headers(), timeout=30,
                                         json={"count": count, "checkpoint": checkpoint, "width": 64, "height": 64})
            except requests.RequestException as exc:
                self.answers[type(exc).__name__] += 1
                self.uncertain_jobs += count
            else:
                self.answers[response.status_code] += 1
                if response.status_code == 202:
                    self.accepted.extend(job["job_id"] for job in response.json()["jobs"])
                elif response.status_code >= 500:
                    self.uncertain_jobs += count
            time.sleep(SUBMIT_INTERVAL)   # the workload's pace, not a wait for a condition

    def join(self, timeout=120):
        self._thread.join(timeout)
        self._stop.set()
        assert not self._thread.is_alive(), "submitter did not finish"


def query(stack, sql, timeout=60) -> list:
    """The rows of `sql` on the stack's database (retried while PostgreSQL comes back)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(stack.env["GAZE_DATABASE_URL"], connect_timeout=3) as conn:
                return conn.execute(sql).fetchall()
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def job_rows(stack, timeout=60) -> dict:
    """{job id: row} straight from the stack's database."""
    rows = query(stack, "SELECT id::text, status, attempts, replica, result->>'relative_path', spec->>'checkpoint'"
                        " FROM jobs.jobs", timeout)
    return {r[0]: {"status": r[1], "attempts": r[2], "replica": r[3], "relative_path": r[4], "checkpoint": r[5]}
            for r in rows}


def wait_until(stack, predicate, timeout, what):
    """The job rows once predicate(rows) holds."""
    def check():
        rows = job_rows(stack)
        return rows if predicate(rows) else None
    return wait_for(check, timeout, what, interval=0.3)


def some_processing(rows):
    return [job_id for job_id, row in rows.items() if row["status"] == "processing" and row["replica"]]


def n_done(n):
    return lambda rows: sum(r["status"] == "done" for r in rows.values()) >= n


def log_lines(*logs: Path):
    for log in logs:
        with contextlib.suppress(OSError):
            for line in log.read_text(errors="replace").splitlines():
                if line.startswith("{"):
                    with contextlib.suppress(ValueError):
                        yield json.loads(line)


@dataclass
class Figures:
    scenario: str
    injected: str
    accepted: int = 0
    rows: int = 0
    done: int = 0
    failed: int = 0
    doubled: int = 0                  # jobs a generator finished and announced more than once
    ignored_completions: int = 0      # second completions the jobs service ignored
    max_attempts: int = 0
    retried: int = 0                  # jobs that needed more than one attempt
    refused_requests: int = 0         # submissions answered with something other than 202
    unacknowledged: int = 0           # jobs created (rows) by a request that was answered 5xx, not 202
    seconds_to_drain: float = 0.0     # from healing to every job terminal
    answers: dict = field(default_factory=dict)
    checkpoints: dict = field(default_factory=dict)   # jobs per checkpoint
    loads: int = 0                    # model loads the replicas reported (a replica restarted counts afresh)


def check_invariants(stack, submitter: Submitter, figures: Figures, healed_at: float, extra_logs=(),
                     strict_rows=True):
    """Every job terminal within TERMINAL_DEADLINE of healing; the jobs name every checkpoint of the mix;
    accepted jobs == rows recorded; every done job has exactly one image file (the one its result names),
    no done job was finished twice with two files; attempts bounded by GAZE_MAX_ATTEMPTS. Fills and
    returns `figures`."""
    rows = wait_until(stack, lambda rows: rows and all(r["status"] in ("done", "failed") for r in rows.values()),
                      TERMINAL_DEADLINE, "every job to be done or failed")
    figures.seconds_to_drain = round(time.monotonic() - healed_at, 1)
    # counted from the generators' own log lines: "job <id>: done in ..." once per image announced
    parsed = list(log_lines(stack.log, *extra_logs))
    done_lines = collections.Counter(p.get("job_id") for p in parsed
                                     if p.get("service") == "generator" and ": done in " in p.get("msg", ""))
    ignored = collections.Counter(p.get("job_id") for p in parsed if "completion ignored" in p.get("msg", ""))
    figures.ignored_completions = sum(ignored.values())
    figures.accepted = len(submitter.accepted)
    figures.rows = len(rows)
    figures.done = sum(r["status"] == "done" for r in rows.values())
    figures.failed = sum(r["status"] == "failed" for r in rows.values())
    figures.doubled = sum(n > 1 for n in done_lines.values())
    figures.max_attempts = max(r["attempts"] for r in rows.values())
    figures.retried = sum(r["attempts"] > 1 for r in rows.values())
    figures.refused_requests = sum(n for code, n in submitter.answers.items() if code != 202)
    figures.answers = {str(k): v for k, v in submitter.answers.items()}
    figures.unacknowledged = len(set(rows) - set(submitter.accepted))
    figures.checkpoints = dict(collections.Counter(r["checkpoint"] for r in rows.values()))
    figures.loads = query(stack, "SELECT coalesce(sum(loads), 0)::int FROM jobs.replicas")[0][0]
    print(f"\n[faults] {json.dumps(asdict(figures))}")

    assert figures.accepted == submitter.total, (figures, "the workload did not get all its jobs accepted")
    # the scenario ran with several lines: the jobs of every checkpoint of the mix
    assert set(figures.checkpoints) == set(FAULT_CHECKPOINTS), figures.checkpoints
    assert len(set(submitter.accepted)) == len(submitter.accepted)
    missing = set(submitter.accepted) - set(rows)
    assert not missing, f"accepted (202) but never recorded: {sorted(missing)}"
    # Rows nobody was told about: only from requests whose answer was a 5xx or lost (never from a
    # refused 4xx), at most as many jobs as those requests asked for. They must end like the others
    # (checked below). Counted as `unacknowledged`; `check_invariants(strict_rows=True)` forbids them.
    extra = set(rows) - set(submitter.accepted)
    assert len(extra) <= submitter.uncertain_jobs, f"recorded but never asked for: {sorted(extra)}"
    if strict_rows:
        assert not extra, f"recorded but the client was told they were not ({submitter.answers}): {sorted(extra)}"
    for job_id, row in rows.items():
        assert row["attempts"] <= MAX_ATTEMPTS, (job_id, row)
        files = sorted(stack.media_root.rglob(f"*{job_id.replace('-', '')}*"))
        if row["status"] == "done":
            assert [str(f.relative_to(stack.media_root)) for f in files] == [row["relative_path"]], (job_id, files)
            assert done_lines[job_id] >= 1, f"job {job_id} done without a generator announcing it"
        # a job announced twice is tolerated only where the jobs service ignored the second announcement
        # (one done row, one file: checked above)
        assert done_lines[job_id] - 1 <= ignored[job_id], (job_id, row, done_lines[job_id], ignored[job_id])
    return figures
