-- A claim only reserves a job for a replica (attempts + 1, replica); the job turns `processing`, with
-- started_at, when that replica's GPU actually starts it (the job_started event). Replicas reserve their
-- next job while the current one still runs, so the GPU never waits for a claim round trip.
-- started_attempt: the attempt whose start was recorded, so a late or duplicate job_started event of an
-- earlier run cannot move started_at.
ALTER TABLE jobs ADD COLUMN started_attempt int;
