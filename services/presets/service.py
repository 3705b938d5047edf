"""The `presets` nameko service: owns presets and resolves them into generation specs."""
from nameko.dependency_providers import Config
from nameko.events import event_handler
from nameko.rpc import rpc
from pydantic import ValidationError

from shared import events
from shared.config import from_nameko
from shared.errors import EXPECTED, InvalidField
from shared.schemas import PresetFields, first_error
from services.presets.resolve import resolve
from services.presets.store import PresetStore


def _summary(row):
    return {"preset_id": row["slug"], "slug": row["slug"], "name": row["name"],
            "has_cover": row["cover_path"] is not None, "cover_path": row["cover_path"]}


def _validated(fields: dict) -> dict:
    try:
        return PresetFields.model_validate(fields).model_dump()
    except ValidationError as exc:
        raise InvalidField(*first_error(exc)) from None


class PresetsService:
    name = "presets"

    store = PresetStore()
    config = Config()

    @rpc
    def list(self):
        return [_summary(row) for row in self.store.list()]

    @rpc
    def export(self):
        """Every preset's editable fields, in one query (the UI's JSON export)."""
        return [{name: row[name] for name in PresetFields.model_fields} for row in self.store.list()]

    @rpc(expected_exceptions=EXPECTED)
    def get(self, slug):
        return self.store.get(slug)

    @rpc(expected_exceptions=EXPECTED)
    def resolve(self, slug, overrides):
        known = self._known_checkpoints() if "checkpoint" in overrides else ()
        return resolve(self.store.get(slug), overrides, known).model_dump()

    @rpc
    def checkpoints(self):
        """The checkpoints a request may name (the generate form's choices)."""
        return self._known_checkpoints()

    @event_handler(events.EVENT_SOURCE, events.GENERATOR_STATUS)
    def on_generator_status(self, payload):
        status = events.GeneratorStatus.model_validate(payload)
        if status.healthy and status.checkpoints is not None:
            self.store.record_node_checkpoints(status.replica, status.checkpoints, status.at)

    def _known_checkpoints(self):
        """What the generator nodes report they can load; the configured list until any has reported.
        A replica silent for three status intervals no longer counts."""
        settings = from_nameko(self.config)
        reported = self.store.node_checkpoints(fresher_than_seconds=3 * settings.status_interval_seconds)
        return reported if reported is not None else list(settings.checkpoints)

    @rpc(expected_exceptions=EXPECTED)
    def create(self, fields):
        return self.store.create(_validated(fields))

    @rpc(expected_exceptions=EXPECTED)
    def update(self, slug, fields):
        current = self.store.get(slug)
        editable = {name: current[name] for name in PresetFields.model_fields}
        return self.store.update(slug, _validated({**editable, **fields, "slug": slug}))

    @rpc(expected_exceptions=EXPECTED)
    def delete(self, slug):
        self.store.delete(slug)

    @rpc(expected_exceptions=EXPECTED)
    def set_cover(self, slug, relative_path):
        return _summary(self.store.set_cover(slug, relative_path))
