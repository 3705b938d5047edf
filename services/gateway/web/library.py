"""The library (home page): every preset as a card with its cover, a fallback cover or a placeholder."""
from __future__ import annotations

from services.gateway.web.render import render
from services.gateway.stores.preset_lookup import PresetLookup
from shared.contracts.jobs import JobsClient


class LibraryResource:
    login_required = True

    def __init__(self, rpc, presets: PresetLookup):
        self.jobs_service = JobsClient(rpc)
        self.presets = presets

    def on_get(self, req, resp):
        presets = self.presets.list()   # the read model's snapshot: no broker round trip
        # One query for every card without a cover (not one per card): a random finished image each.
        uncovered = [p["slug"] for p in presets if not p["cover_path"]]
        fallbacks = self.jobs_service.random_image_per_preset(uncovered) if uncovered else {}
        cards = [{**p, "fallback_path": fallbacks.get(p["slug"])} for p in presets]
        render(req, resp, "library.html", cards=cards)
