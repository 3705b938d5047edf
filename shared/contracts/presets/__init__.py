"""The presets service's RPC contract (services/presets/service.py is the callee)."""
from __future__ import annotations

from shared.contracts import ServiceClient

SERVICE = "presets"


class PresetsClient(ServiceClient):
    service = SERVICE

    def list(self) -> list[dict]:
        return self._call("list")

    def export(self) -> list[dict]:
        return self._call("export")

    def get(self, slug: str) -> dict:
        return self._call("get", slug)

    def resolve(self, slug: str, overrides: dict) -> dict:
        """The full generation spec for a preset and a request's overrides."""
        return self._call("resolve", slug, overrides)

    def checkpoints(self) -> list[str]:
        return self._call("checkpoints")

    def create(self, fields: dict) -> dict:
        return self._call("create", fields)

    def update(self, slug: str, fields: dict) -> dict:
        return self._call("update", slug, fields)

    def delete(self, slug: str) -> None:
        return self._call("delete", slug)

    def set_cover(self, slug: str, relative_path: str | None) -> dict:
        return self._call("set_cover", slug, relative_path)
