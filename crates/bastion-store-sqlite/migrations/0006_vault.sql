-- The vault (SPEC S1, S3): org projects with their sealed secrets, the encryption budget of
-- each data key, and the id of the sealing key beside every sealed column, so that status and
-- rewrap read key ids without decrypting anything. The store's queries apply the scope
-- (docs/tenancy.md); the permission decision is bastion-core's.

-- The key that sealed each outbox message; NULL once delivered or abandoned (the body is
-- emptied then). Messages queued before this migration cannot tell theirs: '' while pending.
ALTER TABLE email_outbox ADD COLUMN sealed_key TEXT;
UPDATE email_outbox SET sealed_key = ''
    WHERE sent_ms IS NULL AND failed_ms IS NULL AND length(sealed) > 0;
CREATE INDEX email_outbox_sealed_key ON email_outbox (sealed_key, id);

CREATE TABLE secret_projects (
    id          TEXT    PRIMARY KEY,
    org_id      TEXT    NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    name        TEXT    NOT NULL,
    created_by  TEXT    NOT NULL,
    created_ms  INTEGER NOT NULL,
    UNIQUE (org_id, name),
    -- The target of the secrets' (project_id, org_id) key: a secret's org is its project's.
    UNIQUE (id, org_id)
);

CREATE TABLE secrets (
    -- `sec_…`: part of the envelope's context, so it never changes.
    id          TEXT    PRIMARY KEY,
    org_id      TEXT    NOT NULL,
    project_id  TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    -- The id of the key that sealed `value` (`secrets-v<N>`).
    value_key   TEXT    NOT NULL,
    value       BLOB    NOT NULL,
    version     INTEGER NOT NULL CHECK (version > 0),
    created_ms  INTEGER NOT NULL,
    updated_ms  INTEGER NOT NULL,
    updated_by  TEXT    NOT NULL,
    -- With the org: a name taken in another org's project must not answer Conflict.
    UNIQUE (org_id, project_id, name),
    FOREIGN KEY (project_id, org_id) REFERENCES secret_projects (id, org_id) ON DELETE CASCADE
);
-- Status counts and retirement checks by key; rewrap pages by id.
CREATE INDEX secrets_value_key ON secrets (value_key, id);

-- Encryptions reserved under each data key (AES-GCM's random-nonce budget).
CREATE TABLE key_encryptions (
    key_id    TEXT    PRIMARY KEY,
    reserved  INTEGER NOT NULL CHECK (reserved >= 0)
);
