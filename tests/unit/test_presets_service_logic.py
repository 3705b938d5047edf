"""PresetsService's own decisions: each entrypoint runs under nameko's worker_factory with its store and
read-model writer replaced by mocks. What is pinned here is what an entrypoint decides: what it validates
before the store is asked, which store call it makes with what, when the snapshot is published (after a
committed write, never failing it), and which checkpoints an override may name. (The SQL and the real
RPC: tests/integration/test_presets_service.py, the read model: tests/integration/test_preset_view.py.)"""
import psycopg
import pytest
from nameko.testing.services import worker_factory

from services.presets.service import PresetsService
from shared import config, events
from shared.contracts.presets.view import token
from shared.errors import InvalidField, NotFound
from shared.schemas import PresetFields

CONFIGURED = ["Config/a.safetensors", "Config/b.safetensors"]
REPORTED = ["Node/c.safetensors"]
SETTINGS = config.load({"GAZE_CHECKPOINTS": ",".join(CONFIGURED), "GAZE_STATUS_INTERVAL_SECONDS": "10"})

FIELDS = {"slug": "city", "name": "City", "prompt": "neon streets", "negative": "daylight",
          "checkpoint": "Config/a.safetensors", "width": 1024, "height": 768, "steps": 20, "cfg": 7.0,
          "sampler": "dpmpp_2m"}
ROW = {**FIELDS, "cover_path": None, "id": 7, "created_at": "2026-01-01T00:00:00Z"}
VERSION = {"revision": 3, "epoch": "c0ffee"}


@pytest.fixture
def service():
    service = worker_factory(PresetsService, config=SETTINGS.nameko_config())
    service.preset_view.enabled = True
    service.store.snapshot.return_value = (VERSION, [ROW])
    return service


# --- reading -----------------------------------------------------------------------------------------

def test_list_answers_each_preset_as_its_summary(service):
    service.store.list.return_value = [ROW, {**ROW, "slug": "harbour", "name": "Harbour", "cover_path": "a.png"}]
    assert service.list() == [
        {"preset_id": "city", "slug": "city", "name": "City", "has_cover": False, "cover_path": None},
        {"preset_id": "harbour", "slug": "harbour", "name": "Harbour", "has_cover": True, "cover_path": "a.png"}]


def test_export_keeps_the_editable_fields_only(service):
    service.store.list.return_value = [{**ROW, "cover_path": "a.png"}]
    assert service.export() == [FIELDS]
    assert list(service.export()[0]) == list(PresetFields.model_fields)


def test_an_unknown_preset_is_not_found(service):
    service.store.get.side_effect = NotFound("preset", "nope")
    with pytest.raises(NotFound):
        service.get("nope")
    with pytest.raises(NotFound):
        service.resolve("nope", {})


# --- resolve and the checkpoints a request may name --------------------------------------------------

def test_resolve_without_a_checkpoint_override_asks_no_one_which_checkpoints_exist(service):
    service.store.get.return_value = ROW
    spec = service.resolve("city", {"seed": 7, "extra_positive": "rain"})
    assert (spec["preset_slug"], spec["checkpoint"], spec["seed"]) == ("city", "Config/a.safetensors", 7)
    assert spec["prompt"] == "neon streets, rain"
    service.store.node_checkpoints.assert_not_called()


def test_a_checkpoint_override_must_be_one_a_fresh_generator_reported(service):
    service.store.get.return_value = ROW
    service.store.node_checkpoints.return_value = REPORTED
    assert service.resolve("city", {"checkpoint": REPORTED[0]})["checkpoint"] == REPORTED[0]
    with pytest.raises(InvalidField) as caught:
        service.resolve("city", {"checkpoint": CONFIGURED[1]})   # configured, but no generator has it
    assert caught.value.field == "checkpoint"
    # "fresh": heard from within three status intervals
    service.store.node_checkpoints.assert_called_with(fresher_than_seconds=3 * SETTINGS.status_interval_seconds)


def test_until_a_generator_reports_the_configured_checkpoints_count(service):
    service.store.get.return_value = ROW
    service.store.node_checkpoints.return_value = None
    assert service.checkpoints() == CONFIGURED
    assert service.resolve("city", {"checkpoint": CONFIGURED[1]})["checkpoint"] == CONFIGURED[1]
    with pytest.raises(InvalidField):
        service.resolve("city", {"checkpoint": REPORTED[0]})


