-- The vault (SPEC S1, S3): org projects with their sealed secrets, the encryption budget of
-- each data key, and the id of the sealing key beside every sealed column, so that status and
-- rewrap (`bastion keys rewrap`) read key ids without decrypting anything.
--
-- Request work reaches projects and secrets through the permission map, like 0006:
-- projects.read / projects.write and secrets.read / secrets.write in the row's org. Rewrap,
-- status, retirement and the encryption budget are system paths (`Scope::System("vault")`).

-- The key that sealed each outbox message; NULL once delivered or abandoned (the body is
-- emptied then). Messages queued before this migration cannot tell theirs: '' while pending.
ALTER TABLE bastion.email_outbox ADD COLUMN sealed_key TEXT;
-- FORCE would hide the rows from the migrating owner (no policy names it), so lift it for the
-- backfill; the migration's transaction restores it before anyone else can see the table.
ALTER TABLE bastion.email_outbox NO FORCE ROW LEVEL SECURITY;
UPDATE bastion.email_outbox SET sealed_key = ''
    WHERE sent_ms IS NULL AND failed_ms IS NULL AND octet_length(sealed) > 0;
ALTER TABLE bastion.email_outbox FORCE ROW LEVEL SECURITY;
CREATE INDEX email_outbox_sealed_key ON bastion.email_outbox (sealed_key, id);

CREATE TABLE bastion.secret_projects (
    id          TEXT    PRIMARY KEY,
    org_id      TEXT    NOT NULL REFERENCES bastion.orgs (id) ON DELETE CASCADE,
    name        TEXT    NOT NULL,
    created_by  TEXT    NOT NULL,
    created_ms  BIGINT  NOT NULL,
    UNIQUE (org_id, name),
    -- The target of the secrets' (project_id, org_id) key: a secret's org is its project's.
    UNIQUE (id, org_id)
);

CREATE TABLE bastion.secrets (
    -- `sec_…`: part of the envelope's context, so it never changes.
    id          TEXT    PRIMARY KEY,
    org_id      TEXT    NOT NULL,
    project_id  TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    -- The id of the key that sealed `value` (`secrets-v<N>`).
    value_key   TEXT    NOT NULL,
    value       BYTEA   NOT NULL,
    version     INTEGER NOT NULL CHECK (version > 0),
    created_ms  BIGINT  NOT NULL,
    updated_ms  BIGINT  NOT NULL,
    updated_by  TEXT    NOT NULL,
    -- With the org: a name taken in another org's project must not answer Conflict.
    UNIQUE (org_id, project_id, name),
    FOREIGN KEY (project_id, org_id) REFERENCES bastion.secret_projects (id, org_id) ON DELETE CASCADE
);
-- Status counts and retirement checks by key; rewrap pages by id.
CREATE INDEX secrets_value_key ON bastion.secrets (value_key, id);

-- Encryptions reserved under each data key (AES-GCM's random-nonce budget), across nodes.
CREATE TABLE bastion.key_encryptions (
    key_id    TEXT    PRIMARY KEY,
    reserved  BIGINT  NOT NULL CHECK (reserved >= 0)
);

ALTER TABLE bastion.secret_projects ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
ALTER TABLE bastion.secrets         ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
ALTER TABLE bastion.key_encryptions ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;

-- System paths: rewrap, status and retirement (the table-level UPDATE also lets retirement
-- LOCK the sealed tables), the budget, and re-wrapping the key ring under a new master key.
GRANT SELECT, INSERT, UPDATE, DELETE ON bastion.secret_projects, bastion.secrets TO bastion_system;
GRANT SELECT, INSERT, UPDATE ON bastion.key_encryptions TO bastion_system;
GRANT UPDATE ON bastion.key_canary TO bastion_system;
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['secret_projects', 'secrets', 'key_encryptions'] LOOP
        EXECUTE format('CREATE POLICY system_all ON bastion.%I TO bastion_system '
                       'USING ((SELECT bastion.is_system())) WITH CHECK ((SELECT bastion.is_system()))', t);
    END LOOP;
END
$$;

-- Request work: projects are created and deleted whole (a deletion takes its secrets along);
-- a secret's update changes its value and version only, never its name, project or org.
GRANT SELECT, INSERT, DELETE ON bastion.secret_projects, bastion.secrets TO bastion_app;
GRANT UPDATE (value_key, value, version, updated_ms, updated_by) ON bastion.secrets TO bastion_app;

CREATE POLICY project_read ON bastion.secret_projects FOR SELECT TO bastion_app
    USING (ARRAY['o:' || org_id] && (SELECT bastion.scope_tokens('projects.read')));
CREATE POLICY project_create ON bastion.secret_projects FOR INSERT TO bastion_app
    WITH CHECK (ARRAY['o:' || org_id] && (SELECT bastion.scope_tokens('projects.write')));
CREATE POLICY project_delete ON bastion.secret_projects FOR DELETE TO bastion_app
    USING (ARRAY['o:' || org_id] && (SELECT bastion.scope_tokens('projects.write')));

CREATE POLICY secret_read ON bastion.secrets FOR SELECT TO bastion_app
    USING (ARRAY['o:' || org_id] && (SELECT bastion.scope_tokens('secrets.read')));
CREATE POLICY secret_create ON bastion.secrets FOR INSERT TO bastion_app
    WITH CHECK (ARRAY['o:' || org_id] && (SELECT bastion.scope_tokens('secrets.write')));
CREATE POLICY secret_update ON bastion.secrets FOR UPDATE TO bastion_app
    USING (ARRAY['o:' || org_id] && (SELECT bastion.scope_tokens('secrets.write')))
    WITH CHECK (ARRAY['o:' || org_id] && (SELECT bastion.scope_tokens('secrets.write')));
CREATE POLICY secret_delete ON bastion.secrets FOR DELETE TO bastion_app
    USING (ARRAY['o:' || org_id] && (SELECT bastion.scope_tokens('secrets.write')));
