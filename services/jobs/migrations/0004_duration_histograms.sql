-- Job durations as Prometheus histograms (written by JobRepository._finish, read by
-- JobRepository.durations, in store.py).
-- One row per (metric, outcome, bucket upper bound): the number of finished jobs whose duration was at
-- most `le` seconds, i.e. cumulative buckets exactly as Prometheus exposes them. Only ever incremented.
CREATE TABLE duration_buckets (
    metric   text   NOT NULL CHECK (metric IN ('queue_wait', 'generation')),
    outcome  text   NOT NULL CHECK (outcome IN ('done', 'failed')),
    le       float8 NOT NULL,
    count    bigint NOT NULL,
    PRIMARY KEY (metric, outcome, le)
);
-- The histogram's _count (the +Inf bucket) and _sum.
CREATE TABLE duration_totals (
    metric   text   NOT NULL CHECK (metric IN ('queue_wait', 'generation')),
    outcome  text   NOT NULL CHECK (outcome IN ('done', 'failed')),
    count    bigint NOT NULL,
    sum      float8 NOT NULL,
    PRIMARY KEY (metric, outcome)
);
