-- A client may cancel a job (a new terminal status, shared/job_states.py), and each job remembers which API
-- key's name created it (NULL: the web UI), so a key lists its own jobs (GET /api/v1/jobs), newest first,
-- paged by (created_at, id) without scanning other keys' jobs.
ALTER TABLE jobs DROP CONSTRAINT jobs_status_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_status_check
    CHECK (status IN ('pending', 'processing', 'done', 'failed', 'cancelled'));
ALTER TABLE jobs ADD COLUMN owner text;
CREATE INDEX jobs_owner_recent ON jobs (owner, created_at DESC, id DESC);
