-- The web UI's gallery and fallback covers read a preset's finished images.
CREATE INDEX jobs_done_by_preset ON jobs (preset_slug, finished_at DESC) WHERE status = 'done';
