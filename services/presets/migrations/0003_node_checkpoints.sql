-- Checkpoints each generator replica reports it can load (from its generator_status events). A
-- checkpoint override is valid when a replica seen recently has it; with no report at all, the
-- configured list (GAZE_CHECKPOINTS) applies.
CREATE TABLE node_checkpoints (
    replica      text PRIMARY KEY,
    checkpoints  jsonb       NOT NULL,
    seen_at      timestamptz NOT NULL
);
