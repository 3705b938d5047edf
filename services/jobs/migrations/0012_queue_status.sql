-- The web UI's queue page filtered by status (JobRepository.recent with a status): the newest jobs of one
-- status read in order from an index, instead of walking every newer job of other statuses to find them.
CREATE INDEX jobs_status_recent ON jobs (status, created_at DESC);
