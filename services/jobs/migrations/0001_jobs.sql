CREATE TABLE jobs (
    id              uuid PRIMARY KEY,
    preset_slug     text        NOT NULL,
    label           text        NOT NULL,
    spec            jsonb       NOT NULL,
    seed            bigint      NOT NULL,
    status          text        NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'processing', 'done', 'failed')),
    error           text,
    result          jsonb,
    attempts        integer     NOT NULL DEFAULT 0,
    replica         text,
    progress_value  integer,
    progress_max    integer,
    created_at      timestamptz NOT NULL DEFAULT now(),
    dispatched_at   timestamptz,
    started_at      timestamptz,
    finished_at     timestamptz
);
-- The outbox sweep looks for jobs written but never handed to the work queue.
CREATE INDEX jobs_undispatched ON jobs (created_at) WHERE dispatched_at IS NULL AND status = 'pending';
CREATE INDEX jobs_recent ON jobs (created_at DESC);
