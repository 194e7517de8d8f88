-- Foundation: roles, scope helpers, key ring, master-key canary, audit chain and checkpoints.
-- Everything lives in schema "bastion". Times are Unix milliseconds (BIGINT) on both backends.
--
-- Two NOLOGIN roles carry every query of the running server (the store picks one per
-- transaction with SET LOCAL ROLE, see src/lib.rs):
--   bastion_app     request work, scoped to a user and org through the helpers below;
--   bastion_system  named system paths (key ring, audit chain, cleanup).
-- Both are subject to row-level security, enabled and FORCED on every table.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bastion_app') THEN
        CREATE ROLE bastion_app NOLOGIN NOINHERIT NOBYPASSRLS;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bastion_system') THEN
        CREATE ROLE bastion_system NOLOGIN NOINHERIT NOBYPASSRLS;
    END IF;
    -- The migrating login must be able to SET ROLE to both (a superuser already can).
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        EXECUTE format('GRANT bastion_app, bastion_system TO %I', current_user);
    END IF;
END
$$;

GRANT USAGE ON SCHEMA bastion TO bastion_app, bastion_system;

-- Scope helpers: STABLE SECURITY DEFINER, fixed search_path, read the transaction's scope.
CREATE FUNCTION bastion.current_user_id() RETURNS text
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog
    AS $$ SELECT nullif(current_setting('bastion.user_id', true), '') $$;

CREATE FUNCTION bastion.current_org_id() RETURNS text
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog
    AS $$ SELECT nullif(current_setting('bastion.org_id', true), '') $$;

REVOKE ALL ON FUNCTION bastion.current_user_id(), bastion.current_org_id() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bastion.current_user_id(), bastion.current_org_id() TO bastion_app, bastion_system;

CREATE TABLE bastion.key_canary (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    canary      BYTEA   NOT NULL,
    created_ms  BIGINT  NOT NULL
);

CREATE TABLE bastion.key_ring (
    purpose     TEXT    NOT NULL,
    version     INTEGER NOT NULL CHECK (version > 0),
    key_id      TEXT    NOT NULL UNIQUE,
    algorithm   TEXT    NOT NULL,
    wrapped     BYTEA   NOT NULL,
    public_key  BYTEA,
    created_ms  BIGINT  NOT NULL,
    retired     BOOLEAN NOT NULL DEFAULT false,
    PRIMARY KEY (purpose, version)
);

-- The chain head: one row, locked FOR UPDATE by every append, so nodes append one at a time.
CREATE TABLE bastion.audit_head (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    seq         BIGINT  NOT NULL,
    hash        BYTEA   NOT NULL CHECK (length(hash) = 32)
);
INSERT INTO bastion.audit_head (id, seq, hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'));

CREATE TABLE bastion.audit_events (
    seq         BIGINT  PRIMARY KEY CHECK (seq > 0),
    ts_ms       BIGINT  NOT NULL,
    actor       TEXT,
    org_id      TEXT,
    category    TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    outcome     TEXT    NOT NULL,
    details     TEXT    NOT NULL,
    prev_hash   BYTEA   NOT NULL CHECK (length(prev_hash) = 32),
    hash        BYTEA   NOT NULL CHECK (length(hash) = 32)
);
CREATE INDEX audit_events_org ON bastion.audit_events (org_id, seq);

CREATE TABLE bastion.audit_checkpoints (
    size        BIGINT  PRIMARY KEY CHECK (size > 0),
    head_hash   BYTEA   NOT NULL CHECK (length(head_hash) = 32),
    ts_ms       BIGINT  NOT NULL,
    key_id      TEXT    NOT NULL,
    signature   BYTEA   NOT NULL
);

-- Append-only audit trail: no grant allows UPDATE or DELETE, and this trigger refuses them
-- (and TRUNCATE) even for the owner.
CREATE FUNCTION bastion.refuse_audit_change() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog
    AS $$ BEGIN RAISE EXCEPTION 'audit_events is append-only' USING ERRCODE = 'insufficient_privilege'; END $$;
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON bastion.audit_events
    FOR EACH ROW EXECUTE FUNCTION bastion.refuse_audit_change();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON bastion.audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION bastion.refuse_audit_change();

-- Row-level security, enabled and forced on every table.
ALTER TABLE bastion.key_canary        ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
ALTER TABLE bastion.key_ring          ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
ALTER TABLE bastion.audit_head        ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
ALTER TABLE bastion.audit_events      ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
ALTER TABLE bastion.audit_checkpoints ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;

-- Key ring and canary: the system path only.
GRANT SELECT, INSERT ON bastion.key_canary TO bastion_system;
GRANT SELECT, INSERT, UPDATE ON bastion.key_ring TO bastion_system;
CREATE POLICY system_only ON bastion.key_canary TO bastion_system USING (true) WITH CHECK (true);
CREATE POLICY system_only ON bastion.key_ring TO bastion_system USING (true) WITH CHECK (true);

-- Audit chain: the system path appends and reads; request work reads its own org's events.
GRANT SELECT, UPDATE ON bastion.audit_head TO bastion_system;
GRANT SELECT, INSERT ON bastion.audit_events TO bastion_system;
GRANT SELECT, INSERT ON bastion.audit_checkpoints TO bastion_system;
GRANT SELECT ON bastion.audit_events TO bastion_app;
CREATE POLICY system_only ON bastion.audit_head TO bastion_system USING (true) WITH CHECK (true);
CREATE POLICY system_all ON bastion.audit_events TO bastion_system USING (true) WITH CHECK (true);
CREATE POLICY org_read ON bastion.audit_events FOR SELECT TO bastion_app
    USING (org_id IS NOT NULL AND org_id = bastion.current_org_id());
CREATE POLICY system_only ON bastion.audit_checkpoints TO bastion_system USING (true) WITH CHECK (true);
