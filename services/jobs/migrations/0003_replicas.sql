-- Generator replicas as their generator_status events describe them: for health checks.
CREATE TABLE replicas (
    replica  text PRIMARY KEY,
    backend  text        NOT NULL,
    healthy  boolean     NOT NULL,
    detail   text        NOT NULL,
    seen_at  timestamptz NOT NULL
);
