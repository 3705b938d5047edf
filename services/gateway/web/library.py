"""The library (home page): every preset as a card with its cover, a fallback cover or a placeholder."""
from __future__ import annotations

from services.gateway.web.render import render
from shared.contracts.jobs import JobsClient
from shared.contracts.presets import PresetsClient


class LibraryResource:
    login_required = True

    def __init__(self, rpc):
        self.jobs_service = JobsClient(rpc)
        self.presets_service = PresetsClient(rpc)

    def on_get(self, req, resp):
        presets = self.presets_service.list()
        # One query for every card without a cover (not one per card): a random finished image each.
        uncovered = [p["slug"] for p in presets if not p["cover_path"]]
        fallbacks = self.jobs_service.random_image_per_preset(uncovered) if uncovered else {}
        cards = [{**p, "fallback_path": fallbacks.get(p["slug"])} for p in presets]
        render(req, resp, "library.html", cards=cards)
