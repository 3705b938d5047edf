-- One row per jobs.create request id (sent by the gateway): a create request delivered twice (its RPC
-- message redelivered after a broker restart, or a client's retry with the same Idempotency-Key after
-- a 503) answers with the jobs the first delivery created instead of creating them again.
-- Rows older than 24 hours no longer count (the same retention as the gateway's Idempotency-Key).
CREATE TABLE create_requests (
    request_id uuid        PRIMARY KEY,
    job_ids    uuid[]      NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX create_requests_created_at ON create_requests (created_at);
