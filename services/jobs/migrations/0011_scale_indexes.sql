-- Costs that do not grow with the table (issue 13): what a page view, a /metrics scrape or a sweep asks
-- of jobs.jobs is answered from an index or from a handful of counter rows, however many jobs there are.

-- Jobs by status (/metrics): counters kept by the triggers below on every change of jobs.jobs, instead of
-- a GROUP BY over the whole table on every scrape. Each status has up to 16 rows (`shard`): a statement
-- adds its changes to one shard drawn at random, so concurrent transactions rarely wait for each other's
-- counter row; the count of a status is the sum of its shards (JobRepository.counts_by_status).
CREATE TABLE status_counts (
    status text     NOT NULL,
    shard  smallint NOT NULL,
    n      bigint   NOT NULL,
    PRIMARY KEY (status, shard)
);

-- Statement-level, with the statement's old and new rows (transition tables): one upsert per status a
-- statement changed, however many rows it touched (a batch insert, the stuck-job sweep), applied in a
-- fixed order (ORDER BY status), so two transactions never take counter rows in opposite orders
-- (no deadlock); an UPDATE that changes no status (progress, dispatched, announced) writes nothing.
-- Names are schema-qualified: a trigger runs under whatever search_path the writer has.
CREATE FUNCTION count_job_statuses() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO jobs.status_counts AS c (status, shard, n)
        SELECT status, floor(random() * 16)::smallint, d FROM (
            SELECT status, count(*) AS d FROM new_rows GROUP BY status) AS delta
        ORDER BY status
        ON CONFLICT (status, shard) DO UPDATE SET n = c.n + excluded.n;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO jobs.status_counts AS c (status, shard, n)
        SELECT status, floor(random() * 16)::smallint, d FROM (
            SELECT status, sum(d) AS d FROM (
                SELECT status, -1 AS d FROM old_rows UNION ALL SELECT status, 1 FROM new_rows) AS changes
            GROUP BY status HAVING sum(d) <> 0) AS delta
        ORDER BY status
        ON CONFLICT (status, shard) DO UPDATE SET n = c.n + excluded.n;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO jobs.status_counts AS c (status, shard, n)
        SELECT status, floor(random() * 16)::smallint, -d FROM (
            SELECT status, count(*) AS d FROM old_rows GROUP BY status) AS delta
        ORDER BY status
        ON CONFLICT (status, shard) DO UPDATE SET n = c.n + excluded.n;
    ELSE  -- TRUNCATE
        DELETE FROM jobs.status_counts;
    END IF;
    RETURN NULL;
END
$$;

-- Nothing may change jobs between the count below and the triggers taking over.
LOCK TABLE jobs IN SHARE ROW EXCLUSIVE MODE;

CREATE TRIGGER jobs_count_inserts AFTER INSERT ON jobs REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION count_job_statuses();
CREATE TRIGGER jobs_count_updates AFTER UPDATE ON jobs REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION count_job_statuses();
CREATE TRIGGER jobs_count_deletes AFTER DELETE ON jobs REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION count_job_statuses();
CREATE TRIGGER jobs_count_truncate AFTER TRUNCATE ON jobs
    FOR EACH STATEMENT EXECUTE FUNCTION count_job_statuses();

INSERT INTO status_counts (status, shard, n) SELECT status, 0, count(*) FROM jobs GROUP BY status;

-- The library's fallback covers (JobRepository.random_image_per_preset): a random finished image of a
-- preset is the first one whose id (a random UUID) follows a random UUID, wrapping around to the
-- smallest: two index probes per preset at most, instead of sorting every finished image at random.
CREATE INDEX jobs_done_by_preset_id ON jobs (preset_slug, id) WHERE status = 'done';

-- GET /api/v1/jobs with ?status= or ?preset=: the key's jobs of that status / preset, newest first, read
-- in order from an index instead of filtered out of all of the key's jobs.
CREATE INDEX jobs_owner_status_recent ON jobs (owner, status, created_at DESC, id DESC);
CREATE INDEX jobs_owner_preset_recent ON jobs (owner, preset_slug, created_at DESC, id DESC);
