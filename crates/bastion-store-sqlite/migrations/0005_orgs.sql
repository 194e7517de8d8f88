-- Organizations (SPEC R1–R6): orgs, memberships with six levels, invitations, API keys and the
-- first user-private table. SQLite has no row-level security: the store's queries apply the
-- scope (docs/tenancy.md), and the permission decision is bastion-core's alone.
CREATE TABLE orgs (
    id          TEXT    PRIMARY KEY,
    name        TEXT    NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_by  TEXT    NOT NULL,
    created_ms  INTEGER NOT NULL,
    updated_ms  INTEGER NOT NULL
);

CREATE TABLE memberships (
    org_id      TEXT    NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    user_id     TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    email       TEXT    NOT NULL,
    level       INTEGER NOT NULL CHECK (level IN (20, 30, 40, 60, 80, 100)),
    created_ms  INTEGER NOT NULL,
    updated_ms  INTEGER NOT NULL,
    PRIMARY KEY (org_id, user_id)
);
CREATE INDEX memberships_user ON memberships (user_id);

CREATE TABLE invitations (
    id           TEXT    PRIMARY KEY,
    org_id       TEXT    NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    email        TEXT    NOT NULL,
    level        INTEGER NOT NULL CHECK (level IN (20, 30, 40, 60, 80, 100)),
    invited_by   TEXT    NOT NULL,
    created_ms   INTEGER NOT NULL,
    expires_ms   INTEGER NOT NULL,
    accepted_ms  INTEGER,
    accepted_by  TEXT
);
CREATE INDEX invitations_org ON invitations (org_id, created_ms);

CREATE TABLE api_keys (
    id            TEXT    PRIMARY KEY,
    org_id        TEXT    NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    kind          TEXT    NOT NULL CHECK (kind IN ('service', 'publishable')),
    name          TEXT    NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    hint          TEXT    NOT NULL,
    key_hash      BLOB    NOT NULL UNIQUE CHECK (length(key_hash) = 32),
    created_by    TEXT    NOT NULL,
    created_ms    INTEGER NOT NULL,
    last_used_ms  INTEGER,
    revoked_ms    INTEGER
);
CREATE INDEX api_keys_org ON api_keys (org_id, created_ms);

-- The org tag is informational: deleting an org must not destroy its members' private data.
CREATE TABLE activity_events (
    id          TEXT    PRIMARY KEY,
    user_id     TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    org_id      TEXT    REFERENCES orgs (id) ON DELETE SET NULL,
    ts_ms       INTEGER NOT NULL,
    kind        TEXT    NOT NULL,
    data        TEXT    NOT NULL
);
CREATE INDEX activity_events_user ON activity_events (user_id, ts_ms);
