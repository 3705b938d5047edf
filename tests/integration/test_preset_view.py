"""The presets read model (shared/contracts/presets/view.py) against the real Redis, PostgreSQL and RabbitMQ: the
versioned write, the revision trigger, the presets service publishing, and the gateway answering from it."""
import dataclasses
import json
import uuid

import pytest
from nameko.standalone.rpc import ClusterRpcProxy

from shared.contracts.presets.view import PresetSnapshot, PresetView, token
from services.presets.read_model import PresetPublisher
from services.presets.service import PresetsService
from services.presets.store import PresetRepository
from tests.fakes import AUTH, JSON, FakeRpc
from tests.helpers import app_client, wait_until

REDIS_URL = "redis://127.0.0.1:6379/0"
DOWN_REDIS_URL = "redis://127.0.0.1:1/0"
OURS = ("pv_%",)

ROW = {"slug": "pv_city", "name": "City", "prompt": "neon streets", "negative": "daylight",
       "checkpoint": "SDXL/sd_xl_base_1.0.safetensors", "width": 1024, "height": 768, "steps": 20, "cfg": 7.0,
       "sampler": "dpmpp_2m", "cover_path": None}
FIELDS = {k: v for k, v in ROW.items() if k != "cover_path"}


def insert_directly(db, slug, name="Direct"):
    db.execute("INSERT INTO presets.presets (slug, name, prompt, checkpoint, width, height, steps, cfg, sampler)"
               " VALUES (%s, %s, 'direct prompt', 'SD15/v1-5-pruned-emaonly.safetensors', 512, 512, 20, 6.5,"
               " 'euler')", (slug, name))


def db_revision(db):
    return db.execute("SELECT revision, epoch::text AS epoch FROM presets.presets_revision").fetchone()


@pytest.fixture
def prefix(settings):
    """A Redis prefix of this test's own; its keys are removed afterwards."""
    prefix = f"{settings.redis_prefix}-pv-{uuid.uuid4().hex[:8]}"
    yield prefix
    cleaner = PresetPublisher(REDIS_URL, prefix)
    cleaner.client.delete(cleaner.revision_key, cleaner.snapshot_key)
    cleaner.close()


@pytest.fixture
def view(prefix):
    view = PresetPublisher(REDIS_URL, prefix)
    yield view
    view.close()


@pytest.fixture
def clean_presets(db):
    db.execute("DELETE FROM presets.presets WHERE slug LIKE %s", OURS)
    yield db
    db.execute("DELETE FROM presets.presets WHERE slug LIKE %s", OURS)


@pytest.fixture
def repository(pool):
    return PresetRepository(pool)


# --- the versioned write ----------------------------------------------------------------------------

def test_an_older_snapshot_never_replaces_a_newer_one(view):
    epoch = str(uuid.uuid4())
    assert view.publish({"revision": 5, "epoch": epoch}, [ROW])
    assert not view.publish({"revision": 4, "epoch": epoch}, []), "a slow writer's older snapshot is refused"
    assert not view.publish({"revision": 5, "epoch": epoch}, []), "the same revision is not rewritten"
    assert view.current().get("pv_city") == ROW
    assert view.stored_token() == f"5:{epoch}"
    assert view.publish({"revision": 6, "epoch": epoch}, [])
    assert view.current().revision == 6 and view.current().get("pv_city") is None


def test_a_snapshot_of_another_counter_replaces_whatever_is_stored(view):
    """A recreated database counts from 1 again: its snapshot must not be locked out by the old one's 90."""
    view.publish({"revision": 90, "epoch": str(uuid.uuid4())}, [ROW])
    fresh = {"revision": 2, "epoch": str(uuid.uuid4())}
    assert view.publish(fresh, [])
    assert view.stored_token() == token(fresh)
    assert view.current().summaries() == []


def test_the_reader_parses_each_revision_once(view):
    epoch = str(uuid.uuid4())
    view.publish({"revision": 1, "epoch": epoch}, [ROW])
    first = view.current()
    assert view.current() is first, "same revision: the parsed snapshot from memory"
    assert first.memo("x", lambda: object()) is first.memo("x", lambda: object())
    view.publish({"revision": 2, "epoch": epoch}, [{**ROW, "name": "City II"}])
    assert view.current() is not first and view.current().get("pv_city")["name"] == "City II"


def test_an_unreachable_or_unconfigured_redis_reads_as_no_snapshot():
    down = PresetPublisher(DOWN_REDIS_URL, timeout=0.2)
    assert down.current() is None
    assert down.publish({"revision": 1, "epoch": "e"}, [ROW]) is False
    assert down.stored_token() is None
    off = PresetPublisher("")
    assert not off.enabled and off.current() is None and off.publish({"revision": 1, "epoch": "e"}, []) is False


# --- the revision counter ---------------------------------------------------------------------------

