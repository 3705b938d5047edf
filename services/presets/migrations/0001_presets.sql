CREATE TABLE presets (
    slug        text PRIMARY KEY,
    name        text        NOT NULL,
    prompt      text        NOT NULL DEFAULT '',
    negative    text        NOT NULL DEFAULT '',
    checkpoint  text        NOT NULL,
    width       integer     NOT NULL,
    height      integer     NOT NULL,
    steps       integer     NOT NULL,
    cfg         real        NOT NULL,
    sampler     text        NOT NULL,
    cover_path  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
