-- What a replica says of its worker process (issue 10): starting, idle, busy, stuck, restarting or
-- stopped (shared/events.py REPLICA_STATES), its pid and how many workers it has replaced.
ALTER TABLE replicas ADD COLUMN state text NOT NULL DEFAULT 'idle';
ALTER TABLE replicas ADD COLUMN worker_pid integer;
ALTER TABLE replicas ADD COLUMN restarts integer NOT NULL DEFAULT 0;
