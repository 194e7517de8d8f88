-- Platform administrators, magic links (hashes only) and the transactional email outbox.
ALTER TABLE users ADD COLUMN super_admin INTEGER NOT NULL DEFAULT 0 CHECK (super_admin IN (0, 1));

CREATE TABLE magic_links (
    -- Orders links of one subject: only the newest may be consumed.
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    token_hash   BLOB    NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    purpose      TEXT    NOT NULL,
    subject      TEXT    NOT NULL,
    email        TEXT    NOT NULL,
    created_ms   INTEGER NOT NULL,
    expires_ms   INTEGER NOT NULL,
    consumed_ms  INTEGER
);
CREATE INDEX magic_links_subject ON magic_links (purpose, subject);
CREATE INDEX magic_links_expiry ON magic_links (expires_ms);

CREATE TABLE email_outbox (
    id               TEXT    PRIMARY KEY,
    recipient        TEXT    NOT NULL,
    template         TEXT    NOT NULL,
    -- The rendered message, sealed under the mail key; emptied once delivered or abandoned.
    sealed           BLOB    NOT NULL,
    created_ms       INTEGER NOT NULL,
    next_attempt_ms  INTEGER NOT NULL,
    lease_until_ms   INTEGER NOT NULL DEFAULT 0,
    attempts         INTEGER NOT NULL DEFAULT 0,
    sent_ms          INTEGER,
    failed_ms        INTEGER,
    last_error       TEXT
);
CREATE INDEX email_outbox_due ON email_outbox (next_attempt_ms) WHERE sent_ms IS NULL AND failed_ms IS NULL;
CREATE INDEX email_outbox_done ON email_outbox (sent_ms, failed_ms);
