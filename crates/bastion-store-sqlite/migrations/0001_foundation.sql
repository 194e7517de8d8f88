-- Foundation: key ring, master-key canary, audit chain and its checkpoints.
-- Times are Unix milliseconds (INTEGER) in every table, on both backends.

CREATE TABLE key_canary (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    canary      BLOB    NOT NULL,
    created_ms  INTEGER NOT NULL
);

CREATE TABLE key_ring (
    purpose     TEXT    NOT NULL,
    version     INTEGER NOT NULL CHECK (version > 0),
    key_id      TEXT    NOT NULL UNIQUE,
    algorithm   TEXT    NOT NULL,
    wrapped     BLOB    NOT NULL,
    public_key  BLOB,
    created_ms  INTEGER NOT NULL,
    retired     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (purpose, version)
);

CREATE TABLE audit_events (
    seq         INTEGER PRIMARY KEY CHECK (seq > 0),
    ts_ms       INTEGER NOT NULL,
    actor       TEXT,
    org_id      TEXT,
    category    TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    outcome     TEXT    NOT NULL,
    details     TEXT    NOT NULL,
    prev_hash   BLOB    NOT NULL CHECK (length(prev_hash) = 32),
    hash        BLOB    NOT NULL CHECK (length(hash) = 32)
);
CREATE INDEX audit_events_org ON audit_events (org_id, seq);

-- Append-only: the store never updates or deletes an event; these refuse anyone who tries.
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;

CREATE TABLE audit_checkpoints (
    size        INTEGER PRIMARY KEY CHECK (size > 0),
    head_hash   BLOB    NOT NULL CHECK (length(head_hash) = 32),
    ts_ms       INTEGER NOT NULL,
    key_id      TEXT    NOT NULL,
    signature   BLOB    NOT NULL
);