def test_every_kind_of_direct_write_bumps_the_revision(clean_presets):
    db = clean_presets
    before = db_revision(db)["revision"]
    insert_directly(db, "pv_direct")
    assert db_revision(db)["revision"] == before + 1
    db.execute("UPDATE presets.presets SET name = 'Renamed' WHERE slug = 'pv_direct'")
    db.execute("DELETE FROM presets.presets WHERE slug = 'pv_direct'")
    assert db_revision(db)["revision"] == before + 3
    db.execute("UPDATE presets.presets SET name = name WHERE false")
    assert db_revision(db)["revision"] == before + 4, "statement-level: even a write of no rows counts"
    with db.transaction(force_rollback=True):
        db.execute("TRUNCATE presets.presets")
        assert db_revision(db)["revision"] == before + 5
    assert db_revision(db)["revision"] == before + 4, "a rolled-back write leaves the revision as it was"


def test_the_snapshot_query_reads_rows_and_revision_together(clean_presets, repository):
    version, rows = repository.snapshot()
    assert version == db_revision(clean_presets)
    assert rows == repository.list(), "the same rows, in the same order, as presets.list reads"
    insert_directly(clean_presets, "pv_direct")
    version2, rows2 = repository.snapshot()
    assert version2["revision"] == version["revision"] + 1
    assert [r["slug"] for r in rows2] == [r["slug"] for r in rows] + ["pv_direct"]


# --- the presets service publishes ------------------------------------------------------------------

def start_presets(container_factory, settings, prefix, publish_seconds=3600.0):
    service_settings = dataclasses.replace(settings, redis_prefix=prefix, presets_publish_seconds=publish_seconds)
    container = container_factory(PresetsService, service_settings.nameko_config())
    container.start()
    return container


@pytest.fixture
def rpc_proxy(settings):
    with ClusterRpcProxy({"AMQP_URI": settings.amqp_uri, "serializer": "json"}) as proxy:
        yield proxy


def test_the_service_publishes_at_start_and_after_each_write(container_factory, settings, prefix, view,
                                                             clean_presets, rpc_proxy):
    start_presets(container_factory, settings, prefix)   # timer far away: only start and the RPCs publish
    wait_until(view.current, what="the snapshot published at start")
    assert view.stored_token() == token(db_revision(clean_presets))
    presets = rpc_proxy.presets

    presets.create(FIELDS)
    assert view.current().get("pv_city") == ROW, "written before create returns"
    presets.update("pv_city", {"name": "City II"})
    assert view.current().get("pv_city")["name"] == "City II"
    presets.set_cover("pv_city", "presets/pv_city/gen_1_ab.png")
    assert view.current().get("pv_city")["cover_path"] == "presets/pv_city/gen_1_ab.png"
    assert view.current().summaries() == presets.list()
    presets.delete("pv_city")
    assert view.current().get("pv_city") is None
    assert view.stored_token() == token(db_revision(clean_presets))


def test_the_timer_publishes_direct_sql_writes_and_heals_a_lost_snapshot(container_factory, settings, prefix,
                                                                         view, clean_presets):
    start_presets(container_factory, settings, prefix, publish_seconds=0.2)
    wait_until(view.current, what="the snapshot published at start")
    insert_directly(clean_presets, "pv_direct")
    wait_until(lambda: view.current().get("pv_direct"), timeout=5, what="the direct insert in the snapshot")
    view.client.delete(view.revision_key, view.snapshot_key)   # as after a Redis restart
    assert view.current() is None
    wait_until(view.current, timeout=5, what="the snapshot republished")
    assert view.current().get("pv_direct")["name"] == "Direct"


# --- the gateway answers from it --------------------------------------------------------------------

class RecordingRpc(FakeRpc):
    """The gateway's RPC, recorded: presets calls go to the real presets service, jobs.create is faked."""

    def __init__(self, proxy):
        super().__init__()
        self.proxy = proxy

    def presets_list(self):
        return self.proxy.presets.list()

    def presets_resolve(self, slug, overrides):
        return self.proxy.presets.resolve(slug, overrides)

    def presets_calls(self):
        return [(method, args) for service, method, args in self.calls if service == "presets"]


def gateway(settings, rpc, preset_view):
    return app_client(settings, rpc=rpc, preset_view=preset_view)


@pytest.fixture
def published(container_factory, settings, prefix, view, clean_presets, rpc_proxy):
    """The presets service running on this test's prefix, one extra preset created, its snapshot there."""
    start_presets(container_factory, settings, prefix)
    rpc_proxy.presets.create(FIELDS)
    assert view.current().get("pv_city")
    return rpc_proxy


def post(client, slug, body):
    return client.simulate_post(f"/api/v1/generate/{slug}", body=json.dumps(body), headers={**AUTH, **JSON})


def test_list_and_generate_need_no_presets_rpc(settings, published, view):
    rpc = RecordingRpc(published)
    client = gateway(settings, rpc, view)
    listed = client.simulate_get("/api/v1/presets", headers=AUTH)
    assert listed.status_code == 200
    assert [p["slug"] for p in listed.json["presets"]] == ["example_01", "pv_city"]
    assert listed.json["presets"][1] == {"preset_id": "pv_city", "slug": "pv_city", "name": "City", "has_cover": False}

    overrides = {"extra_positive": "rain", "extra_negative": "sun", "seed": 7, "width": 512, "height": 640}
    result = post(client, "pv_city", {**overrides, "count": 2})
    assert result.status_code == 202, result.text
    assert len(result.json["jobs"]) == 2
    assert rpc.presets_calls() == [], "listed and resolved from the read model"
    [(spec, count)] = rpc.called("jobs", "create")
    assert count == 2
    assert spec == published.presets.resolve("pv_city", overrides), "the very spec the presets service makes"


