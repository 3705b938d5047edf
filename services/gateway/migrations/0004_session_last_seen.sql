-- Admin sessions end after GAZE_ADMIN_IDLE_SECONDS without use (services/gateway/stores/admin.py):
-- last_seen_at is the last request that used the session, moved forward at most about once a minute.
ALTER TABLE sessions ADD COLUMN last_seen_at timestamptz NOT NULL DEFAULT now();
