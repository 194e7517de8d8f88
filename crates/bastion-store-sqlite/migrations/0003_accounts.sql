-- Accounts, per-device sessions (one refresh-token family each) and refresh tokens (hashes only).
CREATE TABLE users (
    id                 TEXT    PRIMARY KEY,
    email              TEXT    NOT NULL UNIQUE,
    email_verified_ms  INTEGER,
    password_hash      TEXT,
    created_ms         INTEGER NOT NULL,
    updated_ms         INTEGER NOT NULL
);

CREATE TABLE sessions (
    id                   TEXT    PRIMARY KEY,
    user_id              TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    device_name          TEXT    NOT NULL,
    platform             TEXT    NOT NULL,
    ip                   TEXT    NOT NULL,
    user_agent           TEXT    NOT NULL,
    created_ms           INTEGER NOT NULL,
    last_seen_ms         INTEGER NOT NULL,
    idle_expires_ms      INTEGER NOT NULL,
    absolute_expires_ms  INTEGER NOT NULL,
    revoked_ms           INTEGER,
    revoked_reason       TEXT
);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE refresh_tokens (
    token_hash  BLOB    PRIMARY KEY CHECK (length(token_hash) = 32),
    session_id  TEXT    NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    generation  INTEGER NOT NULL,
    issued_ms   INTEGER NOT NULL,
    used_ms     INTEGER
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);
