-- A job may name a webhook (POST /api/v1/generate's `webhook` and `webhook_events_filter`): the jobs
-- service announces its transitions (job_status_changed) to the webhooks service. `announced_status` is
-- the last status announced: a transition committed but not announced (the process died in between) is
-- announced again by the announcement sweep.
ALTER TABLE jobs ADD COLUMN webhook text;
ALTER TABLE jobs ADD COLUMN webhook_events text[];
ALTER TABLE jobs ADD COLUMN announced_status text;
CREATE INDEX jobs_unannounced ON jobs (id)
    WHERE webhook IS NOT NULL AND status <> 'pending' AND announced_status IS DISTINCT FROM status;
