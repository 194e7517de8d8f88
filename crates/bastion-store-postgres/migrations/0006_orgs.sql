-- Organizations (SPEC R1–R6): orgs, memberships with six levels, invitations, API keys, the
-- level → permission map the helpers consult, and the first user-private table.
--
-- The decision the API makes in bastion-core is made again here: policies call
-- `bastion.current_level()` and `bastion.has_permission()`, which read the signed context
-- (0005) and the caller's membership or API key. Helpers run as the schema owner; tables they
-- read carry an `owner_helpers` policy so that FORCE ROW LEVEL SECURITY does not hide rows
-- from them (no other role satisfies it).

CREATE TABLE bastion.orgs (
    id          TEXT    PRIMARY KEY,
    name        TEXT    NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_by  TEXT    NOT NULL,
    created_ms  BIGINT  NOT NULL,
    updated_ms  BIGINT  NOT NULL
);

CREATE TABLE bastion.memberships (
    org_id      TEXT    NOT NULL REFERENCES bastion.orgs (id) ON DELETE CASCADE,
    user_id     TEXT    NOT NULL REFERENCES bastion.users (id) ON DELETE CASCADE,
    -- Copied from the account when the membership starts: the users table shows each user
    -- only their own row, and member lists need the address.
    email       TEXT    NOT NULL,
    level       INTEGER NOT NULL CHECK (level IN (20, 30, 40, 60, 80, 100)),
    created_ms  BIGINT  NOT NULL,
    updated_ms  BIGINT  NOT NULL,
    PRIMARY KEY (org_id, user_id)
);
CREATE INDEX memberships_user ON bastion.memberships (user_id);

CREATE TABLE bastion.invitations (
    id           TEXT    PRIMARY KEY,
    org_id       TEXT    NOT NULL REFERENCES bastion.orgs (id) ON DELETE CASCADE,
    email        TEXT    NOT NULL,
    level        INTEGER NOT NULL CHECK (level IN (20, 30, 40, 60, 80, 100)),
    invited_by   TEXT    NOT NULL,
    created_ms   BIGINT  NOT NULL,
    expires_ms   BIGINT  NOT NULL,
    accepted_ms  BIGINT,
    accepted_by  TEXT
);
CREATE INDEX invitations_org ON bastion.invitations (org_id, created_ms);

CREATE TABLE bastion.api_keys (
    id            TEXT    PRIMARY KEY,
    org_id        TEXT    NOT NULL REFERENCES bastion.orgs (id) ON DELETE CASCADE,
    kind          TEXT    NOT NULL CHECK (kind IN ('service', 'publishable')),
    name          TEXT    NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    -- The first characters of the key, shown in lists so people can tell keys apart.
    hint          TEXT    NOT NULL,
    key_hash      BYTEA   NOT NULL UNIQUE CHECK (length(key_hash) = 32),
    created_by    TEXT    NOT NULL,
    created_ms    BIGINT  NOT NULL,
    last_used_ms  BIGINT,
    revoked_ms    BIGINT
);
CREATE INDEX api_keys_org ON bastion.api_keys (org_id, created_ms);

-- The effective permission set of each level (cumulative), written from `[permissions]` at
-- start-up. Level 0 is what a publishable key may do.
CREATE TABLE bastion.level_permissions (
    level       INTEGER NOT NULL CHECK (level IN (0, 20, 30, 40, 60, 80, 100)),
    permission  TEXT    NOT NULL,
    PRIMARY KEY (level, permission)
);

-- User-private data (R5): only the owning user reads or writes it, whatever their level.
-- The org tag is informational: deleting an org must not destroy its members' private data.
CREATE TABLE bastion.activity_events (
    id          TEXT    PRIMARY KEY,
    user_id     TEXT    NOT NULL REFERENCES bastion.users (id) ON DELETE CASCADE,
    org_id      TEXT    REFERENCES bastion.orgs (id) ON DELETE SET NULL,
    ts_ms       BIGINT  NOT NULL,
    kind        TEXT    NOT NULL,
    data        TEXT    NOT NULL
);
CREATE INDEX activity_events_user ON bastion.activity_events (user_id, ts_ms);

