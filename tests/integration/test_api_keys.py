"""ApiKeyStore against the session's real PostgreSQL (and Redis, for the key epoch): minting, rotation,
hashing, rejection."""
from __future__ import annotations

import hashlib

import pytest

from services.gateway.stores.api_keys import KEY_PREFIX, LOOKUP_CHARS, ApiKeyStore


@pytest.fixture
def store(pool, db):
    db.execute("TRUNCATE gateway.api_keys")
    return ApiKeyStore(pool)


def active_rows(db):
    return db.execute("SELECT * FROM gateway.api_keys WHERE revoked_at IS NULL").fetchall()


def test_ensure_mints_once_then_returns_none(store, db):
    key = store.ensure()
    assert isinstance(key, str) and key.startswith(KEY_PREFIX)
    assert len(key) >= len(KEY_PREFIX) + 40  # 32 random bytes, url-safe base64
    assert store.verify(key)
    assert store.ensure() is None
    assert store.ensure() is None
    assert len(db.execute("SELECT * FROM gateway.api_keys").fetchall()) == 1
    assert store.verify(key)


def test_ensure_does_not_replace_a_regenerated_key(store, db):
    key = store.regenerate()
    assert store.ensure() is None
    assert store.verify(key)
    assert len(active_rows(db)) == 1


def test_ensure_mints_again_when_every_key_is_revoked(store, db):
    old = store.ensure()
    db.execute("UPDATE gateway.api_keys SET revoked_at = now()")
    assert not store.verify(old)
    new = store.ensure()
    assert new and new != old and store.verify(new)


def test_regenerate_replaces_the_old_key_immediately(store, db):
    old = store.ensure()
    new = store.regenerate()
    assert new != old and new.startswith(KEY_PREFIX)
    assert not store.verify(old)
    assert store.verify(new)
    assert len(active_rows(db)) == 1
    newer = store.regenerate()
    assert not store.verify(new) and not store.verify(old)
    assert store.verify(newer)
    rows = db.execute("SELECT * FROM gateway.api_keys ORDER BY id").fetchall()
    assert len(rows) == 3
    assert [row["revoked_at"] is None for row in rows] == [False, False, True]


def test_regenerate_only_revokes_keys_of_the_same_name(store):
    default = store.regenerate()
    other = store.regenerate("ci")
    assert store.verify(default) and store.verify(other)
    newer_ci = store.regenerate("ci")
    assert store.verify(default)
    assert not store.verify(other)
    assert store.verify(newer_ci)


def test_keys_are_random(store):
    keys = {store.regenerate(f"name-{i}") for i in range(5)}
    assert len(keys) == 5


