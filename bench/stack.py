"""An isolated GAZE stack for the benchmarks: its own database, RabbitMQ vhost, port, Redis prefix,
media and run directories (as tests/stack.py makes for the e2e tests), so a dev stack on the same
machine is never touched; plus the machine's description and per-process CPU accounting.

The processes are the ones `gaze up` supervises, started one by one so generators can be started and
stopped on their own. Everything is removed on `Stack.stop()`.
"""
from __future__ import annotations

import contextlib
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from urllib.parse import quote

import psycopg
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared import config  # noqa: E402  (plain settings module: no eventlet, no psycopg)

BIN = Path(sys.executable).parent
GAZE = BIN / "gaze"
GUNICORN = BIN / "gunicorn"
GATEWAY_APP = "services.gateway.asgi:app"
GUNICORN_CONF = "python:services.gateway.gunicorn_conf"
PRESET = "example_01"

ADMIN_DB = os.environ.get("GAZE_TEST_ADMIN_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BROKER = os.environ.get("GAZE_TEST_AMQP_BASE", "amqp://guest:guest@127.0.0.1:5672")
WORK_QUEUE = "gaze.generate"
REPLICA = "bench-generator"



def log(message):
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# --- the machine ----------------------------------------------------------------------------------------

def percentile(values, q):
    """The q-th percentile (nearest rank) of `values`; NaN for none."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def publish(text: str, markdown_path=None) -> None:
    """Print a benchmark's report and, when asked, write it to a markdown file."""
    print(text)
    if markdown_path:
        Path(markdown_path).write_text(text + "\n")


def machine_description() -> dict:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    try:
        nproc = int(subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout)
    except (OSError, subprocess.CalledProcessError, ValueError):
        nproc = len(os.sched_getaffinity(0))
    wrk_version = ""
    with contextlib.suppress(OSError):
        out = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout
        wrk_version = out.split("[")[0].replace("wrk", "").strip()
    rabbit = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        rabbit = subprocess.run(["rabbitmqctl", "-q", "version"], capture_output=True, text=True,
                                timeout=30).stdout.strip()
    postgres = ""
    with contextlib.suppress(psycopg.Error), psycopg.connect(ADMIN_DB, autocommit=True) as conn:
        postgres = conn.execute("SHOW server_version").fetchone()[0]
    return {"nproc": nproc, "cpu_model": model, "memory_gib": round(mem_kib / 1024 / 1024, 1),
            "kernel": platform.release(), "python": platform.python_version(),
            "gunicorn": metadata.version("gunicorn"), "falcon": metadata.version("falcon"),
            "wrk": wrk_version, "postgresql": postgres, "rabbitmq": rabbit,
            "loadavg_at_start": os.getloadavg()}


# --- CPU accounting from /proc -------------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")
BY_COMM = {"beam.smp": "rabbitmq", "postgres": "postgres", "redis-server": "redis"}


def _proc_stats():
    """(pid, comm, the fields of /proc/<pid>/stat after comm: state, ppid, pgrp, ...) for every process now alive."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        yield int(entry.name), raw[raw.index("(") + 1:raw.rindex(")")], raw[raw.rindex(")") + 2:].split()


def _proc_ticks() -> dict:
    """{pid: (comm, pgrp, utime + stime ticks)} for every process now alive."""
    out = {}
    for pid, comm, rest in _proc_stats():
        out[pid] = (comm, int(rest[2]), int(rest[11]) + int(rest[12]))
    return out


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]                      # idle + iowait
    total = sum(values[:8])                           # guest time is already in user
    return total - idle, total


class CpuMeter:
    """CPU used by each part of the stack between start() and stop(), in cores (1.0 = one core busy)."""

    def __init__(self, groups: dict, classify=None):
        self.groups = groups                          # {pgrp: name} of the processes we started
        self.classify = classify                      # (pid, comm) -> name or None, before BY_COMM

    def start(self):
        self.t0, self.procs0, self.machine0 = time.monotonic(), _proc_ticks(), _machine_ticks()
        self.children0 = resource.getrusage(resource.RUSAGE_CHILDREN)

    def stop(self) -> dict:
        elapsed = time.monotonic() - self.t0
        procs1, machine1 = _proc_ticks(), _machine_ticks()
        children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        used: dict[str, float] = {}
        for pid, (comm, pgrp, ticks) in procs1.items():
            before = self.procs0.get(pid)
            delta = ticks - (before[2] if before and before[0] == comm else 0)
            if delta <= 0:
                continue
            name = (self.groups.get(pgrp) or (self.classify and self.classify(pid, comm)) or BY_COMM.get(comm)
                    or "other")
            used[name] = used.get(name, 0.0) + delta / CLK_TCK
        # wrk has exited by now: its CPU is in our children's rusage
        used["wrk"] = (children1.ru_utime + children1.ru_stime) - (self.children0.ru_utime + self.children0.ru_stime)
        busy = (machine1[0] - self.machine0[0]) / CLK_TCK
        cores = {name: seconds / elapsed for name, seconds in used.items()}
        cores["machine"] = busy / elapsed
        return cores


SYSTEM_RABBITMQ_HOME = "/var/lib/rabbitmq"     # the Debian package's rabbitmq user's home


def shared_server_classifier(db_name: str):
    """A CpuMeter `classify` that splits the machine's shared servers (issue 16): the system RabbitMQ server's
    beam.smp (home SYSTEM_RABBITMQ_HOME) is `rabbitmq`, other RabbitMQ nodes someone runs beside it (a test's
    cluster) `rabbitmq (other nodes)`, and a `rabbitmqctl` (anyone's: each starts an Erlang VM of its own,
    about a second of CPU) `rabbitmqctl`; PostgreSQL's backends for `db_name` and its background processes (WAL writer,
    checkpointer ...: they serve every database) are `postgres`, other databases' backends
    `postgres (other databases)`. Read from each process's command line (its title, for PostgreSQL)."""
    seen: dict[int, str | None] = {}
    # a backend's title: postgres: [15/main: ]user database host(port) state
    backend_title = re.compile(r"^postgres: (?:\S+/\S+: )?\S+ (\S+) (?:\S+\(\d+\)|\[local\])")

    def classify(pid, comm):
        if comm not in ("beam.smp", "postgres"):
            return None
        if pid not in seen:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                cmdline = ""
            if comm == "beam.smp":
                seen[pid] = ("rabbitmqctl" if "rabbit boot" not in cmdline
                             else "rabbitmq" if f"-home {SYSTEM_RABBITMQ_HOME} " in cmdline else "rabbitmq (other nodes)")
            else:
                match = backend_title.match(cmdline)
                seen[pid] = "postgres (other databases)" if match and match.group(1) != db_name else "postgres"
        return seen[pid]

    return classify


