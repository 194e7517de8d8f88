-- Signed scope context (docs/tenancy.md): the scope reaches the database as one setting,
-- `bastion.ctx` = 'v1.<kind>.<user>.<org>.<expires_ms>.<hmac>', and the helpers trust it only
-- when its HMAC-SHA256 verifies under a key that no role but the owner can read. A direct
-- connection that sets the role and a context by hand sees nothing: every policy, system
-- policies included, goes through the helpers.

-- The key, kept as its two HMAC pad blocks (K xor ipad, K xor opad) so the built-in sha256()
-- computes the HMAC without an extension. Owner only: no grant to any other role.
CREATE TABLE bastion.scope_key (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    k_ipad BYTEA   NOT NULL CHECK (length(k_ipad) = 64),
    k_opad BYTEA   NOT NULL CHECK (length(k_opad) = 64)
);
ALTER TABLE bastion.scope_key ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
REVOKE ALL ON bastion.scope_key FROM PUBLIC;

-- Whether the caller is the schema's owner (SECURITY INVOKER: inside the definer functions
-- below, the caller is the owner).
CREATE FUNCTION bastion.is_schema_owner() RETURNS boolean
    LANGUAGE sql STABLE SET search_path = pg_catalog
    AS $$ SELECT current_user = (SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'bastion') $$;

-- Only the owner holds a grant on the key, and the policy says so again.
CREATE POLICY owner_only ON bastion.scope_key
    USING ((SELECT bastion.is_schema_owner())) WITH CHECK ((SELECT bastion.is_schema_owner()));

-- The verified context: {kind, user, org}, or NULL when absent, forged, expired, or set for
-- the other role. `current_setting('role')` is the role the transaction switched to (inside a
-- SECURITY DEFINER function current_user is the owner).
CREATE FUNCTION bastion.ctx() RETURNS text[]
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog
    AS $$
DECLARE
    raw   text := current_setting('bastion.ctx', true);
    parts text[];
    pads  record;
    mac   bytea;
BEGIN
    IF raw IS NULL OR raw = '' THEN
        RETURN NULL;
    END IF;
    parts := string_to_array(raw, '.');
    IF array_length(parts, 1) IS DISTINCT FROM 6 OR parts[1] <> 'v1'
       OR parts[5] !~ '^[0-9]{1,18}$' OR parts[6] !~ '^[0-9a-f]{64}$' THEN
        RETURN NULL;
    END IF;
    SELECT k_ipad, k_opad INTO pads FROM bastion.scope_key WHERE id = 1;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    mac := sha256(pads.k_opad || sha256(pads.k_ipad
            || convert_to(array_to_string(parts[1:5], '.'), 'UTF8')));
    -- Compare digests of both sides, so the comparison's timing says nothing about the MAC.
    IF sha256(mac) <> sha256(decode(parts[6], 'hex')) THEN
        RETURN NULL;
    END IF;
    IF parts[5]::bigint < (extract(epoch FROM clock_timestamp()) * 1000)::bigint THEN
        RETURN NULL;
    END IF;
    IF NOT ((parts[2] = 'app' AND current_setting('role') = 'bastion_app')
         OR (parts[2] = 'sys' AND current_setting('role') = 'bastion_system')) THEN
        RETURN NULL;
    END IF;
    RETURN ARRAY[parts[2], parts[3], parts[4]];
END
$$;

CREATE OR REPLACE FUNCTION bastion.current_user_id() RETURNS text
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog
    AS $$ SELECT nullif(c[2], '') FROM (SELECT bastion.ctx() AS c) s WHERE c[1] = 'app' $$;

CREATE OR REPLACE FUNCTION bastion.current_org_id() RETURNS text
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog
    AS $$ SELECT nullif(c[3], '') FROM (SELECT bastion.ctx() AS c) s WHERE c[1] = 'app' $$;

CREATE FUNCTION bastion.is_system() RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog
    AS $$ SELECT coalesce((SELECT c[1] = 'sys' FROM (SELECT bastion.ctx() AS c) s), false) $$;

REVOKE ALL ON FUNCTION bastion.ctx(), bastion.is_system() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bastion.ctx(), bastion.is_system() TO bastion_app, bastion_system;

-- Every policy through the helpers; `(SELECT …)` makes each an init-plan, evaluated once per
-- statement rather than once per row.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['key_canary', 'key_ring', 'audit_head', 'audit_checkpoints',
                             'attempt_counters'] LOOP
        EXECUTE format('DROP POLICY system_only ON bastion.%I', t);
        EXECUTE format('CREATE POLICY system_only ON bastion.%I TO bastion_system '
                       'USING ((SELECT bastion.is_system())) WITH CHECK ((SELECT bastion.is_system()))', t);
    END LOOP;
    FOREACH t IN ARRAY ARRAY['audit_events', 'users', 'sessions', 'refresh_tokens',
                             'magic_links', 'email_outbox'] LOOP
        EXECUTE format('DROP POLICY system_all ON bastion.%I', t);
        EXECUTE format('CREATE POLICY system_all ON bastion.%I TO bastion_system '
                       'USING ((SELECT bastion.is_system())) WITH CHECK ((SELECT bastion.is_system()))', t);
    END LOOP;
END
$$;

DROP POLICY org_read ON bastion.audit_events;
CREATE POLICY org_read ON bastion.audit_events FOR SELECT TO bastion_app
    USING (org_id IS NOT NULL AND org_id = (SELECT bastion.current_org_id()));
DROP POLICY own_account ON bastion.users;
CREATE POLICY own_account ON bastion.users TO bastion_app
    USING (id = (SELECT bastion.current_user_id()))
    WITH CHECK (id = (SELECT bastion.current_user_id()));
DROP POLICY own_sessions ON bastion.sessions;
CREATE POLICY own_sessions ON bastion.sessions TO bastion_app
    USING (user_id = (SELECT bastion.current_user_id()))
    WITH CHECK (user_id = (SELECT bastion.current_user_id()));