def test_only_the_hash_is_stored(store, db):
    key = store.regenerate()
    rows = db.execute("SELECT * FROM gateway.api_keys").fetchall()
    assert len(rows) == 1
    row = rows[0]
    assert row["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert row["prefix"] == key[:LOOKUP_CHARS]
    assert len(row["prefix"]) < len(key) // 3  # the prefix is no substitute for the key
    dump = db.execute("SELECT string_agg(t::text, '|') AS dump FROM gateway.api_keys t").fetchone()["dump"]
    assert key not in dump
    assert key[LOOKUP_CHARS:] not in dump  # not even the secret part alone


@pytest.mark.parametrize("bad", [
    "", None, "x", "gz_", "gz_short", "GZ_" + "a" * 43, "sk_" + "a" * 43, " gz_" + "a" * 43, "gz_" + "a" * 300,
])
def test_verify_rejects_junk(store, bad):
    store.ensure()
    assert store.verify(bad) is None


def test_verify_rejects_near_misses_of_the_real_key(store):
    key = store.ensure()
    flipped = key[:-1] + ("A" if key[-1] != "A" else "B")
    for candidate in (key[:-1], key + "x", flipped, key.upper() if key.upper() != key else key.lower(),
                      key[:LOOKUP_CHARS], key + " ", " " + key, key + "\n"):
        assert store.verify(candidate) is None, candidate
    assert store.verify(key) == "default"


def test_verify_rejects_over_long_input_with_the_real_key_inside(store):
    key = store.ensure()
    assert store.verify(key + "a" * 300) is None


def test_verify_refuses_over_long_keys_even_when_the_hash_matches(store, db):
    # plant a row for a 250-character "key": only the length cap can turn it away
    long_key = KEY_PREFIX + "a" * 247
    db.execute("INSERT INTO gateway.api_keys (prefix, key_hash) VALUES (%s, %s)",
               (long_key[:LOOKUP_CHARS], hashlib.sha256(long_key.encode()).hexdigest()))
    assert store.verify(long_key) is None
    # the same plant with a normal length is accepted, so the cap is what refused it above
    ok_key = KEY_PREFIX + "b" * 43
    db.execute("INSERT INTO gateway.api_keys (prefix, key_hash) VALUES (%s, %s)",
               (ok_key[:LOOKUP_CHARS], hashlib.sha256(ok_key.encode()).hexdigest()))
    assert store.verify(ok_key) == "default"


def test_verify_with_no_keys_at_all(store):
    assert store.verify(KEY_PREFIX + "a" * 43) is None


# --- the per-process memory of verified keys, tied to the key epoch in Redis ------------------------------

REDIS_URL = "redis://127.0.0.1:6379/0"


class CountingPool:
    """The real pool, counting how often verify had to ask the database."""

    def __init__(self, pool):
        self.pool, self.connections = pool, 0

    def connection(self):
        self.connections += 1
        return self.pool.connection()


@pytest.fixture
def epoch_prefix(settings):
    import uuid

    import redis

    prefix = f"{settings.redis_prefix}-keys-{uuid.uuid4().hex[:8]}"
    yield prefix
    redis.Redis.from_url(REDIS_URL).delete(f"{prefix}:api_keys:epoch")


@pytest.fixture
def two_gateways(pool, db, epoch_prefix):
    """Two ApiKeyStores sharing the database and the epoch, as two gateway processes (or a gateway and
    the CLI) do."""
    db.execute("TRUNCATE gateway.api_keys")
    return (ApiKeyStore(CountingPool(pool), REDIS_URL, epoch_prefix),
            ApiKeyStore(CountingPool(pool), REDIS_URL, epoch_prefix))


def test_a_verified_key_is_remembered_until_the_epoch_moves(two_gateways):
    first, other = two_gateways
    key = other.regenerate()
    assert first.verify(key)
    before = first.pool.connections
    for _ in range(20):
        assert first.verify(key)
    assert first.pool.connections == before, "verified from memory, no database round trip"


def test_a_regenerated_key_is_refused_by_the_next_request_in_every_process(two_gateways):
    first, other = two_gateways
    old = other.regenerate()
    assert first.verify(old) and first.verify(old)
    new = other.regenerate()          # another process (the UI of another worker, or the CLI)
    assert not first.verify(old), "refused by the very next request after the regeneration returned"
    assert first.verify(new)


def test_a_revoked_key_is_refused_at_once(two_gateways):
    first, other = two_gateways
    key = other.create("ci")
    assert first.verify(key)
    key_id = next(k["id"] for k in other.list() if k["name"] == "ci")
    other.revoke(key_id)
    assert not first.verify(key)


def test_invalid_keys_are_never_remembered(two_gateways):
    first, _ = two_gateways
    before = first.pool.connections
    assert not first.verify(KEY_PREFIX + "x" * 43)
    assert not first.verify(KEY_PREFIX + "x" * 43)
    assert first.pool.connections == before + 2


def test_a_lost_epoch_forgets_everything(two_gateways, epoch_prefix):
    import redis

    first, other = two_gateways
    key = other.regenerate()
    assert first.verify(key)
    redis.Redis.from_url(REDIS_URL).delete(f"{epoch_prefix}:api_keys:epoch")   # Redis restarted
    before = first.pool.connections
    assert first.verify(key)
    assert first.pool.connections == before + 1, "a new epoch: verified against the database again"


def test_without_reachable_redis_every_request_asks_the_database(pool, db):
    db.execute("TRUNCATE gateway.api_keys")
    store = ApiKeyStore(CountingPool(pool), "redis://127.0.0.1:1/0", "nowhere")
    key = store.regenerate()
    before = store.pool.connections
    assert store.verify(key) and store.verify(key)
    assert store.pool.connections == before + 2
    store.regenerate()
    assert not store.verify(key)
