-- API keys are stored only as SHA-256 hashes; the prefix lets a lookup find the row without
-- comparing the secret in the database, so the final comparison can be constant-time in Python.
CREATE TABLE api_keys (
    id          bigserial PRIMARY KEY,
    name        text        NOT NULL DEFAULT 'default',
    prefix      text        NOT NULL,
    key_hash    text        NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX api_keys_active_prefix ON api_keys (prefix) WHERE revoked_at IS NULL;