@pytest.mark.parametrize("status, recorded", [
    ({"healthy": True, "checkpoints": REPORTED}, True),
    ({"healthy": False, "checkpoints": REPORTED}, False),   # a broken replica's list does not count
    ({"healthy": True, "checkpoints": None}, False),         # a backend that takes any configured checkpoint
])
def test_a_generator_status_records_what_a_healthy_replica_can_load(service, status, recorded):
    event = events.GeneratorStatus(replica="gen-a", backend="comfyui", detail="ok", **status)
    service.on_generator_status(event.model_dump())
    expected = [(("gen-a", REPORTED, event.at),)] if recorded else []
    assert service.store.record_node_checkpoints.call_args_list == expected


# --- writes, and the snapshot published after each --------------------------------------------------

def test_create_validates_writes_then_publishes(service):
    order = []
    service.store.create.side_effect = lambda fields: order.append("create") or {**fields, "cover_path": None}
    service.preset_view.publish.side_effect = lambda *snapshot: order.append("publish")
    created = service.create({"slug": "city", "name": "City", "checkpoint": "Config/a.safetensors"})
    # the store is given every field, the defaults filled in
    assert service.store.create.call_args.args[0] == {
        "slug": "city", "name": "City", "prompt": "", "negative": "", "checkpoint": "Config/a.safetensors",
        "width": 1024, "height": 1024, "steps": 28, "cfg": 6.0, "sampler": "euler_ancestral"}
    assert created["slug"] == "city"
    assert order == ["create", "publish"]
    service.preset_view.publish.assert_called_once_with(VERSION, [ROW])


@pytest.mark.parametrize("fields, field", [
    ({**FIELDS, "slug": "Not A Slug"}, "slug"),
    ({**FIELDS, "width": 100}, "width"),
    ({**FIELDS, "checkpoint": "../etc/passwd"}, "checkpoint"),
    ({**FIELDS, "colour": "red"}, "colour"),
    ({key: value for key, value in FIELDS.items() if key != "name"}, "name"),
])
def test_invalid_fields_are_refused_before_the_store_is_asked(service, fields, field):
    with pytest.raises(InvalidField) as caught:
        service.create(fields)
    assert caught.value.field == field
    service.store.create.assert_not_called()
    service.preset_view.publish.assert_not_called()


def test_update_keeps_the_fields_not_given_and_the_slug_of_the_path(service):
    service.store.get.return_value = ROW
    service.store.update.side_effect = lambda slug, fields: {**fields, "cover_path": None}
    service.update("city", {"name": "Night City", "slug": "renamed"})
    service.store.update.assert_called_once_with("city", {**FIELDS, "name": "Night City"})
    service.preset_view.publish.assert_called_once()


def test_an_invalid_update_writes_nothing(service):
    service.store.get.return_value = ROW
    with pytest.raises(InvalidField) as caught:
        service.update("city", {"steps": 0})
    assert caught.value.field == "steps"
    service.store.update.assert_not_called()
    service.preset_view.publish.assert_not_called()


def test_delete_and_set_cover_publish_after_the_write(service):
    service.delete("city")
    service.store.delete.assert_called_once_with("city")
    service.store.set_cover.return_value = {**ROW, "cover_path": "presets/city/gen_1_ab.png"}
    assert service.set_cover("city", "presets/city/gen_1_ab.png") == {
        "preset_id": "city", "slug": "city", "name": "City", "has_cover": True,
        "cover_path": "presets/city/gen_1_ab.png"}
    service.store.set_cover.assert_called_once_with("city", "presets/city/gen_1_ab.png")
    assert service.preset_view.publish.call_count == 2


def test_a_failed_publish_does_not_fail_the_committed_write(service, caplog):
    """The write has committed: failing the RPC would make the caller retry it. The timer publishes again."""
    service.store.create.return_value = ROW
    service.store.snapshot.side_effect = psycopg.OperationalError("server closed the connection")
    assert service.create(FIELDS) == ROW
    service.preset_view.publish.assert_not_called()
    assert "the timer retries" in caplog.text


def test_without_a_read_model_nothing_is_published(service):
    service.preset_view.enabled = False
    service.store.create.return_value = ROW
    service.create(FIELDS)
    service.republish()
    service.store.snapshot.assert_not_called()
    service.store.revision.assert_not_called()
    service.preset_view.publish.assert_not_called()


@pytest.mark.parametrize("stored, published", [(None, True), ("2:c0ffee", True), ("3:other-epoch", True),
                                                (token(VERSION), False)])
def test_the_timer_publishes_when_redis_holds_another_revision_than_postgres(service, stored, published):
    service.store.revision.return_value = VERSION
    service.preset_view.stored_token.return_value = stored
    service.republish()
    assert service.preset_view.publish.call_count == (1 if published else 0)
