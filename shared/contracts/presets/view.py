"""The presets read model: a snapshot of every preset kept in Redis, so the gateway can list presets and
resolve a generate request without a broker round trip.

Why: GET /api/v1/presets and POST /api/v1/generate/<slug> each cost a presets RPC (two broker messages
and a Postgres query). Presets change rarely and are few, so the presets service (their owner) publishes
all of them as one snapshot, and each gateway process keeps the parsed snapshot in memory: per request it
reads one small key (the revision) and answers from memory while that revision is unchanged.

Keys (under the configured prefix):
  <prefix>:presets:revision   "<revision>:<epoch>"  (one small GET per gateway request)
  <prefix>:presets:snapshot   {"revision", "epoch", "presets": [every row `presets.list` / `resolve` need]}

Versioned, never backwards. A statement-level trigger on presets.presets bumps a revision counter in the
same transaction as the write (so direct SQL writes count too), and the snapshot query reads the rows and
their revision in one statement. A Lua script writes both keys together, and only when the revision is
newer than the stored one: a slow writer holding an old snapshot can never replace a newer one. The
epoch names the counter (a new one per database): a snapshot from another epoch is always replaced, so a
recreated database, whose count starts again, is not locked out by the old database's higher revision.

The presets service publishes after every write it commits, at start and on a timer that republishes
whenever Redis does not hold Postgres' revision (a Redis restart, a direct SQL write, a publish that failed).
Every Redis failure is logged and swallowed; readers then get None and use the presets RPCs, as before.
"""
from __future__ import annotations

import json
import logging
import threading
import time

import redis
log = logging.getLogger(__name__)

# After a failed read, the gateway leaves Redis alone this long (answering through RPC), so a Redis that is
# down costs one failed round trip per second per process instead of one per request.
READ_BACKOFF_SECONDS = 1.0

def token(version: dict) -> str:
    """The revision key's value for {"revision", "epoch"}."""
    return f"{int(version['revision'])}:{version['epoch']}"


def summary(row: dict) -> dict:
    """One preset as `presets.list` answers it (and the read model's list)."""
    return {"preset_id": row["slug"], "slug": row["slug"], "name": row["name"],
            "has_cover": row["cover_path"] is not None, "cover_path": row["cover_path"]}


class PresetSnapshot:
    """One revision of all presets, parsed once per gateway process and shared by its threads: read-only,
    apart from `memo`, where callers keep what they derive from it (e.g. a rendered response body)."""

    def __init__(self, revision: int, epoch: str, presets: list[dict]):
        self.revision = revision
        self.epoch = epoch
        self.token = token({"revision": revision, "epoch": epoch})
        self.presets = presets
        self._by_slug = {row["slug"]: row for row in presets}
        self._summaries = [summary(row) for row in presets]
        self._memo = {}
        self._memo_lock = threading.Lock()

    @classmethod
    def from_json(cls, raw) -> PresetSnapshot:
        data = json.loads(raw)
        return cls(data["revision"], data["epoch"], data["presets"])

    def get(self, slug: str):
        """The preset's row (the fields `resolve` needs), or None when this snapshot lacks it."""
        return self._by_slug.get(slug)

    def summaries(self) -> list[dict]:
        """What `presets.list` would answer at this revision (do not modify)."""
        return self._summaries

    def memo(self, name: str, make):
        """`make()` computed once per snapshot (so once per revision) and kept under `name`."""
        try:
            return self._memo[name]
        except KeyError:
            with self._memo_lock:
                if name not in self._memo:
                    self._memo[name] = make()
                return self._memo[name]


class PresetView:
    """Cached reads of the presets snapshot (the gateway); services/presets/read_model.py adds the
    presets service's versioned writes."""

    def __init__(self, url: str, prefix: str = "gaze", timeout: float = 0.5):
        self.prefix = prefix
        self.revision_key = f"{prefix}:presets:revision"
        self.snapshot_key = f"{prefix}:presets:snapshot"
        self.client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                           health_check_interval=30) if url else None
        self._cached: PresetSnapshot | None = None
        self._fetch_lock = threading.Lock()
        self._retry_at = 0.0

    @property
    def enabled(self) -> bool:
        return self.client is not None

    def current(self) -> PresetSnapshot | None:
        """The latest snapshot: one GET of the revision, the parsed snapshot from memory while that revision
        is unchanged. None when there is none (never published, Redis flushed, unreachable, not configured):
        the caller then asks the presets service."""
        if self.client is None or time.monotonic() < self._retry_at:
            return None
        try:
            raw_token = self.client.get(self.revision_key)
            if raw_token is None:
                return None
            current = raw_token.decode()
            cached = self._cached
            if cached is not None and cached.token == current:
                return cached
            with self._fetch_lock:   # one thread per process fetches and parses a new revision
                cached = self._cached
                if cached is not None and cached.token == current:
                    return cached
                raw = self.client.get(self.snapshot_key)
                if raw is None:
                    return None
                snapshot = PresetSnapshot.from_json(raw)
                self._cached = snapshot
                return snapshot
        except redis.RedisError as exc:
            self._retry_at = time.monotonic() + READ_BACKOFF_SECONDS
            log.warning("presets read model: read failed, asking the presets service for %.0f s: %s",
                        READ_BACKOFF_SECONDS, exc)
            return None
        except (ValueError, KeyError, TypeError) as exc:   # not a snapshot we wrote: ignore it
            log.warning("presets read model: unreadable snapshot, asking the presets service: %r", exc)
            return None

    def close(self):
        if self.client is not None:
            self.client.close()