ALTER TABLE bastion.orgs              ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
ALTER TABLE bastion.memberships       ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
ALTER TABLE bastion.invitations       ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
ALTER TABLE bastion.api_keys          ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
ALTER TABLE bastion.level_permissions ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
ALTER TABLE bastion.activity_events   ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;

-- API keys sign their own contexts: kind `svc` (service key) or `pub` (publishable key), with
-- the key id where a user id would be. Both run as bastion_app.
CREATE OR REPLACE FUNCTION bastion.ctx() RETURNS text[]
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog
    AS $$
DECLARE
    raw   text := current_setting('bastion.ctx', true);
    parts text[];
    pads  record;
    mac   text;
BEGIN
    -- Every policy runs this once per statement: string checks only until the MAC has
    -- verified (then the fields are ours, and safe to cast).
    IF raw IS NULL OR length(raw) < 80 OR length(raw) > 400 THEN
        RETURN NULL;
    END IF;
    parts := string_to_array(raw, '.');
    IF array_length(parts, 1) IS DISTINCT FROM 6 OR parts[1] <> 'v1' THEN
        RETURN NULL;
    END IF;
    SELECT k_ipad, k_opad INTO pads FROM bastion.scope_key WHERE id = 1;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    mac := encode(sha256(pads.k_opad || sha256(pads.k_ipad
            || convert_to(left(raw, length(raw) - 65), 'UTF8'))), 'hex');
    -- Compare digests of both sides, so the comparison's timing says nothing about the MAC.
    IF sha256(convert_to(mac, 'UTF8')) <> sha256(convert_to(parts[6], 'UTF8')) THEN
        RETURN NULL;
    END IF;
    IF parts[5]::bigint < (extract(epoch FROM clock_timestamp()) * 1000)::bigint THEN
        RETURN NULL;
    END IF;
    IF NOT ((parts[2] IN ('app', 'svc', 'pub') AND current_setting('role') = 'bastion_app')
         OR (parts[2] = 'sys' AND current_setting('role') = 'bastion_system')) THEN
        RETURN NULL;
    END IF;
    RETURN ARRAY[parts[2], parts[3], parts[4]];
END
$$;

-- The context's accessors, in PL/pgSQL for the same reason as current_level() below.
CREATE OR REPLACE FUNCTION bastion.current_user_id() RETURNS text
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog
    AS $$
DECLARE
    c text[] := bastion.ctx();
BEGIN
    RETURN CASE WHEN c[1] = 'app' THEN nullif(c[2], '') END;
END
$$;

CREATE OR REPLACE FUNCTION bastion.current_org_id() RETURNS text
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog
    AS $$
DECLARE
    c text[] := bastion.ctx();
BEGIN
    RETURN CASE WHEN c[1] IN ('app', 'svc', 'pub') THEN nullif(c[3], '') END;
END
$$;

CREATE OR REPLACE FUNCTION bastion.is_system() RETURNS boolean
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog
    AS $$
BEGIN
    RETURN coalesce((bastion.ctx())[1] = 'sys', false);
END
$$;

-- Whether the caller is the schema's owner; PL/pgSQL now, as every policy of the tables below
-- calls it.
CREATE OR REPLACE FUNCTION bastion.is_schema_owner() RETURNS boolean
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog
    AS $$
BEGIN
    RETURN current_user = (SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'bastion');
END
$$;

-- Owner-only policies for the tables the helpers read (see the header).
-- They name the owner (the role running this migration), so request work never evaluates them.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['orgs', 'memberships', 'api_keys', 'level_permissions'] LOOP
        EXECUTE format('CREATE POLICY owner_helpers ON bastion.%I TO %I '
                       'USING ((SELECT bastion.is_schema_owner()))', t, current_user);
    END LOOP;
END
$$;

