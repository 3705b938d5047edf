"""The presets service's side of the presets read model (shared/contracts/presets/view.py): the presets
service owns the presets, so it alone publishes their snapshot, versioned, never backwards."""
from __future__ import annotations

import json
import logging

import redis
from nameko.extensions import DependencyProvider

from shared.config import from_nameko
from shared.contracts.presets.view import PresetView

log = logging.getLogger(__name__)

# KEYS: revision key, snapshot key. ARGV: revision, epoch, snapshot JSON. Returns 1 when written, 0 when the
# stored snapshot is as new or newer (same epoch).
_WRITE = """
local current = redis.call('GET', KEYS[1])
if current then
  local sep = string.find(current, ':', 1, true)
  if sep and string.sub(current, sep + 1) == ARGV[2]
     and tonumber(string.sub(current, 1, sep - 1)) >= tonumber(ARGV[1]) then
    return 0
  end
end
redis.call('SET', KEYS[2], ARGV[3])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. ARGV[2])
return 1
"""


class PresetPublisher(PresetView):
    """The reader plus the versioned write of a new snapshot."""

    def __init__(self, url: str, prefix: str = "gaze", timeout: float = 0.5):
        super().__init__(url, prefix, timeout)
        self._write = self.client.register_script(_WRITE) if self.client else None

    def publish(self, version: dict, presets: list[dict]) -> bool:
        """Store this snapshot unless one as new or newer is there; True when written."""
        if self.client is None:
            return False
        document = json.dumps({"revision": int(version["revision"]), "epoch": version["epoch"],
                               "presets": presets}, separators=(",", ":"), ensure_ascii=False)
        try:
            written = bool(self._write(keys=[self.revision_key, self.snapshot_key],
                                       args=[int(version["revision"]), version["epoch"], document]))
        except redis.RedisError as exc:
            log.warning("presets read model: publish of revision %s failed: %s", version.get("revision"), exc)
            return False
        if written:
            log.debug("presets read model: published revision %s (%d presets)", version["revision"], len(presets))
        return written

    def stored_token(self):
        """The revision key's value ("<revision>:<epoch>"), or None when absent or Redis is unreachable."""
        if self.client is None:
            return None
        try:
            raw = self.client.get(self.revision_key)
        except redis.RedisError as exc:
            log.warning("presets read model: reading the stored revision failed: %s", exc)
            return None
        return None if raw is None else raw.decode()


class PresetViewWriter(DependencyProvider):
    """The presets service's handle on the read model (one Redis connection pool per container)."""

    def setup(self):
        settings = from_nameko(self.container.config)
        self.view = PresetPublisher(settings.redis_url, settings.redis_prefix)

    def stop(self):
        self.view.close()

    def get_dependency(self, worker_ctx):
        return self.view