# --- processes ------------------------------------------------------------------------------------------

@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path

    @classmethod
    def start(cls, name, argv, env, workdir: Path):
        logfile = workdir / f"{name}.log"
        with open(logfile, "ab") as out:
            popen = subprocess.Popen([str(a) for a in argv], cwd=ROOT, env=env, stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        return cls(name, popen, logfile)

    @property
    def pgrp(self):
        return self.popen.pid

    def alive(self):
        return self.popen.poll() is None

    def stop(self, timeout=60):
        if self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()
        # gunicorn workers / nameko children share the group: make sure none lingers
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)

    def tail(self, lines=40):
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


def _chunks(iterable, size):
    chunk = []
    for item in iterable:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rabbitmqctl(*args) -> str:
    return subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True,
                          timeout=60).stdout


def queue_state(vhost) -> dict:
    """{"messages": n, "consumers": n} of the work queue in `vhost` (zeros if it does not exist yet)."""
    out = rabbitmqctl("list_queues", "-p", vhost, "name", "messages", "consumers")
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == WORK_QUEUE:
            return {"messages": int(parts[1]), "consumers": int(parts[2])}
    return {"messages": 0, "consumers": 0}


# --- the isolated stack ---------------------------------------------------------------------------------

@dataclass
class Stack:
    workdir: Path
    presets: int
    url: str = ""
    key: str = ""
    db_name: str = ""
    db_url: str = ""
    vhost: str = ""
    env: dict = field(default_factory=dict)
    procs: dict = field(default_factory=dict)
    session: requests.Session = field(default_factory=requests.Session)
    cleanup_notes: list = field(default_factory=list)
    # settings every process of the stack gets on top of the isolated ones (e.g. GAZE_SCHEDULING)
    extra_env: dict = field(default_factory=dict)

    # set-up ------------------------------------------------------------------------------------------
    def start(self):
        self.db_name = f"gaze_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(ADMIN_DB, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db_name}"')
        self.db_url = ADMIN_DB.rsplit("/", 1)[0] + "/" + self.db_name
        self.vhost = f"gaze_bench_{uuid.uuid4().hex[:10]}"
        rabbitmqctl("add_vhost", self.vhost)
        rabbitmqctl("set_permissions", "-p", self.vhost, "guest", ".*", ".*", ".*")
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        run_dir = self.workdir / "run"
        self.env = dict(
            os.environ,
            GAZE_DATABASE_URL=self.db_url, GAZE_AMQP_URI=f"{BROKER}/{quote(self.vhost, safe='')}",
            GAZE_BIND=f"127.0.0.1:{port}", GAZE_PUBLIC_URL=self.url, GAZE_MEDIA_ROOT=str(self.workdir / "media"),
            GAZE_RUN_DIR=str(run_dir), PROMETHEUS_MULTIPROC_DIR=str(run_dir / "prometheus"),
            GAZE_ADMIN_PASSWORD=uuid.uuid4().hex, GAZE_ROOT=str(ROOT), GAZE_REDIS_PREFIX=self.db_name,
            PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            # one key submits thousands of requests a second: a submit limit that is counted (its Redis
            # round trip is part of what is measured) but never reached; reads keep the default (off)
            GAZE_RATE_LIMIT_SUBMIT=os.environ.get("GAZE_RATE_LIMIT_SUBMIT", "100000000/minute"),
            **self.extra_env,
        )
        run_dir.mkdir(parents=True, exist_ok=True)
        init = subprocess.run([str(GAZE), "init"], cwd=ROOT, env=self.env, capture_output=True, text=True,
                              timeout=120)
        # stdout is not a terminal, so the new key is in the owner-only secrets file it names
        match = re.search(r"written to a file only you can read:\n\s+(\S[^\n]*)\n", init.stdout)
        keys = re.findall(r"^API key: (gz_\S+)$", Path(match.group(1)).read_text(), re.MULTILINE) if match else []
        if init.returncode or not keys:
            raise SystemExit(f"gaze init failed:\n{init.stdout}\n{init.stderr}")
        self.key = keys[-1]
        self.session.headers.update({"X-API-Key": self.key, "Content-Type": "application/json"})
        self._add_presets()
        for name in ("presets", "jobs"):
            self.procs[name] = Proc.start(name, [GAZE, "service", name], self.env, self.workdir)
        self.procs["gateway"] = Proc.start("gateway", [GUNICORN, "--config", GUNICORN_CONF, GATEWAY_APP],
                                           self.env, self.workdir)
        self._wait_ready()

    def _add_presets(self):
        """The shipped example preset plus copies of it, so the list has `presets` entries (inserted
        before the presets service starts)."""
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            for n in range(2, self.presets + 1):
                conn.execute(
                    "INSERT INTO presets.presets (slug, name, prompt, negative, checkpoint, width, height, steps,"
                    " cfg, sampler) SELECT %s, %s, prompt, negative, checkpoint, width, height, steps, cfg, sampler"
                    " FROM presets.presets WHERE slug = %s", (f"bench_{n:02d}", f"Bench preset {n}", PRESET))

    def _wait_ready(self, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc in self.procs.values():
                if not proc.alive():
                    raise SystemExit(f"{proc.name} exited while starting:\n{proc.tail()}")
            with contextlib.suppress(requests.RequestException):
                # every service answers: presets lists, jobs says "no such job" (404, not 503)
                if (self.get("/api/v1/presets").status_code == 200
                        and self.get(f"/api/v1/job/{uuid.uuid4()}").status_code == 404):
                    return
            time.sleep(0.3)
        raise SystemExit("the stack did not come up:\n" + "\n".join(p.tail() for p in self.procs.values()))

    def get(self, path):
        return self.session.get(self.url + path, timeout=30)

    def submit(self, count, **body) -> list[str]:
        ids = []
        while count > 0:
            n = min(count, 20)
            answer = self.session.post(f"{self.url}/api/v1/generate/{PRESET}", json={"count": n, **body}, timeout=30)
            answer.raise_for_status()
            ids += [job["job_id"] for job in answer.json()["jobs"]]
            count -= n
        return ids

    def start_generator(self):
        env = dict(self.env, GAZE_REPLICA_NAME=REPLICA)
        self.procs["generator"] = Proc.start("generator", [GAZE, "service", "generator"], env, self.workdir)

    def stop_generator(self):
        proc = self.procs.pop("generator", None)
        if proc:
            proc.stop(timeout=120)

    # data --------------------------------------------------------------------------------------------
    def prepare_jobs(self, per_state) -> dict:
        """{"pending": [ids], "processing": [ids], "done": [ids]}."""
        log(f"preparing {per_state} done jobs (one generator runs them, then stops)")
        self.start_generator()
        done = self.submit(per_state, width=256, height=256)
        deadline = time.monotonic() + 60 + 5 * per_state
        waiting = set(done)
        while waiting:
            if time.monotonic() > deadline:
                raise SystemExit(f"jobs not done in time: {sorted(waiting)[:5]}...\n{self.procs['generator'].tail()}")
            for job_id in list(waiting):
                job = self.get(f"/api/v1/job/{job_id}").json()
                if job["status"] == "failed":
                    raise SystemExit(f"job {job_id} failed: {job['error']}")
                if job["status"] == "done":
                    waiting.discard(job_id)
            time.sleep(0.2)
        self.stop_generator()
        state = queue_state(self.vhost)
        if state["consumers"]:
            raise SystemExit(f"the work queue still has {state['consumers']} consumer(s) after the generator stopped")
        log(f"preparing {per_state} pending and {per_state} processing jobs (no generator running)")
        pending = self.submit(per_state)
        processing = self.submit(per_state)
        self._start_like_a_generator(processing)
        jobs = {"pending": pending, "processing": processing, "done": done}
        deadline = time.monotonic() + 30
        for status, ids in jobs.items():
            while True:
                seen = {self.get(f"/api/v1/job/{job_id}").json()["status"] for job_id in ids}
                if seen == {status}:
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"expected every {status} job to read {status}, saw {seen}")
                time.sleep(0.2)
        return jobs

    def _start_like_a_generator(self, job_ids):
        """Put jobs in `processing` for the whole run: send exactly what a generator sends when it starts a
        job (services/generator/service.py), the jobs.claim RPC, then job_started and a job_progress
        event, from a replica name no process has. No generator runs, so nothing ever finishes them, and
        the jobs service records (and publishes to any read model) the state as it does for a real one."""
        from nameko.standalone.events import event_dispatcher
        from nameko.standalone.rpc import ClusterRpcProxy

        from shared import events

        nameko_config = {"AMQP_URI": self.env["GAZE_AMQP_URI"], "serializer": "json"}
        dispatch = event_dispatcher(nameko_config)
        with ClusterRpcProxy(nameko_config, timeout=30) as proxy:
            for job_id in job_ids:
                claim = proxy.jobs.claim(job_id, REPLICA, False)
                if not claim["run"]:
                    raise SystemExit(f"claim of job {job_id} refused: {claim}")
                dispatch(events.EVENT_SOURCE, events.JOB_STARTED,
                         events.JobStarted(job_id=job_id, replica=REPLICA, attempt=claim["attempt"]).model_dump())
                dispatch(events.EVENT_SOURCE, events.JOB_PROGRESS,
                         events.JobProgress(job_id=job_id, value=7, max=28).model_dump())

    def wait_for_replicas(self, count, timeout=120):
        """Until `count` generator replicas have reported to the jobs service (their status events)."""
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            while True:
                seen = conn.execute("SELECT count(*) FROM jobs.replicas").fetchone()[0]
                if seen >= count:
                    return
                if time.monotonic() > deadline:
                    raise SystemExit(f"only {seen} of {count} replicas reported:\n"
                                     + "\n".join(p.tail(10) for p in self.procs.values()))
                time.sleep(0.2)

    def wait_finished(self, job_ids, timeout) -> list[dict]:
        """Until every job is done or failed (read from the jobs service's table, so polling costs the
        stack nothing); returns each job's status, replica and its own timestamps (Unix seconds)."""
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            while True:
                rows = conn.execute(
                    "SELECT id::text AS id, status, replica, attempts,"
                    " extract(epoch FROM created_at)::float8, extract(epoch FROM started_at)::float8,"
                    " extract(epoch FROM finished_at)::float8, (result->>'generation_seconds')::float8"
                    " FROM jobs.jobs WHERE id = ANY(%s::uuid[])", (job_ids,)).fetchall()
                if len(rows) == len(job_ids) and all(r[1] in ("done", "failed") for r in rows):
                    keys = ("id", "status", "replica", "attempts", "created_at", "started_at", "finished_at",
                            "generation_seconds")
                    return [dict(zip(keys, r)) for r in rows]
                if time.monotonic() > deadline:
                    raise SystemExit(f"{sum(r[1] not in ('done', 'failed') for r in rows)} jobs unfinished\n"
                                     + "\n".join(p.tail(10) for p in self.procs.values()))
                time.sleep(0.1)

    def job_rows(self) -> dict:
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            return dict(conn.execute("SELECT status, count(*) FROM jobs.jobs GROUP BY status").fetchall())

    def _clean_redis(self):
        """Delete the read model's keys of this stack (GAZE_REDIS_PREFIX is the database's name), if the
        stack has a Redis read model at all."""
        settings = config.load(self.env) if self.env else None
        url = getattr(settings, "redis_url", "")
        if not url:
            return
        try:
            import redis

            client = redis.Redis.from_url(url, socket_timeout=5)
            deleted = 0
            for keys in _chunks(client.scan_iter(match=f"{self.db_name}:*", count=1000), 1000):
                deleted += client.delete(*keys)
            client.close()
            self.cleanup_notes.append(f"{deleted:,} Redis keys under the stack's own prefix `{self.db_name}:` deleted")
        except Exception as exc:  # noqa: BLE001 - clean-up reports, never hides the results
            self.cleanup_notes.append(f"**Redis keys under `{self.db_name}:` could not be deleted: {exc}**")

    # tear-down ---------------------------------------------------------------------------------------
    def stop(self, keep_workdir=False):
        for proc in reversed(list(self.procs.values())):
            proc.stop()
        self.procs.clear()
        if self.db_name:
            with contextlib.suppress(psycopg.Error), psycopg.connect(ADMIN_DB, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
                self.cleanup_notes.append(f"database {self.db_name} dropped")
        if self.vhost:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                rabbitmqctl("delete_vhost", self.vhost)
                self.cleanup_notes.append(f"vhost {self.vhost} deleted (its queues and their messages with it)")
        self._clean_redis()
        if keep_workdir:
            self.cleanup_notes.append(f"working directory kept: {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.cleanup_notes.append("working directory (media, logs) removed")


# --- what the database did (issue 16) ------------------------------------------------------------------

DATABASE_COUNTERS = ("xact_commit", "xact_rollback", "tup_inserted", "tup_updated", "tup_deleted")


def database_activity(db_name: str) -> dict:
    """pg_stat_database's counters of `db_name` now ({counter: n}). PostgreSQL 15 flushes a backend's counts
    at most once a second, so a reading lags the database by about that much."""
    with psycopg.connect(ADMIN_DB, autocommit=True) as conn:
        row = conn.execute(f"SELECT {', '.join(DATABASE_COUNTERS)} FROM pg_stat_database WHERE datname = %s",
                           (db_name,)).fetchone()
    return dict(zip(DATABASE_COUNTERS, row or (0,) * len(DATABASE_COUNTERS)))


def activity_delta(before: dict, after: dict) -> dict:
    return {name: after[name] - before[name] for name in DATABASE_COUNTERS}


def child_groups(parent_pids) -> set:
    """The process groups of the live children of `parent_pids`: a generator's worker process runs in a
    session of its own (services/generator/supervisor.py), so its group is not the generator's."""
    parents = set(parent_pids)
    return {int(rest[2]) for _, _, rest in _proc_stats() if int(rest[1]) in parents}    # pgrp of those whose ppid
