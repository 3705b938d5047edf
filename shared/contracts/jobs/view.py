"""The job read model (its keys, versions and reads; the jobs service writes it: services/jobs/read_model.py): each job's public document (what GET /api/v1/job/<id> answers) kept in Redis.

Why: a status poll is the API's hottest request. Answering it with an RPC costs two broker messages and
a Postgres lookup per poll; answering it from Redis costs one GET. The jobs service stays the owner of
job state: it writes a job's document here right after each transition it commits (creation, claim,
job events, sweeps), and the gateway reads it. A miss (never written, expired, Redis down) falls back to
the jobs service's RPC, whose answer the gateway writes back (read-through).

What a poller sees only moves forward. Every write carries a version derived from the document itself
(status rank, then attempt, then progress) and a Lua script applies it only when it is newer than what
is stored, so a late or reordered write (a slow progress handler, a read-through racing a completion)
can never take a job from done back to processing. Documents expire (non-terminal ones sooner, so a
write lost while Redis was unreachable cannot leave a stale state behind for long: the next read after
expiry goes to the jobs service). Unknown jobs are never written, so an unknown id is never "pending".

Every write that lands also PUBLISHes a small change message on one channel (`changes_channel`), from
the same script, so no change can be written without being announced: the gateway's held requests and
event streams (services/gateway/hold/) wait on these messages instead of polling. A message names the job,
its new version, its owner (the API key name the gateway recorded with `own`; "" for none) and whether the
waiting line moved (the queue positions of the jobs behind it changed).
"""
from __future__ import annotations

import json
import logging
import time

import redis

from shared.job_states import RANK, TERMINAL, JobState  # a document's order is its job's rank

log = logging.getLogger(__name__)

TERMINAL_TTL_SECONDS = 7 * 24 * 3600
ACTIVE_TTL_SECONDS = 15 * 60

# KEYS[1] the job's hash, KEYS[2] the waiting line, KEYS[3] the changes channel; ARGV: version, document,
# ttl, now, job id, the job's place in the line (its created_at) while it waits for a generator, else "".
# Returns 1 when written (and announced), 0 when older. The line moves with the document, in the same
# script: a job's place and its state never disagree.
_WRITE = """
local current = redis.call('HGET', KEYS[1], 'v')
if current and tonumber(current) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'doc', ARGV[2], 'at', ARGV[4])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
local moved
if ARGV[6] ~= '' then moved = redis.call('ZADD', KEYS[2], ARGV[6], ARGV[5]) else moved = redis.call('ZREM', KEYS[2], ARGV[5]) end
redis.call('PUBLISH', KEYS[3], cjson.encode({id = ARGV[5], v = ARGV[1], owner = redis.call('HGET', KEYS[1], 'owner') or '',
                                             line_moved = moved == 1}))
return 1
"""

# KEYS: the jobs' hashes, then the changes channel; ARGV[1] the owner, ARGV[2] a ttl for a hash the jobs
# service has not written yet, then the job ids. Records the owner beside each document (it is not part of
# the document) and announces the jobs already written, so a key's event stream hears of a job even when
# its first writes were announced before its owner was known.
_OWN = """
local channel = KEYS[#KEYS]
for i = 1, #KEYS - 1 do
  redis.call('HSET', KEYS[i], 'owner', ARGV[1])
  if redis.call('TTL', KEYS[i]) < 0 then redis.call('EXPIRE', KEYS[i], tonumber(ARGV[2])) end
  local v = redis.call('HGET', KEYS[i], 'v')
  if v then redis.call('PUBLISH', channel, cjson.encode({id = ARGV[i + 2], v = v, owner = ARGV[1], line_moved = false})) end
end
return #KEYS - 1
"""


def version(doc: dict) -> int:
    """A number that grows with every forward step a job's document can take."""
    progress = (doc.get("progress") or {}).get("value") or 0
    return RANK[doc["status"]] * 10**12 + min(int(doc.get("attempts") or 0), 999_999) * 10**6 + min(int(progress), 999_999)


def parse_change(message) -> dict:
    """A change message (bytes or str) as {"id", "v" (int), "owner" (str, "" for none), "line_moved" (bool)}."""
    change = json.loads(message)
    return {"id": change["id"], "v": int(change["v"]), "owner": change.get("owner") or "",
            "line_moved": bool(change.get("line_moved"))}


def waiting(doc: dict) -> bool:
    """Whether the job waits in the line for a generator: pending and not reserved by a replica."""
    return doc["status"] == JobState.PENDING and not doc.get("replica")


def queue_position(doc: dict, rank) -> int | None:
    """The API's `queue_position`: for a pending job its 0-based place among the waiting jobs (`rank` in
    the line), 0 once a replica has reserved it; None for any other status, or when the line does not
    know the job (written while Redis was away)."""
    if doc["status"] != JobState.PENDING:
        return None
    if doc.get("replica"):
        return 0
    return None if rank is None else int(rank)


