-- Platform administrators, magic links (hashes only) and the transactional email outbox.
ALTER TABLE bastion.users ADD COLUMN super_admin BOOLEAN NOT NULL DEFAULT false;

CREATE TABLE bastion.magic_links (
    -- Orders links of one subject: only the newest may be consumed.
    id           BIGSERIAL PRIMARY KEY,
    token_hash   BYTEA   NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    purpose      TEXT    NOT NULL,
    subject      TEXT    NOT NULL,
    email        TEXT    NOT NULL,
    created_ms   BIGINT  NOT NULL,
    expires_ms   BIGINT  NOT NULL,
    consumed_ms  BIGINT
);
CREATE INDEX magic_links_subject ON bastion.magic_links (purpose, subject);
CREATE INDEX magic_links_expiry ON bastion.magic_links (expires_ms);

CREATE TABLE bastion.email_outbox (
    id               TEXT    PRIMARY KEY,
    recipient        TEXT    NOT NULL,
    template         TEXT    NOT NULL,
    -- The rendered message, sealed under the mail key; emptied once delivered or abandoned.
    sealed           BYTEA   NOT NULL,
    created_ms       BIGINT  NOT NULL,
    next_attempt_ms  BIGINT  NOT NULL,
    lease_until_ms   BIGINT  NOT NULL DEFAULT 0,
    attempts         INTEGER NOT NULL DEFAULT 0,
    sent_ms          BIGINT,
    failed_ms        BIGINT,
    last_error       TEXT
);
CREATE INDEX email_outbox_due ON bastion.email_outbox (next_attempt_ms) WHERE sent_ms IS NULL AND failed_ms IS NULL;
CREATE INDEX email_outbox_done ON bastion.email_outbox (sent_ms, failed_ms);

ALTER TABLE bastion.magic_links  ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
ALTER TABLE bastion.email_outbox ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;

-- Links are consumed before anyone is signed in, and mail is sent by a background job:
-- both are system paths. The app role has no grant and no policy, so it sees nothing.
GRANT SELECT, INSERT, UPDATE, DELETE ON bastion.magic_links, bastion.email_outbox TO bastion_system;
GRANT USAGE ON SEQUENCE bastion.magic_links_id_seq TO bastion_system;
CREATE POLICY system_all ON bastion.magic_links  TO bastion_system USING (true) WITH CHECK (true);
CREATE POLICY system_all ON bastion.email_outbox TO bastion_system USING (true) WITH CHECK (true);