-- The caller's level in the context's org: a member's stored level; 80 for a live service key
-- (the Admin set: a backend's full access, but not deleting the org); 0 for a live
-- publishable key; NULL for anyone else. PL/pgSQL rather than SQL: its plans are cached per
-- connection, where a non-inlinable SQL function is planned again on every call (measured:
-- 0.9 ms against 0.05 ms per call; see docs/BENCHMARKS.md).
CREATE FUNCTION bastion.current_level() RETURNS integer
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog
    AS $$
DECLARE
    c   text[] := bastion.ctx();
    lvl integer;
BEGIN
    IF c IS NULL OR c[3] = '' THEN
        RETURN NULL;
    END IF;
    IF c[1] = 'app' THEN
        SELECT m.level INTO lvl FROM bastion.memberships m WHERE m.org_id = c[3] AND m.user_id = c[2];
    ELSIF c[1] = 'svc' THEN
        SELECT 80 INTO lvl FROM bastion.api_keys k
        WHERE k.id = c[2] AND k.org_id = c[3] AND k.kind = 'service' AND k.revoked_ms IS NULL;
    ELSIF c[1] = 'pub' THEN
        SELECT 0 INTO lvl FROM bastion.api_keys k
        WHERE k.id = c[2] AND k.org_id = c[3] AND k.kind = 'publishable' AND k.revoked_ms IS NULL;
    END IF;
    RETURN lvl;
END
$$;
-- Everything one policy needs, from one verification of the context: the tokens of the rows
-- the caller may touch under permission p.
--   'u:<user>'         the caller's own rows (a signed-in user);
--   'o:<org>'          rows of the context's org, when the caller holds p there;
--   'l:<org>:<level>'  rows at each level the caller may manage there with p: below their own,
--                      or every level for a Super Admin.
-- A policy is then `ARRAY[<the row's tokens>] && (SELECT bastion.scope_tokens('<p>'))`: one
-- init-plan per statement (one HMAC check), and an array overlap per row. NULL without a
-- valid context, so nothing matches.
CREATE FUNCTION bastion.scope_tokens(p text) RETURNS text[]
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog
    AS $$
DECLARE
    c      text[] := bastion.ctx();
    lvl    integer;
    l      integer;
    ok     boolean;
    tokens text[] := ARRAY[]::text[];
BEGIN
    IF c IS NULL THEN
        RETURN NULL;
    END IF;
    IF c[1] = 'app' AND c[2] <> '' THEN
        tokens := tokens || ('u:' || c[2]);
    END IF;
    IF c[3] = '' THEN
        RETURN tokens;
    END IF;
    -- One look-up: the caller's level there and whether it holds p.
    IF c[1] = 'app' THEN
        SELECT m.level, EXISTS (SELECT 1 FROM bastion.level_permissions lp
                                WHERE lp.level = m.level AND lp.permission = p)
          INTO lvl, ok
          FROM bastion.memberships m WHERE m.org_id = c[3] AND m.user_id = c[2];
    ELSIF c[1] IN ('svc', 'pub') THEN
        SELECT x.l, EXISTS (SELECT 1 FROM bastion.level_permissions lp
                            WHERE lp.level = x.l AND lp.permission = p)
          INTO lvl, ok
          FROM bastion.api_keys k, LATERAL (SELECT CASE k.kind WHEN 'service' THEN 80 ELSE 0 END AS l) x
         WHERE k.id = c[2] AND k.org_id = c[3] AND k.revoked_ms IS NULL
           AND k.kind = CASE c[1] WHEN 'svc' THEN 'service' ELSE 'publishable' END;
    END IF;
    IF coalesce(ok, false) THEN
        tokens := tokens || ('o:' || c[3]);
        FOREACH l IN ARRAY ARRAY[20, 30, 40, 60, 80, 100] LOOP
            IF lvl = 100 OR l < lvl THEN
                tokens := tokens || ('l:' || c[3] || ':' || l);
            END IF;
        END LOOP;
    END IF;
    RETURN tokens;
END
$$;

CREATE FUNCTION bastion.has_permission(p text) RETURNS boolean
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog
    AS $$
BEGIN
    RETURN coalesce(('o:' || bastion.current_org_id()) = ANY (bastion.scope_tokens(p)), false);
END
$$;

-- The orgs the caller may see: a user's memberships, or a key's own org.
CREATE FUNCTION bastion.visible_org_ids() RETURNS text[]
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog
    AS $$
DECLARE
    c text[] := bastion.ctx();
BEGIN
    IF c[1] = 'app' THEN
        RETURN ARRAY(SELECT m.org_id FROM bastion.memberships m WHERE m.user_id = c[2]);
    ELSIF bastion.current_level() IS NOT NULL THEN
        RETURN ARRAY[c[3]];
    END IF;
    RETURN ARRAY[]::text[];
END
$$;

-- The creator of an org with no members yet (their first membership, as Super Admin).
CREATE FUNCTION bastion.is_new_org_creator(org text) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog
    AS $$
    SELECT EXISTS (SELECT 1 FROM bastion.orgs o WHERE o.id = org
                   AND o.created_by = bastion.current_user_id())
       AND NOT EXISTS (SELECT 1 FROM bastion.memberships m WHERE m.org_id = org)
    $$;

REVOKE ALL ON FUNCTION bastion.current_level(), bastion.scope_tokens(text),
    bastion.has_permission(text), bastion.visible_org_ids(), bastion.is_new_org_creator(text)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bastion.current_level(), bastion.scope_tokens(text),
    bastion.has_permission(text), bastion.visible_org_ids(), bastion.is_new_org_creator(text)
    TO bastion_app, bastion_system;

-- The last Super Admin stays (R2), whoever asks: a demotion or removal that would leave an
-- existing org without one is refused. Locking the org row serialises concurrent changes, so
-- two owners demoting each other cannot both succeed. An org being deleted no longer exists
-- here, so its cascade passes.
CREATE FUNCTION bastion.keep_a_super_admin() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog
    AS $$
BEGIN
    IF OLD.level = 100 AND (TG_OP = 'DELETE' OR NEW.level <> 100) THEN
        PERFORM 1 FROM bastion.orgs WHERE id = OLD.org_id FOR UPDATE;
        IF FOUND AND NOT EXISTS (SELECT 1 FROM bastion.memberships
                                 WHERE org_id = OLD.org_id AND level = 100) THEN
            RAISE EXCEPTION 'an organization keeps at least one super admin'
                USING ERRCODE = 'check_violation', CONSTRAINT = 'last_super_admin';
        END IF;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER memberships_keep_a_super_admin AFTER UPDATE OR DELETE ON bastion.memberships
    FOR EACH ROW EXECUTE FUNCTION bastion.keep_a_super_admin();

GRANT SELECT, INSERT, UPDATE, DELETE ON bastion.orgs, bastion.memberships, bastion.invitations,
    bastion.api_keys, bastion.activity_events TO bastion_system;
-- Request work updates only the columns its actions change: a policy says which rows, the
-- grant which columns (nobody moves a membership to another user or re-keys an API key).
GRANT SELECT, INSERT, DELETE ON bastion.orgs, bastion.memberships TO bastion_app;
GRANT UPDATE (name, updated_ms) ON bastion.orgs TO bastion_app;
GRANT UPDATE (level, updated_ms) ON bastion.memberships TO bastion_app;
GRANT SELECT, INSERT, DELETE ON bastion.invitations TO bastion_app;
GRANT SELECT, INSERT ON bastion.api_keys TO bastion_app;
GRANT UPDATE (revoked_ms) ON bastion.api_keys TO bastion_app;
GRANT SELECT, INSERT ON bastion.activity_events TO bastion_app;
GRANT SELECT, INSERT, DELETE ON bastion.level_permissions TO bastion_system;

-- System paths: accepting an invitation (the link is consumed before a scope exists),
-- authenticating an API key, syncing the permission map, cleanup.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['orgs', 'memberships', 'invitations', 'api_keys',
                             'level_permissions', 'activity_events'] LOOP
        EXECUTE format('CREATE POLICY system_all ON bastion.%I TO bastion_system '
                       'USING ((SELECT bastion.is_system())) WITH CHECK ((SELECT bastion.is_system()))', t);
    END LOOP;
END
$$;

-- Orgs: members (and the org's keys) read; any signed-in user creates one as its creator;
-- renaming and deleting need the permission in that org.
CREATE POLICY member_read ON bastion.orgs FOR SELECT TO bastion_app
    USING (id = ANY ((SELECT bastion.visible_org_ids())::text[]));
CREATE POLICY creator_insert ON bastion.orgs FOR INSERT TO bastion_app
    WITH CHECK (created_by = (SELECT bastion.current_user_id()));
CREATE POLICY rename ON bastion.orgs FOR UPDATE TO bastion_app
    USING (ARRAY['o:' || id] && (SELECT bastion.scope_tokens('org.rename')))
    WITH CHECK (ARRAY['o:' || id] && (SELECT bastion.scope_tokens('org.rename')));
CREATE POLICY remove ON bastion.orgs FOR DELETE TO bastion_app
    USING (ARRAY['o:' || id] && (SELECT bastion.scope_tokens('org.delete')));

-- Memberships: one's own everywhere; the org's with members.read. Changes only below one's
-- own level (so never one's own row), Super Admins excepted; anyone may leave.
CREATE POLICY own_or_org_read ON bastion.memberships FOR SELECT TO bastion_app
    USING (ARRAY['u:' || user_id, 'o:' || org_id] && (SELECT bastion.scope_tokens('members.read')));
CREATE POLICY creator_first ON bastion.memberships FOR INSERT TO bastion_app
    WITH CHECK (user_id = (SELECT bastion.current_user_id()) AND level = 100
                AND bastion.is_new_org_creator(org_id));
CREATE POLICY change_below ON bastion.memberships FOR UPDATE TO bastion_app
    USING (ARRAY['l:' || org_id || ':' || level] && (SELECT bastion.scope_tokens('members.update')))
    WITH CHECK (ARRAY['l:' || org_id || ':' || level] && (SELECT bastion.scope_tokens('members.update')));
CREATE POLICY remove_below_or_leave ON bastion.memberships FOR DELETE TO bastion_app
    USING (ARRAY['u:' || user_id, 'l:' || org_id || ':' || level]
           && (SELECT bastion.scope_tokens('members.remove')));

-- Invitations: whoever may invite reads them, and creates or withdraws them below their own
-- level (Super Admins excepted).
CREATE POLICY inviters_read ON bastion.invitations FOR SELECT TO bastion_app
    USING (ARRAY['o:' || org_id] && (SELECT bastion.scope_tokens('members.invite')));
CREATE POLICY inviters_create ON bastion.invitations FOR INSERT TO bastion_app
    WITH CHECK (ARRAY['l:' || org_id || ':' || level] && (SELECT bastion.scope_tokens('members.invite')));
CREATE POLICY inviters_revoke ON bastion.invitations FOR DELETE TO bastion_app
    USING (ARRAY['l:' || org_id || ':' || level] && (SELECT bastion.scope_tokens('members.invite')));

-- API keys: each action needs its permission in the key's org.
CREATE POLICY key_read ON bastion.api_keys FOR SELECT TO bastion_app
    USING (ARRAY['o:' || org_id] && (SELECT bastion.scope_tokens('api_keys.read')));
CREATE POLICY key_create ON bastion.api_keys FOR INSERT TO bastion_app
    WITH CHECK (ARRAY['o:' || org_id] && (SELECT bastion.scope_tokens('api_keys.create')));
CREATE POLICY key_revoke ON bastion.api_keys FOR UPDATE TO bastion_app
    USING (ARRAY['o:' || org_id] && (SELECT bastion.scope_tokens('api_keys.revoke')))
    WITH CHECK (ARRAY['o:' || org_id] && (SELECT bastion.scope_tokens('api_keys.revoke')));

-- Private data: the owning user only. No level, no key, no org role reaches it.
CREATE POLICY owner_only ON bastion.activity_events TO bastion_app
    USING (user_id = (SELECT bastion.current_user_id()))
    WITH CHECK (user_id = (SELECT bastion.current_user_id()));

-- Audit events of an org: now also need audit.read there.
DROP POLICY org_read ON bastion.audit_events;
CREATE POLICY org_read ON bastion.audit_events FOR SELECT TO bastion_app
    USING (ARRAY['o:' || org_id] && (SELECT bastion.scope_tokens('audit.read')));
