-- The webhooks service's own schema: each API key name's signing secrets, and every delivery with its attempts.
-- A key name has one current secret (retired_at NULL); a rotation retires it, and a retired secret keeps
-- signing (a second signature) until retired_at + 24 h.
CREATE TABLE secrets (
    id          bigserial   PRIMARY KEY,
    key_name    text        NOT NULL,
    secret      text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    retired_at  timestamptz
);
CREATE UNIQUE INDEX secrets_current ON secrets (key_name) WHERE retired_at IS NULL;
CREATE INDEX secrets_by_key ON secrets (key_name, retired_at DESC);

-- One delivery per job and event, however often the event is announced: its id is the webhook-id every
-- attempt carries, its body the exact bytes every attempt sends. `next_attempt_at` is when it is due (a
-- sender leases it by moving it forward while it tries).
CREATE TABLE deliveries (
    id              text        PRIMARY KEY,
    job_id          uuid        NOT NULL,
    event           text        NOT NULL,
    key_name        text,
    url             text        NOT NULL,
    body            text        NOT NULL,
    status          text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    UNIQUE (job_id, event)
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_recent ON deliveries (key_name, created_at DESC);

CREATE TABLE attempts (
    delivery_id     text        NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    number          integer     NOT NULL,
    at              timestamptz NOT NULL DEFAULT now(),
    status_code     integer,
    error           text,
    duration_ms     integer     NOT NULL,
    PRIMARY KEY (delivery_id, number)
);
