"""How the gateway lists presets and resolves a generate request: the Redis read model first, the presets
service second.

The read model (shared/contracts/presets/view.py) holds a snapshot of every preset, so listing and resolving need no
broker round trip. The presets service stays the authority: a checkpoint override goes to it (only it
knows which checkpoints the generator nodes report), and so does a slug the snapshot lacks (the snapshot
may be a few seconds behind a direct SQL write; the service answers 404 for a slug that truly is unknown,
exactly as before). No snapshot (Redis down or not configured) means every call is the RPC it used to be.
"""
from __future__ import annotations

from shared.contracts.presets.view import PresetSnapshot, PresetView
from shared.contracts.presets.resolve import resolve
from shared.contracts.presets import PresetsClient


class PresetLookup:
    def __init__(self, rpc, view: PresetView | None = None):
        self.presets_service = PresetsClient(rpc)
        self.view = view or PresetView("")

    def snapshot(self) -> PresetSnapshot | None:
        return self.view.current()

    def list(self) -> list[dict]:
        """What `presets.list` answers: from the snapshot when there is one (do not modify), else the RPC."""
        snapshot = self.view.current()
        return snapshot.summaries() if snapshot is not None else self.presets_service.list()

    def resolve(self, slug: str, overrides: dict) -> dict:
        """What `presets.resolve(slug, overrides)` answers: the generation spec, NotFound, InvalidField."""
        if "checkpoint" not in overrides:
            snapshot = self.view.current()
            preset = snapshot.get(slug) if snapshot is not None else None
            if preset is not None:
                return resolve(preset, overrides, ()).model_dump()
        return self.presets_service.resolve(slug, overrides)
