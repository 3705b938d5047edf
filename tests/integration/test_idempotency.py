"""Idempotency-Key on POST /api/v1/generate/<slug>: the real Falcon app over a fake RPC, with the real
idempotency table in the session's Postgres database (services/gateway/stores/idempotency.py)."""
from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid

import falcon.testing
import pytest

from shared.errors import NotFound
from services.gateway.app import create_app
from services.gateway.stores.idempotency import IdempotencyStore
from services.gateway.stores.rpc import ServiceUnavailable
from tests.fakes import AUTH, GOOD_KEY, JSON, SLUG, FakeAdmin, FakeKeys, FakeProbes, FakeRpc
from tests.helpers import assert_json_error

OTHER_KEY = "gz_other-key"
BODY = {"count": 2, "seed": 7, "extra_positive": "red hat"}


class SlowRpc(FakeRpc):
    """jobs.create takes `delay` seconds (time.sleep: a green switch under the tests' eventlet), so racing
    requests overlap with it."""

    def __init__(self, delay=0.0, **kwargs):
        super().__init__(**kwargs)
        self.delay = delay

    def call(self, service, method, *args):
        if (service, method) == ("jobs", "create") and self.delay:
            time.sleep(self.delay)
        return super().call(service, method, *args)


@pytest.fixture
def table(db):
    db.execute("TRUNCATE gateway.idempotency")
    return db


def make(settings, pool, rpc=None, **store_options):
    rpc = rpc or FakeRpc()
    store = IdempotencyStore(pool, **store_options)
    app = create_app(settings, rpc=rpc, keys=FakeKeys(valid=(GOOD_KEY, OTHER_KEY)), admin=FakeAdmin(),
                     probes=FakeProbes(), idempotency=store)
    return falcon.testing.TestClient(app), rpc


def post(client, key, body=BODY, api_key=GOOD_KEY, slug=SLUG, raw=None):
    headers = {"X-API-Key": api_key, **JSON}
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.simulate_post(f"/api/v1/generate/{slug}", body=raw if raw is not None else json.dumps(body),
                                headers=headers)


def job_ids(result):
    assert result.status_code == 202, result.text
    assert all(job["status"] == "queued" for job in result.json["jobs"])
    return [job["job_id"] for job in result.json["jobs"]]


def test_same_key_and_body_returns_the_same_jobs(settings, pool, table):
    client, rpc = make(settings, pool)
    first = post(client, "order-1")
    ids = job_ids(first)
    assert len(ids) == 2
    # the same body written differently (key order, spacing) is the same request
    again = post(client, "order-1", raw='{ "extra_positive": "red hat", "seed": 7,  "count": 2 }')
    assert again.status_code == 202
    assert again.json == first.json
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert len(rpc.called("jobs", "create")) == 1
    row = table.execute("SELECT * FROM gateway.idempotency").fetchone()
    assert row["job_ids"] == ids
    # only a hash of the API key is stored, never the key
    assert row["api_key_hash"] == hashlib.sha256(GOOD_KEY.encode()).hexdigest()
    assert GOOD_KEY not in json.dumps(row, default=str)


def test_without_the_header_every_post_creates_jobs(settings, pool, table):
    client, rpc = make(settings, pool)
    assert job_ids(post(client, None)) != job_ids(post(client, None))
    assert len(rpc.called("jobs", "create")) == 2
    assert table.execute("SELECT count(*) AS n FROM gateway.idempotency").fetchone()["n"] == 0


def test_same_key_other_body_is_422_naming_the_header(settings, pool, table):
    client, rpc = make(settings, pool)
    job_ids(post(client, "order-2"))
    result = post(client, "order-2", body={**BODY, "seed": 8})
    assert_json_error(result, 422, "Idempotency-Key")
    other_slug = post(client, "order-2", slug="second")   # the slug is part of the request too
    assert_json_error(other_slug, 422, "Idempotency-Key")
    assert len(rpc.called("jobs", "create")) == 1


def test_keys_are_scoped_per_api_key(settings, pool, table):
    client, rpc = make(settings, pool)
    mine = job_ids(post(client, "shared-key"))
    theirs = job_ids(post(client, "shared-key", api_key=OTHER_KEY))
    assert set(mine).isdisjoint(theirs)
    # another API key with another body is no conflict either
    job_ids(post(client, "shared-key-2"))
    job_ids(post(client, "shared-key-2", body={"count": 1}, api_key=OTHER_KEY))
    assert len(rpc.called("jobs", "create")) == 4
    # the key given as ?api_key= is the same API key as the header
    replay = client.simulate_post(f"/api/v1/generate/{SLUG}", params={"api_key": GOOD_KEY}, body=json.dumps(BODY),
                                  headers={**JSON, "Idempotency-Key": "shared-key"})
    assert job_ids(replay) == mine


def test_expired_key_creates_new_jobs(settings, pool, table):
    client, rpc = make(settings, pool)
    old = job_ids(post(client, "order-3"))
    table.execute("UPDATE gateway.idempotency SET created_at = now() - interval '24 hours 1 second'")
    new = job_ids(post(client, "order-3"))
    assert set(old).isdisjoint(new)
    assert job_ids(post(client, "order-3")) == new   # the replacement row answers from now on
    # and an expired key may be used with another body
    table.execute("UPDATE gateway.idempotency SET created_at = now() - interval '25 hours'")
    job_ids(post(client, "order-3", body={"count": 1}))
    assert len(rpc.called("jobs", "create")) == 3


