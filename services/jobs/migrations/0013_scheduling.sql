-- Checkpoint-aware scheduling (issue 15, services/jobs/scheduling.py).
-- What each replica says of its model (GeneratorStatus) and what the scheduler last told it (assign_line).
ALTER TABLE replicas ADD COLUMN loaded_checkpoint text;
ALTER TABLE replicas ADD COLUMN resident_checkpoints text[];
ALTER TABLE replicas ADD COLUMN serving text;
ALTER TABLE replicas ADD COLUMN loads integer NOT NULL DEFAULT 0;
ALTER TABLE replicas ADD COLUMN load_seconds_total double precision NOT NULL DEFAULT 0;
ALTER TABLE replicas ADD COLUMN mean_load_seconds double precision;
ALTER TABLE replicas ADD COLUMN mean_job_seconds double precision;
ALTER TABLE replicas ADD COLUMN can_load text[];
ALTER TABLE replicas ADD COLUMN in_flight integer NOT NULL DEFAULT 0;
ALTER TABLE replicas ADD COLUMN asked_at timestamptz;
-- The lines: waiting jobs (pending, not reserved by a replica) per checkpoint, oldest first, read by every
-- scheduling decision and /metrics; only waiting jobs are in the index, so its size is the backlog's.
CREATE INDEX jobs_waiting_by_checkpoint ON jobs ((spec->>'checkpoint'), created_at)
    WHERE status = 'pending' AND (attempts = 0 OR requeued);
