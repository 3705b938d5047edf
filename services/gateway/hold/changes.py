"""One Redis subscription per gateway worker, fanned out to the requests that wait on jobs.

The job read model announces every write it lands on one channel (shared/contracts/jobs/view.py,
`changes_channel`: job id, version, owner, which waiting lines moved). A `Listener` says which jobs
(and whose jobs) a request waits on; for each announced change the hub reads the job's document once
(one Redis round trip, however many requests wait on it) and hands it to every interested listener.
When a waiting line moved, the queue positions of the waiting jobs someone listens to in that line (or
whose line the hub has not learnt yet) are re-read in one round trip. If the subscription breaks, the
hub reconnects and re-reads every job it listens to, so a change made meanwhile is not lost (a key's
stream may miss jobs created while Redis was away).
"""
from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

import redis.asyncio

from shared.contracts.jobs.view import parse_change, queue_position, version, waiting
from shared.job_states import TERMINAL

log = logging.getLogger(__name__)
RECONNECT_SECONDS = 1.0


class Listener:
    """The documents of the jobs a request waits on, in arrival order, each only when it changed."""

    def __init__(self, job_ids=(), owner: str | None = None, preset: str | None = None):
        self.job_ids = set(job_ids)
        self.owner = owner       # every job of this API key name (filtered by `preset` when given)
        self.preset = preset
        self.docs: asyncio.Queue = asyncio.Queue()
        self.seen: dict[str, tuple] = {}   # job id -> (version, queue_position) last handed over

    def offer(self, doc: dict) -> None:
        if self.preset is not None and doc.get("preset") != self.preset:
            return
        state = (version(doc), doc.get("queue_position"))
        if self.seen.get(doc["id"]) == state:
            return
        self.seen[doc["id"]] = state
        self.docs.put_nowait(doc)

    async def next(self, timeout: float, gone: asyncio.Future | None = None) -> dict | None:
        """The next changed document; None after `timeout` seconds, or once `gone` (the client left) is done."""
        getting = asyncio.ensure_future(self.docs.get())
        done, _ = await asyncio.wait({getting} if gone is None else {getting, gone}, timeout=max(timeout, 0),
                                     return_when=asyncio.FIRST_COMPLETED)
        if getting in done:
            return getting.result()
        getting.cancel()
        return None


class JobChanges:
    """`jobs` is the gateway's JobLookup (documents with queue_position, the jobs service behind a miss);
    its blocking reads run in the event loop's default thread pool."""

    def __init__(self, redis_url: str, channel: str, jobs):
        self.redis_url = redis_url
        self.channel = channel
        self.jobs = jobs
        self.by_job: dict[str, set[Listener]] = defaultdict(set)
        self.by_owner: dict[str, set[Listener]] = defaultdict(set)
        self.waiting: dict[str, tuple[dict, str]] = {}   # listened-to jobs that wait in line: (doc, owner)
        self.line_of: dict[str, str] = {}   # the line of each waiting job, once a re-read of places told it
        self.subscribed = asyncio.Event()
        self._task: asyncio.Task | None = None

    # --- the requests' side -------------------------------------------------------------------------

    def add(self, listener: Listener, job_ids=()) -> None:
        listener.job_ids.update(job_ids)
        for job_id in listener.job_ids:
            self.by_job[job_id].add(listener)
        if listener.owner:
            self.by_owner[listener.owner].add(listener)

    def remove(self, listener: Listener) -> None:
        for job_id in listener.job_ids:
            self._discard(self.by_job, job_id, listener)
        if listener.owner:
            self._discard(self.by_owner, listener.owner, listener)

    @staticmethod
    def _discard(index, key, listener):
        listeners = index.get(key)
        if listeners is not None:
            listeners.discard(listener)
            if not listeners:
                del index[key]

    def opened(self, listener: Listener, docs, owner: str = "") -> None:
        """Hand a new listener the documents it read itself (after `add`), and follow their places in line."""
        for doc in docs:
            self._hand_over(doc, owner, {listener})

    async def read(self, job_ids) -> list[dict]:
        """The current documents of `job_ids` (with queue_position), unknown ones left out."""
        return await asyncio.to_thread(self._read, list(job_ids))

    def _read(self, job_ids):
        return self.jobs.with_positions(self.jobs.get_many(job_ids)) if job_ids else []

    # --- the subscription ---------------------------------------------------------------------------

    def start(self) -> bool:
        """Subscribe in the background; False when there is no Redis to subscribe to (waits then only end
        at their deadline)."""
        if self.redis_url and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="job-changes")
        return self._task is not None

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self):
        client = redis.asyncio.Redis.from_url(self.redis_url, health_check_interval=30)
        first = True
        try:
            while True:
                try:
                    async with client.pubsub() as pubsub:
                        await pubsub.subscribe(self.channel)
                        async for message in pubsub.listen():
                            if message["type"] == "subscribe":
                                self.subscribed.set()
                                if not first:
                                    await self._resync()
                                first = False
                            elif message["type"] == "message":
                                await self._changed(parse_change(message["data"]))
                except (redis.RedisError, OSError) as exc:
                    self.subscribed.clear()
                    log.warning("job changes: subscription lost (%s); reconnecting", exc)
                    first = False
                    await asyncio.sleep(RECONNECT_SECONDS)
                except Exception:  # noqa: BLE001 - one bad message must not end every wait in this worker
                    log.exception("job changes: a change could not be handled")
        finally:
            await client.aclose()

    async def _changed(self, change: dict) -> None:
        job_id, owner = change["id"], change["owner"]
        listeners = self.by_job.get(job_id, set()) | self.by_owner.get(owner, set())
        if listeners:
            for doc in await self.read([job_id]):
                self._hand_over(doc, owner, listeners)
        if change["line_moved"]:
            self.line_of.pop(job_id, None)   # it joined or left a line (it may be another one now)
            await self._line_moved(change["lines"], skip=job_id)

    async def _line_moved(self, lines, skip: str) -> None:
        """Waiting lines changed (`lines`: their names; None: not said): re-read the place of every
        listened-to job that waits in one of them, or in a line not learnt yet."""
        ids = [job_id for job_id in self.waiting if job_id != skip
               and (lines is None or job_id not in self.line_of or self.line_of[job_id] in lines)]
        if not ids:
            return
        places = await asyncio.to_thread(self.jobs.view.places, ids)
        for job_id in ids:
            if job_id not in self.waiting or job_id not in places:
                continue
            line, rank = places[job_id]
            if line is not None:
                self.line_of[job_id] = line
            doc, owner = self.waiting[job_id]
            listeners = self.by_job.get(job_id, set()) | self.by_owner.get(owner, set())
            moved = {**doc, "queue_position": queue_position(doc, rank)}
            self._hand_over(moved, owner, listeners)   # no listener left: forgotten

    def _hand_over(self, doc: dict, owner: str, listeners) -> None:
        if waiting(doc) and listeners:
            self.waiting[doc["id"]] = (doc, owner)
        else:
            self.waiting.pop(doc["id"], None)
            self.line_of.pop(doc["id"], None)
        for listener in listeners:
            listener.offer(doc)

    async def _resync(self) -> None:
        """After a reconnect: every listened-to job's current document (what changed meanwhile)."""
        docs = await self.read(list(self.by_job))
        for doc in docs:
            owner = self.waiting.get(doc["id"], (None, ""))[1]
            self._hand_over(doc, owner, self.by_job.get(doc["id"], set()))


def ended(doc: dict) -> bool:
    return doc["status"] in TERMINAL