def test_expired_rows_are_purged(settings, pool, table):
    client, _ = make(settings, pool)
    for n in range(3):
        job_ids(post(client, f"old-{n}"))
    table.execute("UPDATE gateway.idempotency SET created_at = now() - interval '2 days'")
    job_ids(post(client, "fresh"))
    keys = [row["idempotency_key"] for row in table.execute("SELECT idempotency_key FROM gateway.idempotency")]
    assert keys == ["fresh"]


@pytest.mark.parametrize("value", ["", "x" * 256, "caf\u00e9", "tab\there", "bell\x07"])
def test_invalid_header_is_400(settings, pool, table, value):
    client, rpc = make(settings, pool)
    result = client.simulate_post(f"/api/v1/generate/{SLUG}", body=json.dumps(BODY),
                                  headers={**AUTH, **JSON, "Idempotency-Key": value})
    assert_json_error(result, 400, "Idempotency-Key")
    assert rpc.called("jobs", "create") == []


@pytest.mark.parametrize("value", ["a", "x" * 255, "~!@#$%^&*() <>?:\"{}|", str(uuid.uuid4())])
def test_valid_header_values(settings, pool, table, value):
    client, _ = make(settings, pool)
    first = job_ids(post(client, value))
    assert job_ids(post(client, value)) == first


def test_a_failed_request_releases_the_key(settings, pool, table):
    client, rpc = make(settings, pool)
    invalid = post(client, "order-4", body={"count": 0})
    assert_json_error(invalid, 400, "count")
    rpc.raises[("jobs", "create")] = ServiceUnavailable("jobs service down")
    down = post(client, "order-4")
    assert_json_error(down, 503)
    assert table.execute("SELECT count(*) AS n FROM gateway.idempotency").fetchone()["n"] == 0
    del rpc.raises[("jobs", "create")]
    ids = job_ids(post(client, "order-4"))   # the retry proceeds
    assert job_ids(post(client, "order-4")) == ids
    rpc.raises[("presets", "resolve")] = NotFound("preset", "nope")
    assert_json_error(post(client, "order-5", slug="nope"), 404)
    assert table.execute("SELECT count(*) AS n FROM gateway.idempotency").fetchone()["n"] == 1


def _race(client, requests):
    results = [None] * len(requests)

    def run(i, kwargs):
        results[i] = post(client, **kwargs)

    threads = [threading.Thread(target=run, args=(i, kwargs)) for i, kwargs in enumerate(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_concurrent_identical_requests_create_once(settings, pool, table):
    client, rpc = make(settings, pool, rpc=SlowRpc(delay=0.3))
    results = _race(client, [{"key": "race"}] * 6)
    answers = [job_ids(result) for result in results]
    assert len(rpc.called("jobs", "create")) == 1
    assert all(answer == answers[0] for answer in answers)
    assert sum(1 for r in results if r.headers.get("Idempotent-Replayed") == "true") == 5


def test_concurrent_request_with_another_body_is_422(settings, pool, table):
    client, rpc = make(settings, pool, rpc=SlowRpc(delay=0.3))
    results = _race(client, [{"key": "race-2"}, {"key": "race-2", "body": {"count": 1}}])
    statuses = sorted(result.status_code for result in results)
    assert statuses == [202, 422]
    assert len(rpc.called("jobs", "create")) == 1


def test_waiting_request_takes_over_when_the_first_fails(settings, pool, table):
    class FailingOnce(SlowRpc):
        failed = False

        def call(self, service, method, *args):
            if (service, method) == ("jobs", "create") and not self.failed:
                self.failed = True
                self.calls.append((service, method, args))
                time.sleep(0.3)
                raise ServiceUnavailable("jobs service down")
            return super().call(service, method, *args)

    client, rpc = make(settings, pool, rpc=FailingOnce())
    results = _race(client, [{"key": "race-3"}, {"key": "race-3"}])
    statuses = sorted(result.status_code for result in results)
    assert statuses == [202, 503]
    assert len(rpc.called("jobs", "create")) == 2


def test_still_in_progress_after_the_wait_is_409(settings, pool, table):
    client, rpc = make(settings, pool, rpc=SlowRpc(delay=1.0), wait_seconds=0.2)
    results = _race(client, [{"key": "slow"}, {"key": "slow"}])
    codes = sorted(result.status_code for result in results)
    assert codes == [202, 409]
    busy = next(result for result in results if result.status_code == 409)
    assert_json_error(busy, 409, "Idempotency-Key")
    assert busy.headers["Retry-After"] == "1"
    assert len(rpc.called("jobs", "create")) == 1


def test_abandoned_reservation_is_taken_over(settings, pool, table):
    """A reservation without job ids (its gateway died mid-request) blocks the key only until it is stale."""
    client, rpc = make(settings, pool, wait_seconds=0.2, stale_seconds=60)
    owner = hashlib.sha256(GOOD_KEY.encode()).hexdigest()
    table.execute("INSERT INTO gateway.idempotency (api_key_hash, idempotency_key, fingerprint, reservation)"
                  " VALUES (%s, 'abandoned', 'x', gen_random_uuid())", (owner,))
    assert_json_error(post(client, "abandoned"), 422, "Idempotency-Key")   # another fingerprint, still fresh
    table.execute("UPDATE gateway.idempotency SET created_at = now() - interval '61 seconds'")
    ids = job_ids(post(client, "abandoned"))
    assert job_ids(post(client, "abandoned")) == ids
    assert len(rpc.called("jobs", "create")) == 1
