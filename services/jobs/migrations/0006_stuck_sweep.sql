-- The stuck-job sweep (JobsService.sweep_stuck, JobRepository.sweep_stuck).
-- last_seen_at: the job's last sign of life from the replica holding it, bumped by the claim, by
-- job_started and by every job_progress event. A reserved or processing job whose last_seen_at is older
-- than GAZE_STUCK_JOB_SECONDS is put back on the work queue, or failed after GAZE_MAX_ATTEMPTS runs.
-- requeued: the sweep took the job from its replica (replica cleared, status unchanged, since states
-- never move backwards) and published its work order again; the next claim of that order is accepted
-- although it is a first delivery of the message, and clears the mark.
ALTER TABLE jobs ADD COLUMN last_seen_at timestamptz;
ALTER TABLE jobs ADD COLUMN requeued boolean NOT NULL DEFAULT false;
UPDATE jobs SET last_seen_at = coalesce(started_at, created_at)
 WHERE status IN ('pending', 'processing') AND attempts > 0;
CREATE INDEX jobs_held_last_seen ON jobs (last_seen_at) WHERE status IN ('pending', 'processing') AND attempts > 0;