class JobView:
    """Reads and versioned writes of job documents. Every Redis failure is logged and swallowed: the read
    model is an accelerator, never a reason for a request or an event to fail."""

    def __init__(self, url: str, prefix: str = "gaze", timeout: float = 0.5):
        self.prefix = prefix
        self.client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                           health_check_interval=30) if url else None
        self._write = self.client.register_script(_WRITE) if self.client else None
        self._own = self.client.register_script(_OWN) if self.client else None

    def key(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    @property
    def line_key(self) -> str:
        """The waiting line: a sorted set of the waiting jobs' ids, by created_at (queue_position)."""
        return f"{self.prefix}:queue"

    @property
    def changes_channel(self) -> str:
        """The channel every landed write is announced on (parse_change reads its messages)."""
        return f"{self.prefix}:job-changed"

    def _args(self, doc: dict):
        ttl = TERMINAL_TTL_SECONDS if doc["status"] in TERMINAL else ACTIVE_TTL_SECONDS
        place = repr(float(doc["created_at"])) if waiting(doc) and doc.get("created_at") is not None else ""
        return {"keys": [self.key(doc["id"]), self.line_key, self.changes_channel],
                "args": [version(doc), json.dumps(doc, separators=(",", ":")), ttl, time.time(), doc["id"], place]}

    def put(self, doc: dict) -> bool:
        """Store `doc` unless a newer version is there already; True when written."""
        if self.client is None:
            return False
        try:
            return bool(self._write(**self._args(doc)))
        except redis.RedisError as exc:
            log.warning("job read model: write of job %s failed: %s", doc.get("id"), exc)
            return False

    def put_many(self, docs) -> None:
        if self.client is None or not docs:
            return
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for doc in docs:
                    self._write(**self._args(doc), client=pipe)
                pipe.execute()
        except redis.RedisError as exc:
            log.warning("job read model: write of %d job(s) failed: %s", len(docs), exc)

    def own(self, job_ids, owner: str) -> None:
        """Record that `owner` (an API key's name) created `job_ids`, and announce them on its behalf."""
        if self.client is None or not job_ids or not owner:
            return
        try:
            self._own(keys=[*(self.key(job_id) for job_id in job_ids), self.changes_channel],
                      args=[owner, ACTIVE_TTL_SECONDS, *job_ids])
        except redis.RedisError as exc:
            log.warning("job read model: recording the owner of %d job(s) failed: %s", len(job_ids), exc)

    def get(self, job_id: str):
        """The stored document, or None (not there, or Redis unreachable)."""
        if self.client is None:
            return None
        try:
            raw = self.client.hget(self.key(job_id), "doc")
        except redis.RedisError as exc:
            log.warning("job read model: read failed, asking the jobs service: %s", exc)
            return None
        return None if raw is None else json.loads(raw)

    def lookup(self, job_id: str):
        """(the stored document or None, the job's rank in the waiting line or None): one round trip."""
        if self.client is None:
            return None, None
        try:
            with self.client.pipeline(transaction=False) as pipe:
                pipe.hget(self.key(job_id), "doc")
                pipe.zrank(self.line_key, job_id)
                raw, rank = pipe.execute()
        except redis.RedisError as exc:
            log.warning("job read model: read failed, asking the jobs service: %s", exc)
            return None, None
        return (None if raw is None else json.loads(raw)), rank

    def ranks(self, job_ids) -> dict:
        """{job_id: rank in the waiting line, or None}: one round trip."""
        if self.client is None or not job_ids:
            return {}
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for job_id in job_ids:
                    pipe.zrank(self.line_key, job_id)
                return dict(zip(job_ids, pipe.execute()))
        except redis.RedisError as exc:
            log.warning("job read model: reading the waiting line failed: %s", exc)
            return {}

    def forget_waiting(self, job_ids) -> None:
        """Take jobs out of the waiting line (the jobs service's reconciliation: they no longer wait)."""
        if self.client is None or not job_ids:
            return
        try:
            self.client.zrem(self.line_key, *job_ids)
        except redis.RedisError as exc:
            log.warning("job read model: cleaning the waiting line failed: %s", exc)

    def waiting_ids(self, limit: int = 10_000) -> list[str]:
        """The ids in the waiting line, first in line first (at most `limit`)."""
        if self.client is None:
            return []
        try:
            return [raw.decode() for raw in self.client.zrange(self.line_key, 0, limit - 1)]
        except redis.RedisError as exc:
            log.warning("job read model: reading the waiting line failed: %s", exc)
            return []

    def get_many(self, job_ids) -> dict:
        """{job_id: document} for the ids that are stored."""
        if self.client is None or not job_ids:
            return {}
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for job_id in job_ids:
                    pipe.hget(self.key(job_id), "doc")
                raws = pipe.execute()
        except redis.RedisError as exc:
            log.warning("job read model: read failed, asking the jobs service: %s", exc)
            return {}
        return {job_id: json.loads(raw) for job_id, raw in zip(job_ids, raws) if raw is not None}

    def written_at(self, job_id: str):
        """When the stored document was written (Unix time): the benchmark's lag measurement."""
        raw = self.client.hget(self.key(job_id), "at")
        return None if raw is None else float(raw)

    def close(self):
        if self.client is not None:
            self.client.close()
