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

Waiting lines (`queue_position`): a job waits in one line, a sorted set of ids by created_at. The jobs
service names it with each write (services/jobs/read_model.py: its checkpoint's line with checkpoint-aware
scheduling, else the shared line) and the name is kept beside the document in the job's hash, so a reader
that has only the job id finds its line and its rank in one round trip. A writer that does not know the
line (the gateway's read-through) leaves the lines alone. The names of the non-empty checkpoint lines are
kept in a set, so the jobs service's reconciliation covers every line. Data written before lines existed
(every job in `<prefix>:queue`) reads as the shared line, which keeps that key.

Every write that lands also PUBLISHes a small change message on one channel (`changes_channel`), from
the same script, so no change can be written without being announced: the gateway's held requests and
event streams (services/gateway/hold/) wait on these messages instead of polling. A message names the job,
its new version, its owner (the API key name the gateway recorded with `own`; "" for none), whether a
waiting line moved (the queue positions of the jobs behind it changed) and which lines did.
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

SHARED_LINE = ""   # the name of the line every job waits in without checkpoint-aware scheduling

# Lua: the key of the line named `name` (JobView.line_key says the same in Python), from the shared line's key
_LINE_KEY = """
local function line_key(shared, name)
  if name == '' then return shared end
  return shared .. ':' .. name
end
"""

# KEYS[1] the job's hash, KEYS[2] the shared line, KEYS[3] the set of checkpoint line names, KEYS[4] the
# changes channel; ARGV: version, document, ttl, now, job id, the job's place in its line (its created_at)
# while it waits for a generator else "", the name of its line, and "1" when the writer knows that line (the
# jobs service) else "" (the gateway's read-through: the line recorded in the hash, if any, is used).
# Returns 1 when written (and announced), 0 when older. The line moves with the document, in the same
# script: a job's place and its state never disagree.
_WRITE = _LINE_KEY + """
local id = ARGV[5]
local function leave(name)   -- whether the job was in that line; an emptied checkpoint line leaves the set
  local key = line_key(KEYS[2], name)
  if redis.call('ZREM', key, id) == 0 then return false end
  if name ~= '' and redis.call('ZCARD', key) == 0 then redis.call('SREM', KEYS[3], name) end
  return true
end
local current = redis.call('HGET', KEYS[1], 'v')
local stored = redis.call('HGET', KEYS[1], 'line')
local given = nil
if ARGV[8] == '1' then given = ARGV[7] end
local newer = not current or tonumber(current) < tonumber(ARGV[1])
-- the same version from the jobs service still records the job's line: a read-through, which knows no
-- line, may have written the document first
if not newer and not (given and given ~= stored and tonumber(current) == tonumber(ARGV[1])) then return 0 end
if newer then
  redis.call('HSET', KEYS[1], 'v', ARGV[1], 'doc', ARGV[2], 'at', ARGV[4])
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
end
local moved = {}
if given and given ~= stored then
  redis.call('HSET', KEYS[1], 'line', given)
  -- out of the line it was in: the scheduling setting changed, or it was written before lines existed,
  -- when every job waited in the shared line
  local previous = stored or ''
  if previous ~= given and leave(previous) then moved[#moved + 1] = previous end
end
local name = given or stored
if name then
  if ARGV[6] ~= '' then
    if redis.call('ZADD', line_key(KEYS[2], name), ARGV[6], id) == 1 then moved[#moved + 1] = name end
    if name ~= '' then redis.call('SADD', KEYS[3], name) end
  elseif leave(name) then
    moved[#moved + 1] = name
  end
end
if newer or #moved > 0 then
  local change = {id = id, v = ARGV[1], owner = redis.call('HGET', KEYS[1], 'owner') or '', line_moved = #moved > 0}
  if #moved > 0 then change.lines = moved end   -- (cjson writes an empty table as {}, so only when there are some)
  redis.call('PUBLISH', KEYS[4], cjson.encode(change))
end
if newer then return 1 end
return 0
"""

# KEYS: the jobs' hashes, then the shared line and the set of checkpoint line names; ARGV[1] "1" to answer
# the documents too, then the job ids. Answers, job after job: (its document when asked,) the name of its
# line (nil when none is recorded or holds it) and its 0-based rank there (nil when it does not wait).
_PLACES = _LINE_KEY + """
local n = #KEYS - 2
local shared, names = KEYS[n + 1], KEYS[n + 2]
local every_line = nil
local out = {}
for i = 1, n do
  local id = ARGV[i + 1]
  if ARGV[1] == '1' then out[#out + 1] = redis.call('HGET', KEYS[i], 'doc') end
  local name = redis.call('HGET', KEYS[i], 'line')
  local rank = false
  if name then
    rank = redis.call('ZRANK', line_key(shared, name), id)
  else
    -- no line recorded: data from before lines, or a read-through wrote the document after it expired
    -- while the job waited. Look in every line (a few: one per checkpoint with waiting jobs).
    if not every_line then
      every_line = {''}
      for _, each in ipairs(redis.call('SMEMBERS', names)) do every_line[#every_line + 1] = each end
    end
    for _, each in ipairs(every_line) do
      rank = redis.call('ZRANK', line_key(shared, each), id)
      if rank then name = each break end
    end
  end
  out[#out + 1] = name
  out[#out + 1] = rank
end
return out
"""

# KEYS[1] the shared line, KEYS[2] the set of checkpoint line names; ARGV the job ids: out of every line.
_FORGET = _LINE_KEY + """
local every_line = {''}
for _, each in ipairs(redis.call('SMEMBERS', KEYS[2])) do every_line[#every_line + 1] = each end
for _, name in ipairs(every_line) do
  local key = line_key(KEYS[1], name)
  for first = 1, #ARGV, 1000 do   -- (unpack has a limit on how many values it returns)
    redis.call('ZREM', key, unpack(ARGV, first, math.min(first + 999, #ARGV)))
  end
  if name ~= '' and redis.call('ZCARD', key) == 0 then redis.call('SREM', KEYS[2], name) end
end
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
    """A change message (bytes or str) as {"id", "v" (int), "owner" (str, "" for none), "line_moved" (bool),
    "lines" (the names of the lines that moved; None when a line moved but the message does not say which:
    a writer from before per-checkpoint lines)}."""
    change = json.loads(message)
    moved = bool(change.get("line_moved"))
    lines = change.get("lines")
    return {"id": change["id"], "v": int(change["v"]), "owner": change.get("owner") or "", "line_moved": moved,
            "lines": [str(name) for name in lines] if isinstance(lines, list) else (None if moved else [])}


def waiting(doc: dict) -> bool:
    """Whether the job waits in the line for a generator: pending and not reserved by a replica."""
    return doc["status"] == JobState.PENDING and not doc.get("replica")


def queue_position(doc: dict, rank) -> int | None:
    """The API's `queue_position`: for a pending job its 0-based place among the waiting jobs of its own
    line (`rank`), 0 once a replica has reserved it; None for any other status, or when no line knows the
    job (written while Redis was away)."""
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
        self._places = self.client.register_script(_PLACES) if self.client else None
        self._forget = self.client.register_script(_FORGET) if self.client else None

    def key(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def line_key(self, name: str = SHARED_LINE) -> str:
        """A waiting line: a sorted set of the ids of the jobs waiting in it, by created_at (queue_position).
        The shared line keeps the key of the one line there was before per-checkpoint lines (as _LINE_KEY)."""
        return f"{self.prefix}:queue" if name == SHARED_LINE else f"{self.prefix}:queue:{name}"

    @property
    def lines_key(self) -> str:
        """The set of the names of the checkpoint lines that have waiting jobs."""
        return f"{self.prefix}:lines"

    @property
    def changes_channel(self) -> str:
        """The channel every landed write is announced on (parse_change reads its messages)."""
        return f"{self.prefix}:job-changed"

    def _args(self, doc: dict, line: str | None):
        ttl = TERMINAL_TTL_SECONDS if doc["status"] in TERMINAL else ACTIVE_TTL_SECONDS
        place = repr(float(doc["created_at"])) if waiting(doc) and doc.get("created_at") is not None else ""
        return {"keys": [self.key(doc["id"]), self.line_key(), self.lines_key, self.changes_channel],
                "args": [version(doc), json.dumps(doc, separators=(",", ":")), ttl, time.time(), doc["id"], place,
                         line or "", "" if line is None else "1"]}

    def put(self, doc: dict, line: str | None = None) -> bool:
        """Store `doc` unless a newer version is there already; True when written. `line`: the name of the
        line the job waits in while it waits (the jobs service knows it); None for a writer that does not
        know it, which leaves the lines as they are."""
        if self.client is None:
            return False
        try:
            return bool(self._write(**self._args(doc, line)))
        except redis.RedisError as exc:
            log.warning("job read model: write of job %s failed: %s", doc.get("id"), exc)
            return False

    def put_many(self, docs, lines=None) -> None:
        """`put` for each of `docs`, `lines` their lines in the same order (None: not known)."""
        if self.client is None or not docs:
            return
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for doc, line in zip(docs, lines or [None] * len(docs), strict=True):
                    self._write(**self._args(doc, line), client=pipe)
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
        """(the stored document or None, the job's rank in its line or None): one round trip."""
        if self.client is None:
            return None, None
        try:
            raw, _line, rank = self._run_places([job_id], with_docs=True)
        except redis.RedisError as exc:
            log.warning("job read model: read failed, asking the jobs service: %s", exc)
            return None, None
        return (None if raw is None else json.loads(raw)), rank

    def places(self, job_ids) -> dict:
        """{job_id: (the name of its line, None when not known; its rank there, None when it does not wait)}:
        one round trip."""
        if self.client is None or not job_ids:
            return {}
        job_ids = list(job_ids)
        try:
            answer = self._run_places(job_ids, with_docs=False)
        except redis.RedisError as exc:
            log.warning("job read model: reading the waiting lines failed: %s", exc)
            return {}
        return {job_id: ((None if line is None else line.decode()), rank)
                for job_id, line, rank in zip(job_ids, answer[0::2], answer[1::2])}

    def ranks(self, job_ids) -> dict:
        """{job_id: rank in its line, or None}: one round trip."""
        return {job_id: rank for job_id, (_line, rank) in self.places(job_ids).items()}

    def _run_places(self, job_ids, with_docs: bool) -> list:
        return self._places(keys=[*(self.key(job_id) for job_id in job_ids), self.line_key(), self.lines_key],
                            args=["1" if with_docs else "", *job_ids])

    def line_names(self) -> list[str]:
        """The names of the lines there are: the shared line, then the checkpoint lines with waiting jobs."""
        if self.client is None:
            return []
        return [SHARED_LINE, *sorted(raw.decode() for raw in self.client.smembers(self.lines_key))]

    def forget_waiting(self, job_ids) -> None:
        """Take jobs out of every waiting line (the jobs service's reconciliation: they no longer wait)."""
        if self.client is None or not job_ids:
            return
        try:
            self._forget(keys=[self.line_key(), self.lines_key], args=list(job_ids))
        except redis.RedisError as exc:
            log.warning("job read model: cleaning the waiting lines failed: %s", exc)

    def waiting_ids(self, limit: int = 10_000) -> list[str]:
        """The ids in the waiting lines, first in line first over all lines (at most `limit`)."""
        if self.client is None:
            return []
        try:
            names = self.line_names()
            with self.client.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.zrange(self.line_key(name), 0, limit - 1, withscores=True)
                answers = pipe.execute()
        except redis.RedisError as exc:
            log.warning("job read model: reading the waiting lines failed: %s", exc)
            return []
        every = sorted((score, raw.decode()) for answer in answers for raw, score in answer)
        return [job_id for _score, job_id in every[:limit]]

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
