-- Issue 16: quorum queues (shared/broker.py).
-- The jobs a replica runs, as it names them when it asks for its line: a redelivered copy of one of them
-- waits for that run instead of running twice (JobRepository.claim).
ALTER TABLE replicas ADD COLUMN running text[] NOT NULL DEFAULT '{}';
-- Messages the broker dead-lettered (a queue's delivery limit reached: their consumers died each time),
-- as the jobs service received them from the gaze.dead-letter queue. A work order's job is failed too.
CREATE TABLE dead_letters (
    id bigserial PRIMARY KEY,
    queue text NOT NULL,
    reason text NOT NULL,
    job_id uuid,
    body jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
