"""The presets service over real RPC and PostgreSQL: listing, resolving and preset CRUD."""
import pytest
from nameko.standalone.rpc import ServiceRpcProxy

from shared.errors import Conflict, InvalidField, NotFound
from services.presets.service import PresetsService

NEW = {"slug": "night_city", "name": "Night City", "prompt": "neon streets", "negative": "daylight",
       "checkpoint": "SDXL/sd_xl_base_1.0.safetensors", "width": 1024, "height": 768, "steps": 20,
       "cfg": 7.0, "sampler": "dpmpp_2m"}


@pytest.fixture
def presets(container_factory, settings, db):
    db.execute("DELETE FROM presets.presets WHERE slug <> 'example_01'")
    db.execute("UPDATE presets.presets SET cover_path = NULL")
    container_factory(PresetsService, settings.nameko_config()).start()
    with ServiceRpcProxy("presets", {"AMQP_URI": settings.amqp_uri, "serializer": "json"}) as proxy:
        yield proxy


def test_lists_the_seeded_example(presets):
    assert presets.list() == [{"preset_id": "example_01", "slug": "example_01", "name": "Example Preset",
                               "has_cover": False, "cover_path": None}]


def test_resolve_applies_overrides_and_rejects_unknown_checkpoints(presets):
    spec = presets.resolve("example_01", {"extra_positive": "smiling", "seed": 7, "width": 512, "height": 640})
    assert spec["prompt"].endswith(", smiling") and spec["seed"] == 7
    assert (spec["width"], spec["height"]) == (512, 640)
    with pytest.raises(InvalidField) as err:
        presets.resolve("example_01", {"checkpoint": "Missing/model.safetensors"})
    assert err.value.field == "checkpoint"
    with pytest.raises(NotFound):
        presets.resolve("nope", {})


def test_create_update_cover_delete(presets):
    created = presets.create(NEW)
    assert created["slug"] == "night_city" and created["cover_path"] is None
    with pytest.raises(Conflict) as err:
        presets.create(NEW)
    assert err.value.field == "slug"
    updated = presets.update("night_city", {"name": "Night City II", "steps": 30})
    assert (updated["name"], updated["steps"], updated["prompt"]) == ("Night City II", 30, "neon streets")
    with pytest.raises(InvalidField) as err:
        presets.update("night_city", {"width": 1001})
    assert err.value.field == "width"
    summary = presets.set_cover("night_city", "presets/night_city/gen_1_ab.png")
    assert summary["has_cover"] is True
    assert [p["slug"] for p in presets.list()] == ["example_01", "night_city"]
    exported = presets.export()
    assert [p["slug"] for p in exported] == ["example_01", "night_city"]
    assert set(exported[1]) == set(NEW) and exported[1]["name"] == "Night City II"
    presets.delete("night_city")
    with pytest.raises(NotFound):
        presets.get("night_city")
    with pytest.raises(NotFound):
        presets.delete("night_city")


@pytest.mark.parametrize("field, value", [("slug", "Bad Slug"), ("name", ""), ("checkpoint", "../x"),
                                          ("cfg", 99), ("unknown", 1)])
def test_create_rejects_bad_fields(presets, field, value):
    with pytest.raises(InvalidField) as err:
        presets.create({**NEW, field: value})
    assert err.value.field == field
