-- The web UI's single admin account (argon2 hash) and its login sessions. A session cookie holds a
-- random token; only its SHA-256 is stored, with the CSRF token that forms of that session must carry.
CREATE TABLE admin (
    id             integer PRIMARY KEY CHECK (id = 1),
    password_hash  text        NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE sessions (
    token_hash  text PRIMARY KEY,
    csrf_token  text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX sessions_expiry ON sessions (expires_at);
