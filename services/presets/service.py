"""The `presets` nameko service: owns presets and resolves them into generation specs.

It also keeps the presets read model (shared/contracts/presets/view.py) current: a snapshot of every preset in Redis,
published after each write it commits, at start and by a timer, from which the gateway lists presets and
resolves generate requests without an RPC."""
import logging

from nameko.dependency_providers import Config
from pydantic import ValidationError

from shared import events
from shared.entrypoints import event_handler, rpc
from shared.config import from_nameko
from shared.errors import EXPECTED, InvalidField
from shared.contracts.presets.view import summary, token
from services.presets.read_model import PresetViewWriter
from shared.contracts.presets.resolve import resolve
from shared.schemas import PresetFields, first_error
from shared.timers import configured_timer
from services.presets.store import PresetStore

log = logging.getLogger(__name__)


def _validated(fields: dict) -> dict:
    try:
        return PresetFields.model_validate(fields).model_dump()
    except ValidationError as exc:
        raise InvalidField(*first_error(exc)) from None


class PresetsService:
    name = "presets"

    store = PresetStore()
    config = Config()
    preset_view = PresetViewWriter()

    @rpc
    def list(self):
        return [summary(row) for row in self.store.list()]

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
        created = self.store.create(_validated(fields))
        self._publish()
        return created

    @rpc(expected_exceptions=EXPECTED)
    def update(self, slug, fields):
        current = self.store.get(slug)
        editable = {name: current[name] for name in PresetFields.model_fields}
        updated = self.store.update(slug, _validated({**editable, **fields, "slug": slug}))
        self._publish()
        return updated

    @rpc(expected_exceptions=EXPECTED)
    def delete(self, slug):
        self.store.delete(slug)
        self._publish()

    @rpc(expected_exceptions=EXPECTED)
    def set_cover(self, slug, relative_path):
        row = self.store.set_cover(slug, relative_path)
        self._publish()
        return summary(row)

    @configured_timer("presets_publish_seconds", eager=True)
    def republish(self):
        """At start and every GAZE_PRESETS_PUBLISH_SECONDS: publish when Redis does not hold the revision
        Postgres has (first start, a Redis restart, a direct SQL write, a publish that failed)."""
        if self.preset_view.enabled and self.preset_view.stored_token() != token(self.store.revision()):
            self._publish()

    def _publish(self):
        """Write the current snapshot to the read model. Called after a write has committed, so a failure
        here must not fail the RPC: it is logged, and the timer publishes again."""
        if not self.preset_view.enabled:
            return
        try:
            self.preset_view.publish(*self.store.snapshot())
        except Exception:
            log.exception("presets read model: could not read the snapshot to publish; the timer retries")
