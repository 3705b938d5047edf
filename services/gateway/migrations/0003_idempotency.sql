-- Idempotency-Key on POST /api/v1/generate/<slug> (README, "gateway"): one row per (API key, key).
-- api_key_hash is the SHA-256 of the API key (never the key itself), so keys are scoped per API key;
-- fingerprint is the SHA-256 of the slug and the canonical JSON body. job_ids is NULL while the first
-- request is still creating its jobs (a reservation, owned by the request holding `reservation`).
-- Rows older than 24 hours are ignored, replaced by a new request with the same key, and purged.
CREATE TABLE idempotency (
    api_key_hash     text        NOT NULL,
    idempotency_key  text        NOT NULL,
    fingerprint      text        NOT NULL,
    reservation      uuid        NOT NULL,
    job_ids          text[],
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (api_key_hash, idempotency_key)
);
CREATE INDEX idempotency_created_at ON idempotency (created_at);
