"""SQL for the jobs schema. Every transition is one conditional UPDATE, so states only move forward
(pending → processing → done | failed) however events are duplicated or reordered."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import NamedTuple, Optional

from psycopg.types.json import Jsonb

from shared.db import Database
from shared.errors import NotFound
from shared.job_states import ACTIVE, STATES, TERMINAL, sql_list

VIEW = """id::text AS id, preset_slug, label, spec, seed, status, error, result, attempts, replica,
          progress_value, progress_max, owner, webhook, webhook_events, announced_status,
          extract(epoch FROM created_at) AS created_at, extract(epoch FROM started_at) AS started_at,
          extract(epoch FROM finished_at) AS finished_at"""
# VIEW renames columns (id, created_at, ...) to their text / epoch forms: an ORDER BY of such a name sorts
# by the renamed expression, which no index holds (a sort of every matching row); the queries below order
# by the table's own columns, `jobs.created_at`, so that they are read in order from an index.


VIEW_COLUMNS = ("id, preset_slug, label, spec, seed, status, error, result, attempts, replica, progress_value,"
                " progress_max, owner, webhook, webhook_events, announced_status, created_at, started_at, finished_at")

STATUSES = STATES
# a job waiting in its line: accepted, and not reserved by a replica (or taken back from one by the stuck sweep);
# the condition of migration 0013's partial index, which the lines are read from
WAITING_SQL = "status = 'pending' AND (attempts = 0 OR requeued)"
LINES_SQL = ("SELECT spec->>'checkpoint' AS checkpoint, count(*)::int AS waiting,"
             " extract(epoch FROM now() - min(created_at))::float8 AS oldest_wait_seconds"
             f" FROM jobs.jobs WHERE {WAITING_SQL} GROUP BY 1 ORDER BY 3 DESC")
SCHEDULER_LOCK = 0x6761_7a65_0015   # pg_advisory_xact_lock key of scheduling decisions ("gaze", issue 15)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
ACTIVE_SQL = f"({sql_list(ACTIVE)})"     # the states a transition may start from
# Upper bounds (seconds) of the job duration histograms' buckets, for queue wait and generation time
# alike: from a CPU preview (~0.2 s) to a long GPU queue. Changing them starts the new bounds at zero.
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
DURATION_METRICS = ("queue_wait", "generation")
DURATION_OUTCOMES = tuple(sorted(TERMINAL))       # a histogram per way a job can end


def parse_job_id(job_id) -> str:
    try:
        return str(uuid.UUID(str(job_id)))
    except ValueError:
        raise NotFound("job", job_id) from None


class Claimed(NamedTuple):
    """What `JobRepository.claim` decided: run (with this attempt number), or not (`reason`; `wait`: ask
    again, an earlier run still goes on); row: the job after the claim (VIEW), None when nothing changed."""
    run: bool
    attempt: int
    reason: Optional[str]
    row: Optional[dict]
    wait: bool = False


class JobRepository:
    def __init__(self, pool):
        self.pool = pool

    def create(self, jobs: list[dict], request_id=None, owner=None, webhook=None,
               webhook_events=None) -> tuple[list[dict], bool]:
        """Insert all jobs of one request in a single transaction; returns (each row (VIEW), created). With
        a `request_id` seen in the last 24 h nothing is inserted: the rows that request created come back,
        with created False. `owner`: the name of the API key that asked (None: the web UI); `webhook` and
        `webhook_events`: where the jobs' transitions are to be delivered, and which."""
        # one statement, one round trip, however many jobs: the first work order goes out sooner
        # The batch's jobs are created a microsecond apart, in the order their work orders are published:
        # newest-first lists and the read model's waiting line (ordered by created_at) then agree with the
        # work queue's order, which a shared timestamp would leave to the ids' chance.
        values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s, now() + %s * interval '1 microsecond')"] * len(jobs))
        params = [value for index, job in enumerate(jobs)
                  for value in (job["id"], job["preset_slug"], job["label"], Jsonb(job["spec"]), job["seed"], owner,
                                webhook, webhook_events, index)]
        with self.pool.connection() as conn, conn.transaction():
            if request_id is not None:
                first = conn.execute(
                    "INSERT INTO jobs.create_requests (request_id, job_ids) VALUES (%s, %s::uuid[])"
                    " ON CONFLICT (request_id) DO UPDATE SET job_ids = EXCLUDED.job_ids, created_at = now()"
                    "   WHERE jobs.create_requests.created_at < now() - interval '24 hours'"
                    " RETURNING request_id", (request_id, [job["id"] for job in jobs])).fetchone()
                if first is None:
                    earlier = conn.execute("SELECT job_ids::text[] AS ids FROM jobs.create_requests"
                                           " WHERE request_id = %s", (request_id,)).fetchone()["ids"]
                    rows = conn.execute(f"SELECT {VIEW} FROM jobs.jobs WHERE id = ANY(%s::uuid[])",
                                        (earlier,)).fetchall()
                    by_id = {row["id"]: row for row in rows}
                    return [by_id[job_id] for job_id in earlier if job_id in by_id], False
            rows = conn.execute(f"INSERT INTO jobs.jobs (id, preset_slug, label, spec, seed, owner, webhook,"
                                f" webhook_events, created_at)"
                                f" VALUES {values}"
                                f" RETURNING {VIEW}", params).fetchall()
        by_id = {row["id"]: row for row in rows}
        return [by_id[job["id"]] for job in jobs], True

    def mark_dispatched(self, job_ids: list[str]) -> None:
        with self.pool.connection() as conn:
            conn.execute("UPDATE jobs.jobs SET dispatched_at = now() WHERE id = ANY(%s::uuid[])", (job_ids,))

    def undispatched(self, older_than_seconds: float, limit: int = 500) -> list[dict]:
        with self.pool.connection() as conn:
            return conn.execute(
                "SELECT id::text AS id, spec, extract(epoch FROM created_at)::float8 AS created_at FROM jobs.jobs"
                " WHERE dispatched_at IS NULL AND status = 'pending'"
                " AND created_at < now() - make_interval(secs => %s) ORDER BY jobs.created_at LIMIT %s",
                (older_than_seconds, limit),
            ).fetchall()

    def get(self, job_id) -> dict:
        with self.pool.connection() as conn:
            row = conn.execute(f"SELECT {VIEW} FROM jobs.jobs WHERE id = %s", (parse_job_id(job_id),)).fetchone()
        if row is None:
            raise NotFound("job", job_id)
        return row

    def recent(self, limit: int, status=None) -> list[dict]:
        """The newest jobs, optionally only those with `status` (the web UI's queue page and its filter)."""
        with self.pool.connection() as conn:
            if status is None:
                return conn.execute(f"SELECT {VIEW} FROM jobs.jobs ORDER BY jobs.created_at DESC LIMIT %s",
                                    (limit,)).fetchall()
            return conn.execute(f"SELECT {VIEW} FROM jobs.jobs WHERE status = %s ORDER BY jobs.created_at DESC LIMIT %s",
                                (status, limit)).fetchall()

    def owned(self, owner: str, limit: int, status=None, preset=None, since=None, before=None) -> list[dict]:
        """`owner`'s jobs, newest first (created_at, then id, descending), at most `limit`, optionally only
        those with `status`, of `preset`, created at or after `since` (Unix seconds), and strictly before
        the `before` position (created_at microseconds, id) of the previous page's last job: a page never
        repeats or skips a job however many are created meanwhile (new jobs sort before every page)."""
        where, params = ["owner = %(owner)s"], {"owner": owner, "limit": limit}
        if status is not None:
            where.append("status = %(status)s")
            params["status"] = status
        if preset is not None:
            where.append("preset_slug = %(preset)s")
            params["preset"] = preset
        if since is not None:
            where.append("created_at >= to_timestamp(%(since)s)")
            params["since"] = since
        if before is not None:
            where.append("(created_at, id) < (%(before_at)s, %(before_id)s::uuid)")
            # exact to the microsecond (a float would not be): a batch's jobs share one created_at
            params["before_at"] = EPOCH + timedelta(microseconds=int(before[0]))
            params["before_id"] = before[1]
        with self.pool.connection() as conn:
            return conn.execute(
                f"SELECT {VIEW}, (extract(epoch FROM created_at) * 1000000)::bigint AS created_us FROM jobs.jobs"
                f" WHERE {' AND '.join(where)} ORDER BY jobs.created_at DESC, jobs.id DESC LIMIT %(limit)s", params).fetchall()

    def cancel(self, job_id) -> tuple[dict, str | None]:
        """Cancel the job if it has not ended; returns (the job after the call (VIEW), the status it had
        when cancelled, or None when it had already ended and nothing changed). NotFound for an unknown id."""
        job_id = parse_job_id(job_id)
        with self.pool.connection() as conn, conn.transaction():
            before = conn.execute("SELECT status FROM jobs.jobs WHERE id = %s FOR UPDATE", (job_id,)).fetchone()
            if before is None:
                raise NotFound("job", job_id)
            if before["status"] in TERMINAL:
                return conn.execute(f"SELECT {VIEW} FROM jobs.jobs WHERE id = %s", (job_id,)).fetchone(), None
            row = conn.execute(
                "UPDATE jobs.jobs SET status = 'cancelled', finished_at = now(), error = NULL"
                f" WHERE id = %s RETURNING {VIEW}", (job_id,)).fetchone()
            return row, before["status"]

    def mark_announced(self, job_id, status) -> None:
        """The webhooks service was told that the job reached `status` (if it still has it)."""
        with self.pool.connection() as conn:
            conn.execute("UPDATE jobs.jobs SET announced_status = status WHERE id = %s AND status = %s",
                         (parse_job_id(job_id), status))

    def unannounced(self, older_than_seconds: float, limit: int = 500) -> list[dict]:
        """Jobs with a webhook whose latest transition (started or ended) was committed more than
        `older_than_seconds` ago and never announced: the process died between the commit and the event."""
        with self.pool.connection() as conn:
            return conn.execute(
                f"SELECT {VIEW} FROM jobs.jobs"
                " WHERE webhook IS NOT NULL AND status <> 'pending' AND announced_status IS DISTINCT FROM status"
                " AND coalesce(finished_at, started_at, created_at) < now() - make_interval(secs => %s)"
                " ORDER BY coalesce(finished_at, started_at, created_at) LIMIT %s",
                (older_than_seconds, limit)).fetchall()

    def not_waiting(self, job_ids) -> list[str]:
        """The ids among `job_ids` of jobs that no longer wait for a generator (reserved, started, ended,
        or unknown): what the read model's waiting line should drop."""
        ids = [parse_job_id(job_id) for job_id in job_ids]
        with self.pool.connection() as conn:
            still = {row["id"] for row in conn.execute(
                "SELECT id::text AS id FROM jobs.jobs WHERE id = ANY(%s::uuid[]) AND status = 'pending'"
                " AND replica IS NULL", (ids,)).fetchall()}
        return [job_id for job_id in ids if job_id not in still]

    def get_many(self, job_ids) -> list[dict]:
        ids = [parse_job_id(job_id) for job_id in job_ids]
        with self.pool.connection() as conn:
            return conn.execute(f"SELECT {VIEW} FROM jobs.jobs WHERE id = ANY(%s::uuid[])", (ids,)).fetchall()

    def images(self, preset_slug: str, limit: int, offset: int) -> list[dict]:
        """Finished images of one preset, newest first, with the parameters that made each."""
        with self.pool.connection() as conn:
            return conn.execute(
                "SELECT id::text AS job_id, result->>'relative_path' AS relative_path, seed,"
                " (result->>'width')::int AS width, (result->>'height')::int AS height,"
                " spec->>'prompt' AS prompt, spec->>'negative' AS negative, spec->>'checkpoint' AS checkpoint,"
                " extract(epoch FROM finished_at)::float8 AS finished_at"
                " FROM jobs.jobs WHERE preset_slug = %s AND status = 'done'"
                " ORDER BY jobs.finished_at DESC LIMIT %s OFFSET %s",
                (preset_slug, limit, offset),
            ).fetchall()

    def random_image_per_preset(self, preset_slugs: list[str]) -> dict:
        """{slug: relative_path} with one randomly chosen finished image for each slug that has any:
        one query for a whole library page. Per slug, the first finished image whose id (a random UUID)
        follows a fresh random UUID, or else the one with the smallest id (wrapping around): at most two
        probes of jobs_done_by_preset_id per slug, whatever the number of images (not a random sort of
        all of them). Every image can be drawn; one after a wider gap between ids a little more often."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT slug AS preset_slug, coalesce("
                "  (SELECT result->>'relative_path' FROM jobs.jobs"
                "    WHERE preset_slug = slug AND status = 'done' AND id >= pivot ORDER BY id LIMIT 1),"
                "  (SELECT result->>'relative_path' FROM jobs.jobs"
                "    WHERE preset_slug = slug AND status = 'done' ORDER BY id LIMIT 1)) AS relative_path"
                # OFFSET 0: the pivot is drawn once per slug here, not inlined into the probes
                " FROM (SELECT slug, gen_random_uuid() AS pivot FROM unnest(%s::text[]) AS slug"
                "       OFFSET 0) AS wanted",
                (list(preset_slugs),),
            ).fetchall()
        return {row["preset_slug"]: row["relative_path"] for row in rows if row["relative_path"] is not None}

    def claim(self, job_id: str, replica: str, redelivered: bool, max_attempts: int,
              owner_silence_seconds: float = 0.0) -> Claimed:
        """Reserve the job for `replica` (a new attempt). A job nobody has claimed is taken; a claimed one
        only when the broker says the message is a redelivery (its runner died) or when the stuck-job sweep
        took it back from its replica and published it again (`requeued`). A redelivery waits while the
        replica holding the job still names it among the jobs it runs and asked for its line within
        `owner_silence_seconds` (the broker took the message back from a connection, not from a dead
        replica). The status does not change here: the job turns `processing` when the replica's GPU starts
        it (`started`)."""
        with self.pool.connection() as conn, conn.transaction():
            row = conn.execute(
                "SELECT status, attempts, requeued, replica FROM jobs.jobs WHERE id = %s FOR UPDATE",
                (parse_job_id(job_id),)
            ).fetchone()
            if row is None:
                return Claimed(False, 0, "unknown job", None)
            if row["status"] in TERMINAL:
                return Claimed(False, row["attempts"], f"already {row['status']}", None)
            if row["attempts"] > 0 and not redelivered and not row["requeued"]:
                return Claimed(False, row["attempts"], "already taken by another replica", None)
            if (redelivered and not row["requeued"] and row["replica"] is not None and owner_silence_seconds > 0
                    and conn.execute(
                        "SELECT 1 FROM jobs.replicas WHERE replica = %s AND %s = ANY(running)"
                        " AND asked_at > now() - make_interval(secs => %s)",
                        (row["replica"], parse_job_id(job_id), owner_silence_seconds)).fetchone()):
                return Claimed(False, row["attempts"], f"its run on {row['replica']} still goes on", None, wait=True)
            if row["attempts"] >= max_attempts:
                failed = conn.execute(
                    f"UPDATE jobs.jobs SET status = 'failed', finished_at = now(), error = %s WHERE id = %s RETURNING {VIEW}",
                    (f"gave up after {row['attempts']} attempts: the generator running this job stopped "
                     f"each time before finishing", job_id),
                ).fetchone()
                return Claimed(False, row["attempts"], "too many attempts", failed)
            claimed = conn.execute(
                "UPDATE jobs.jobs SET attempts = attempts + 1, replica = %s, requeued = false, last_seen_at = now(),"
                f" progress_value = NULL, progress_max = NULL WHERE id = %s RETURNING {VIEW}",
                (replica, job_id),
            ).fetchone()
            return Claimed(True, claimed["attempts"], None, claimed)

    # Each transition returns the job as it is after the change (VIEW), or None when nothing changed.
    def started(self, job_id, replica, attempt: int):
        """Run `attempt` began on the GPU: processing from now. An event of an earlier run (late or
        duplicated) changes nothing."""
        with self.pool.connection() as conn:
            return conn.execute(
                "UPDATE jobs.jobs SET status = 'processing', replica = %(replica)s, started_at = now(),"
                " last_seen_at = now(), started_attempt = %(attempt)s"
                f" WHERE id = %(id)s AND status IN {ACTIVE_SQL} AND attempts <= %(attempt)s"
                f" AND coalesce(started_attempt, 0) < %(attempt)s RETURNING {VIEW}",
                {"replica": replica, "attempt": attempt, "id": parse_job_id(job_id)},
            ).fetchone()

    def progress(self, job_id, value, maximum):
        with self.pool.connection() as conn:
            return conn.execute(
                "UPDATE jobs.jobs SET progress_value = %s, progress_max = %s, last_seen_at = now()"
                f" WHERE id = %s AND status = 'processing' AND coalesce(progress_value, -1) <= %s RETURNING {VIEW}",
                (value, maximum, parse_job_id(job_id), value),
            ).fetchone()

    def completed(self, job_id, replica, result: dict):
        return self._finish(
            "UPDATE jobs.jobs SET status = 'done', result = %(result)s, error = NULL, replica = %(replica)s,"
            " finished_at = now(), progress_value = progress_max"
            f" WHERE id = %(id)s AND status IN {ACTIVE_SQL}",
            {"result": Jsonb(result), "replica": replica, "id": parse_job_id(job_id)}, outcome="done")

    def failed(self, job_id, replica, error: str):
        return self._finish(
            "UPDATE jobs.jobs SET status = 'failed', error = %(error)s, replica = coalesce(%(replica)s, replica),"
            " finished_at = now()"
            f" WHERE id = %(id)s AND status IN {ACTIVE_SQL}",
            {"error": error, "replica": replica, "id": parse_job_id(job_id)}, outcome="failed")

    def _finish(self, update: str, params: dict, outcome: str):
        """Apply a generator's final event and, in the same statement, observe the job's durations.

        Why here and not computed at scrape time: a Prometheus histogram is a set of counters that only
        grow. Counting over "finished jobs of the last 24 h" at scrape time would make them shrink as jobs
        age out (rate() reads that as resets), and counting over all jobs costs a scan that grows forever.
        So the one transition that really finished the job (the conditional UPDATE matched, which happens
        once per job however often the event is redelivered) increments the cumulative buckets of
        `duration_buckets` and the count/sum of `duration_totals`: exact across any number of jobs
        service instances (atomic upserts), kept across restarts, and read back in one cheap query by
        `durations()`. Queue wait is started_at − created_at (started_at is the latest run's start, so
        it includes earlier runs that died), generation time is finished_at − started_at; a job that
        never started has neither. Jobs failed by `claim` after too many attempts are not observed.
        Every finishing job locks the same few counter rows for the length of this statement; they are
        taken in one fixed order (ORDER BY) so that concurrent finishes queue up, never deadlock."""
        with self.pool.connection() as conn:
            return conn.execute(
                f"WITH finished AS ({update}"
                f"   RETURNING {VIEW}, extract(epoch FROM started_at - created_at)::float8 AS queue_wait,"
                "             extract(epoch FROM finished_at - started_at)::float8 AS generation),"
                " observed AS (SELECT m.metric, greatest(m.seconds, 0) AS seconds FROM finished,"
                "   LATERAL (VALUES ('queue_wait', queue_wait), ('generation', generation)) AS m(metric, seconds)"
                "   WHERE m.seconds IS NOT NULL),"
                " buckets AS (INSERT INTO jobs.duration_buckets (metric, outcome, le, count)"
                "   SELECT observed.metric, %(outcome)s, le, 1 FROM observed, unnest(%(buckets)s::float8[]) AS le"
                "   WHERE le >= observed.seconds ORDER BY observed.metric, le"
                "   ON CONFLICT (metric, outcome, le) DO UPDATE SET count = jobs.duration_buckets.count + 1),"
                " totals AS (INSERT INTO jobs.duration_totals (metric, outcome, count, sum)"
                "   SELECT metric, %(outcome)s, 1, seconds FROM observed ORDER BY metric"
                "   ON CONFLICT (metric, outcome) DO UPDATE"
                "   SET count = jobs.duration_totals.count + 1, sum = jobs.duration_totals.sum + excluded.sum)"
                f" SELECT {VIEW_COLUMNS} FROM finished",
                {**params, "outcome": outcome, "buckets": [float(le) for le in DURATION_BUCKETS]},
            ).fetchone()

    def sweep_stuck(self, stuck_seconds: float, max_attempts: int, limit: int = 200) -> list[dict]:
        """Take back the jobs held by a replica (reserved, or processing) that showed no sign of life
        (claim, job_started, job_progress: `last_seen_at`) for `stuck_seconds`, in one transaction.
        One with fewer than `max_attempts` runs is marked `requeued`, its replica cleared and its status
        kept (states never move backwards; the next claim counts the new attempt): the caller publishes
        its work order again. One that had its `max_attempts` runs is failed with a readable error.
        A job already requeued whose order is still waiting is requeued again only after another
        `stuck_seconds` (its order may have been lost between this commit and the publish; a duplicate
        order is harmless, its claim answers "already taken").
        Returns the changed jobs (VIEW plus `requeued`), oldest sign of life first. SKIP LOCKED: several
        jobs service instances sweep without waiting for each other or taking a job twice."""
        with self.pool.connection() as conn:
            return conn.execute(
                "WITH stuck AS (SELECT id FROM jobs.jobs"
                f"   WHERE status IN {ACTIVE_SQL} AND attempts > 0"
                "   AND last_seen_at < now() - make_interval(secs => %(stuck)s)"
                "   ORDER BY last_seen_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED)"
                " UPDATE jobs.jobs SET"
                "   requeued = attempts < %(max)s,"
                "   replica = CASE WHEN attempts < %(max)s THEN NULL ELSE replica END,"
                "   status = CASE WHEN attempts < %(max)s THEN status ELSE 'failed' END,"
                "   finished_at = CASE WHEN attempts < %(max)s THEN NULL ELSE now() END,"
                "   error = CASE WHEN attempts < %(max)s THEN NULL ELSE"
                # what a client reads: no replica name (a host) nor setting; the jobs service logs both
                "     'gave up after ' || attempts || ' attempts: the generator running this job showed no"
                " sign of life for ' || round(extract(epoch FROM now() - last_seen_at)) || ' s (limit: '"
                "     || %(stuck_text)s || ' s)' END,"
                "   last_seen_at = now()"
                " WHERE id IN (SELECT id FROM stuck)"
                f" RETURNING {VIEW}, requeued",
                {"stuck": stuck_seconds, "stuck_text": f"{stuck_seconds:g}", "max": max_attempts, "limit": limit},
            ).fetchall()

    def record_replica(self, status) -> None:
        with self.pool.connection() as conn:
            conn.execute(
                "INSERT INTO jobs.replicas (replica, backend, healthy, detail, seen_at, state, worker_pid, restarts,"
                " loaded_checkpoint, resident_checkpoints, loads, load_seconds_total, mean_load_seconds,"
                " mean_job_seconds, can_load)"
                " VALUES (%s, %s, %s, %s, to_timestamp(%s), %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (replica) DO UPDATE SET backend = excluded.backend, healthy = excluded.healthy,"
                " detail = excluded.detail, seen_at = excluded.seen_at, state = excluded.state,"
                " worker_pid = excluded.worker_pid, restarts = excluded.restarts,"
                " loaded_checkpoint = excluded.loaded_checkpoint, resident_checkpoints = excluded.resident_checkpoints,"
                " loads = excluded.loads, load_seconds_total = excluded.load_seconds_total,"
                " mean_load_seconds = excluded.mean_load_seconds, mean_job_seconds = excluded.mean_job_seconds,"
                " can_load = coalesce(excluded.can_load, jobs.replicas.can_load)"
                " WHERE jobs.replicas.seen_at <= excluded.seen_at",
                (status.replica, status.backend, status.healthy, status.detail, status.at, status.state,
                 status.worker_pid, status.restarts, status.loaded_checkpoint, status.resident_checkpoints,
                 status.loads, status.load_seconds_total, status.mean_load_seconds, status.mean_job_seconds,
                 status.checkpoints),
            )

    def lines(self) -> list[dict]:
        """The lines: per checkpoint with jobs waiting (pending, not reserved by a replica), how many and how
        long the oldest has waited; longest wait first. Read from the partial index of migration 0013."""
        with self.pool.connection() as conn:
            return conn.execute(
                LINES_SQL).fetchall()

    def assign_line(self, ask: dict, decide, live_seconds: float):
        """One scheduling decision, serialised with every other (one transaction-scoped advisory lock, so two
        replicas asking at once are never both sent to the same empty line): records what replica
        `ask["replica"]` says of itself, reads the lines and the other replicas that asked within
        `live_seconds`, calls `decide(me_row, other_rows, lines)` -> the checkpoint to serve, and records it as
        the replica's line. Returns what `decide` returned."""
        with self.pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEDULER_LOCK,))
            me = conn.execute(
                "INSERT INTO jobs.replicas (replica, backend, healthy, detail, seen_at, serving, in_flight, can_load,"
                " mean_job_seconds, mean_load_seconds, loaded_checkpoint, running, asked_at)"
                " VALUES (%(replica)s, '', false, 'no status heard yet', 'epoch', %(serving)s, %(in_flight)s, %(can_load)s,"
                " %(mean_job_seconds)s, %(mean_load_seconds)s, %(loaded)s, %(running)s, now())"
                " ON CONFLICT (replica) DO UPDATE SET serving = excluded.serving, in_flight = excluded.in_flight,"
                " running = excluded.running,"
                " can_load = coalesce(excluded.can_load, jobs.replicas.can_load),"
                " mean_job_seconds = coalesce(excluded.mean_job_seconds, jobs.replicas.mean_job_seconds),"
                " mean_load_seconds = coalesce(excluded.mean_load_seconds, jobs.replicas.mean_load_seconds),"
                " loaded_checkpoint = excluded.loaded_checkpoint, asked_at = now()"
                " RETURNING replica, serving, in_flight, can_load, mean_job_seconds, mean_load_seconds", ask,
            ).fetchone()
            others = conn.execute(
                "SELECT replica, serving, in_flight, can_load, mean_job_seconds, mean_load_seconds FROM jobs.replicas"
                " WHERE replica <> %s AND asked_at > now() - make_interval(secs => %s)"
                " AND state NOT IN ('stuck', 'restarting', 'stopped')",
                (ask["replica"], live_seconds)).fetchall()
            lines = conn.execute(LINES_SQL).fetchall()
            decision = decide(me, others, lines)
            if decision.serve != ask["serving"]:
                conn.execute("UPDATE jobs.replicas SET serving = %s WHERE replica = %s", (decision.serve, ask["replica"]))
            return decision

    def record_dead_letter(self, queue: str, reason: str, job_id, body) -> None:
        with self.pool.connection() as conn:
            conn.execute("INSERT INTO jobs.dead_letters (queue, reason, job_id, body) VALUES (%s, %s, %s, %s)",
                         (queue, reason, job_id, Jsonb(body)))

    def dead_letters(self) -> int:
        with self.pool.connection() as conn:
            return conn.execute("SELECT count(*) AS n FROM jobs.dead_letters").fetchone()["n"]

    def replica_runs(self, replica: str, running: list[str]):
        """What a replica asking for its line runs (`claim` reads it), where no scheduling decision is made
        (GAZE_SCHEDULING=fcfs)."""
        with self.pool.connection() as conn:
            conn.execute(
                "INSERT INTO jobs.replicas (replica, backend, healthy, detail, seen_at, running, asked_at)"
                " VALUES (%s, '', false, 'no status heard yet', 'epoch', %s, now())"
                " ON CONFLICT (replica) DO UPDATE SET running = excluded.running, asked_at = now()",
                (replica, running))

    def counts_by_status(self) -> dict:
        """{status: number of jobs} for every status, zeros included, from the counters the triggers of
        migration 0011 keep on every insert, transition and delete: a few dozen rows, not a scan of jobs."""
        with self.pool.connection() as conn:
            rows = conn.execute("SELECT status, sum(n)::bigint AS n FROM jobs.status_counts GROUP BY status").fetchall()
        counts = dict.fromkeys(STATUSES, 0)
        counts.update({row["status"]: row["n"] for row in rows})
        return counts

    def durations(self) -> dict:
        """The duration histograms recorded by `_finish`, shaped for Prometheus:
        {metric: {outcome: {"buckets": [[le, cumulative count], ...], "count": n, "sum": seconds}}} for
        every metric and outcome (zeros when nothing was observed yet). The +Inf bucket is `count`."""
        with self.pool.connection() as conn:
            buckets = conn.execute("SELECT metric, outcome, le, count FROM jobs.duration_buckets").fetchall()
            totals = conn.execute("SELECT metric, outcome, count, sum FROM jobs.duration_totals").fetchall()
        seen = {(row["metric"], row["outcome"], row["le"]): row["count"] for row in buckets}
        result = {metric: {outcome: {"buckets": [[le, seen.get((metric, outcome, float(le)), 0)]
                                                 for le in DURATION_BUCKETS],
                                     "count": 0, "sum": 0.0}
                           for outcome in DURATION_OUTCOMES}
                  for metric in DURATION_METRICS}
        for row in totals:
            result[row["metric"]][row["outcome"]].update(count=row["count"], sum=row["sum"])
        return result

    def replicas(self) -> list[dict]:
        with self.pool.connection() as conn:
            return conn.execute(
                "SELECT replica, backend, healthy, detail, state, worker_pid, restarts, loaded_checkpoint,"
                " resident_checkpoints, serving, loads, load_seconds_total, mean_load_seconds, mean_job_seconds,"
                " extract(epoch FROM now() - seen_at)::float8 AS age_seconds"
                " FROM jobs.replicas ORDER BY replica"
            ).fetchall()


class JobStore(Database):
    def get_dependency(self, worker_ctx):
        return JobRepository(self.pool)