def test_answers_are_the_same_as_through_the_presets_service(settings, published, view):
    fast, slow = RecordingRpc(published), RecordingRpc(published)
    from_view, from_rpc = gateway(settings, fast, view), gateway(settings, slow, None)
    a, b = (c.simulate_get("/api/v1/presets", headers=AUTH) for c in (from_view, from_rpc))
    assert a.content == b.content and a.headers["content-type"] == b.headers["content-type"]
    assert a.headers["content-length"] == b.headers["content-length"]
    assert slow.presets_calls() == [("list", ())] and fast.presets_calls() == []

    for body in ({}, {"seed": 0, "extra_negative": ""}):
        assert post(from_view, "example_01", body).status_code == post(from_rpc, "example_01", body).status_code == 202
    assert fast.called("jobs", "create") == slow.called("jobs", "create")

    x, y = (post(c, "pv_nope", {}) for c in (from_view, from_rpc))
    assert x.status_code == y.status_code == 404
    assert x.json == y.json == {"error": "preset not found: pv_nope"}
    assert fast.presets_calls() == [("resolve", ("pv_nope", {}))], "unknown to the snapshot: the service decides"


def test_a_checkpoint_override_is_checked_by_the_presets_service(settings, published, view):
    rpc = RecordingRpc(published)
    client = gateway(settings, rpc, view)
    known = published.presets.checkpoints()[0]   # what nodes report (other tests' replicas) or the configured list
    assert post(client, "pv_city", {"checkpoint": known}).status_code == 202
    bad = post(client, "pv_city", {"checkpoint": "Nope/x.safetensors"})
    assert bad.status_code == 400 and bad.json["field"] == "checkpoint"
    assert [m for m, _ in rpc.presets_calls()] == ["resolve", "resolve"]


def test_a_slug_missing_from_a_stale_snapshot_goes_to_the_presets_service(settings, published, view, db):
    insert_directly(db, "pv_direct")   # the timer is an hour away: the snapshot does not have it yet
    assert view.current().get("pv_direct") is None
    rpc = RecordingRpc(published)
    result = post(gateway(settings, rpc, view), "pv_direct", {})
    assert result.status_code == 202, result.text
    assert rpc.presets_calls() == [("resolve", ("pv_direct", {}))]
    assert rpc.called("jobs", "create")[0][0]["prompt"] == "direct prompt"


def test_an_edit_is_visible_to_the_next_request(settings, published, view):
    rpc = RecordingRpc(published)
    client = gateway(settings, rpc, view)
    assert post(client, "pv_city", {}).status_code == 202
    published.presets.update("pv_city", {"name": "City II", "prompt": "wet neon"})
    listed = client.simulate_get("/api/v1/presets", headers=AUTH).json["presets"]
    assert [p["name"] for p in listed if p["slug"] == "pv_city"] == ["City II"]
    assert post(client, "pv_city", {}).status_code == 202
    first, second = (args[0] for args in rpc.called("jobs", "create"))
    assert (first["prompt"], second["prompt"]) == ("neon streets", "wet neon")
    assert second["preset_name"] == "City II"
    published.presets.delete("pv_city")
    assert client.simulate_get("/api/v1/presets", headers=AUTH).json["presets"][-1]["slug"] == "example_01"
    assert post(client, "pv_city", {}).status_code == 404
    assert rpc.presets_calls() == [("resolve", ("pv_city", {}))]


@pytest.mark.parametrize("preset_view", [PresetView(DOWN_REDIS_URL, timeout=0.2), PresetView("")],
                         ids=["redis-down", "no-redis"])
def test_without_redis_everything_goes_through_the_presets_service(settings, published, preset_view):
    rpc = RecordingRpc(published)
    client = gateway(settings, rpc, preset_view)
    listed = client.simulate_get("/api/v1/presets", headers=AUTH)
    assert listed.status_code == 200 and "pv_city" in [p["slug"] for p in listed.json["presets"]]
    assert post(client, "pv_city", {"seed": 3}).status_code == 202
    assert post(client, "pv_nope", {}).status_code == 404
    assert [m for m, _ in rpc.presets_calls()] == ["list", "resolve", "resolve"]
    assert rpc.called("jobs", "create")[0][0]["seed"] == 3


def test_a_snapshot_parses_what_the_service_publishes(view):
    view.publish({"revision": 3, "epoch": "e"}, [ROW])
    raw = view.client.get(view.snapshot_key)
    snapshot = PresetSnapshot.from_json(raw)
    assert (snapshot.revision, snapshot.epoch, snapshot.token) == (3, "e", "3:e")
    assert snapshot.summaries() == [{"preset_id": "pv_city", "slug": "pv_city", "name": "City", "has_cover": False,
                                     "cover_path": None}]
