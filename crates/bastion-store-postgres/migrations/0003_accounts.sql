-- Accounts, per-device sessions (one refresh-token family each) and refresh tokens (hashes only).
CREATE TABLE bastion.users (
    id                 TEXT    PRIMARY KEY,
    email              TEXT    NOT NULL UNIQUE,
    email_verified_ms  BIGINT,
    password_hash      TEXT,
    created_ms         BIGINT  NOT NULL,
    updated_ms         BIGINT  NOT NULL
);

CREATE TABLE bastion.sessions (
    id                   TEXT    PRIMARY KEY,
    user_id              TEXT    NOT NULL REFERENCES bastion.users (id) ON DELETE CASCADE,
    device_name          TEXT    NOT NULL,
    platform             TEXT    NOT NULL,
    ip                   TEXT    NOT NULL,
    user_agent           TEXT    NOT NULL,
    created_ms           BIGINT  NOT NULL,
    last_seen_ms         BIGINT  NOT NULL,
    idle_expires_ms      BIGINT  NOT NULL,
    absolute_expires_ms  BIGINT  NOT NULL,
    revoked_ms           BIGINT,
    revoked_reason       TEXT
);
CREATE INDEX sessions_user ON bastion.sessions (user_id);

CREATE TABLE bastion.refresh_tokens (
    token_hash  BYTEA   PRIMARY KEY CHECK (length(token_hash) = 32),
    session_id  TEXT    NOT NULL REFERENCES bastion.sessions (id) ON DELETE CASCADE,
    generation  BIGINT  NOT NULL,
    issued_ms   BIGINT  NOT NULL,
    used_ms     BIGINT
);
CREATE INDEX refresh_tokens_session ON bastion.refresh_tokens (session_id);

ALTER TABLE bastion.users          ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
ALTER TABLE bastion.sessions       ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
ALTER TABLE bastion.refresh_tokens ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;

-- Sign-up, login and refresh happen before a user is known: system paths.
GRANT SELECT, INSERT, UPDATE, DELETE ON bastion.users, bastion.sessions, bastion.refresh_tokens TO bastion_system;
CREATE POLICY system_all ON bastion.users TO bastion_system USING (true) WITH CHECK (true);
CREATE POLICY system_all ON bastion.sessions TO bastion_system USING (true) WITH CHECK (true);
CREATE POLICY system_all ON bastion.refresh_tokens TO bastion_system USING (true) WITH CHECK (true);

-- A signed-in user reads and updates only their own account and sessions.
GRANT SELECT, UPDATE ON bastion.users, bastion.sessions TO bastion_app;
CREATE POLICY own_account ON bastion.users TO bastion_app
    USING (id = bastion.current_user_id()) WITH CHECK (id = bastion.current_user_id());
CREATE POLICY own_sessions ON bastion.sessions TO bastion_app
    USING (user_id = bastion.current_user_id()) WITH CHECK (user_id = bastion.current_user_id());
