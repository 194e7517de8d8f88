-- Licensing (SPEC L1–L7): an org's products and policies, the licenses issued under them and the
-- machines each license is activated on. Only keyed hashes of license keys and machine
-- identifiers are stored (L3).
--
-- Request work reaches these tables through the permission map, like 0006 and 0007: reading
-- needs licenses.read in the row's org, creating products, policies and licenses
-- licenses.issue, freezing licenses.freeze, revoking and deactivating licenses.revoke. The
-- public activation path has no principal: it is the system path `Scope::System("licensing")`,
-- like sign-in, and the only one that adds or refreshes machines.

CREATE TABLE bastion.products (
    id          TEXT    PRIMARY KEY,
    org_id      TEXT    NOT NULL REFERENCES bastion.orgs (id) ON DELETE CASCADE,
    name        TEXT    NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_ms  BIGINT  NOT NULL,
    UNIQUE (org_id, name),
    -- The target of the policies' and licenses' (product_id, org_id) keys.
    UNIQUE (id, org_id)
);

CREATE TABLE bastion.license_policies (
    id            TEXT    PRIMARY KEY,
    org_id        TEXT    NOT NULL REFERENCES bastion.orgs (id) ON DELETE CASCADE,
    product_id    TEXT    NOT NULL,
    name          TEXT    NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    max_machines  BIGINT  NOT NULL CHECK (max_machines BETWEEN 1 AND 4294967295),
    duration_ms   BIGINT  CHECK (duration_ms IS NULL OR duration_ms > 0),
    -- Sorted and de-duplicated by the domain.
    entitlements  TEXT[]  NOT NULL,
    lease_ms      BIGINT  NOT NULL CHECK (lease_ms > 0),
    created_ms    BIGINT  NOT NULL,
    -- With the org: a name taken in another org's product must not answer Conflict (the
    -- unique check runs before the foreign key's).
    UNIQUE (org_id, product_id, name),
    -- The target of the licenses' key: a license's policy is of its product and org.
    UNIQUE (id, product_id, org_id),
    FOREIGN KEY (product_id, org_id) REFERENCES bastion.products (id, org_id) ON DELETE CASCADE
);
CREATE INDEX license_policies_product ON bastion.license_policies (product_id, name);

CREATE TABLE bastion.licenses (
    -- `lic_…`: named in signed keys and the revocation list, so it never changes.
    id            TEXT    PRIMARY KEY,
    org_id        TEXT    NOT NULL REFERENCES bastion.orgs (id) ON DELETE CASCADE,
    product_id    TEXT    NOT NULL,
    policy_id     TEXT    NOT NULL,
    -- HMAC-SHA256 of the key under the lookup pepper, never the key.
    key_hash      BYTEA   NOT NULL UNIQUE CHECK (length(key_hash) = 32),
    email         TEXT    NOT NULL,
    -- Copied from the policy at issue.
    entitlements  TEXT[]  NOT NULL,
    max_machines  BIGINT  NOT NULL CHECK (max_machines BETWEEN 1 AND 4294967295),
    lease_ms      BIGINT  NOT NULL CHECK (lease_ms > 0),
    expires_ms    BIGINT,
    created_ms    BIGINT  NOT NULL,
    created_by    TEXT    NOT NULL,
    failures      BIGINT  NOT NULL DEFAULT 0 CHECK (failures BETWEEN 0 AND 4294967295),
    frozen_ms     BIGINT,
    revoked_ms    BIGINT,
    -- The target of the machines' (license_id, org_id) key.
    UNIQUE (id, org_id),
    FOREIGN KEY (product_id, org_id) REFERENCES bastion.products (id, org_id) ON DELETE CASCADE,
    FOREIGN KEY (policy_id, product_id, org_id)
        REFERENCES bastion.license_policies (id, product_id, org_id) ON DELETE CASCADE
);
-- An org's licenses newest first, of all products or of one.
CREATE INDEX licenses_org ON bastion.licenses (org_id, created_ms DESC, id DESC);
CREATE INDEX licenses_product ON bastion.licenses (product_id, created_ms DESC, id DESC);
-- The signed revocation list of a product.
CREATE INDEX licenses_revoked ON bastion.licenses (product_id, id) WHERE revoked_ms IS NOT NULL;
-- The foreign key's child side, for cascades from a policy.
CREATE INDEX licenses_policy ON bastion.licenses (policy_id);

CREATE TABLE bastion.license_machines (
    id            TEXT    PRIMARY KEY,
    org_id        TEXT    NOT NULL REFERENCES bastion.orgs (id) ON DELETE CASCADE,
    license_id    TEXT    NOT NULL,
    -- HMAC-SHA256 of the canonical machine identifiers, never the identifiers.
    machine_hash  BYTEA   NOT NULL CHECK (length(machine_hash) = 32),
    name          TEXT    NOT NULL,
    activated_ms  BIGINT  NOT NULL,
    last_seen_ms  BIGINT  NOT NULL,
    -- Also the index that counts and lists a license's machines.
    UNIQUE (license_id, machine_hash),
    FOREIGN KEY (license_id, org_id) REFERENCES bastion.licenses (id, org_id) ON DELETE CASCADE
);
CREATE INDEX license_machines_org ON bastion.license_machines (org_id);

ALTER TABLE bastion.products         ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
ALTER TABLE bastion.license_policies ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
ALTER TABLE bastion.licenses         ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
ALTER TABLE bastion.license_machines ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;

-- System paths: activation, validation, key failures, revocation confirmed by link, the CLI.
GRANT SELECT, INSERT, UPDATE, DELETE ON bastion.products, bastion.license_policies,
    bastion.licenses, bastion.license_machines TO bastion_system;
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['products', 'license_policies', 'licenses', 'license_machines'] LOOP
        EXECUTE format('CREATE POLICY system_all ON bastion.%I TO bastion_system '
                       'USING ((SELECT bastion.is_system())) WITH CHECK ((SELECT bastion.is_system()))', t);
    END LOOP;
END
$$;

-- Request work: products, policies and licenses are created, never edited or deleted (an org's
-- deletion takes them along). A license changes only in its state (frozen, its failure count,
-- revoked); a machine can only be deactivated.
GRANT SELECT, INSERT ON bastion.products, bastion.license_policies, bastion.licenses TO bastion_app;
GRANT UPDATE (frozen_ms, failures, revoked_ms) ON bastion.licenses TO bastion_app;
-- Machines are activated and refreshed only by the public path, which a license key proves
-- (`System('licensing')`): request work reads them and deactivates them, nothing else.
GRANT SELECT, DELETE ON bastion.license_machines TO bastion_app;

CREATE POLICY product_read ON bastion.products FOR SELECT TO bastion_app
    USING (ARRAY['o:' || org_id] && (SELECT bastion.scope_tokens('licenses.read')));
CREATE POLICY product_create ON bastion.products FOR INSERT TO bastion_app
    WITH CHECK (ARRAY['o:' || org_id] && (SELECT bastion.scope_tokens('licenses.issue')));

CREATE POLICY policy_read ON bastion.license_policies FOR SELECT TO bastion_app
    USING (ARRAY['o:' || org_id] && (SELECT bastion.scope_tokens('licenses.read')));
CREATE POLICY policy_create ON bastion.license_policies FOR INSERT TO bastion_app
    WITH CHECK (ARRAY['o:' || org_id] && (SELECT bastion.scope_tokens('licenses.issue')));

-- Issuing creates a live license: a frozen or revoked one would skip the permissions below.
CREATE POLICY license_read ON bastion.licenses FOR SELECT TO bastion_app
    USING (ARRAY['o:' || org_id] && (SELECT bastion.scope_tokens('licenses.read')));
CREATE POLICY license_issue ON bastion.licenses FOR INSERT TO bastion_app
    WITH CHECK (ARRAY['o:' || org_id] && (SELECT bastion.scope_tokens('licenses.issue'))
                AND failures = 0 AND frozen_ms IS NULL AND revoked_ms IS NULL);
-- Which rows: those of an org where the caller may freeze or revoke. Which of the two changes:
-- the trigger below, column by column.
CREATE POLICY license_change ON bastion.licenses FOR UPDATE TO bastion_app
    USING (ARRAY['o:' || org_id] && (SELECT bastion.scope_tokens('licenses.freeze'))
           OR ARRAY['o:' || org_id] && (SELECT bastion.scope_tokens('licenses.revoke')))
    WITH CHECK (ARRAY['o:' || org_id] && (SELECT bastion.scope_tokens('licenses.freeze'))
                OR ARRAY['o:' || org_id] && (SELECT bastion.scope_tokens('licenses.revoke')));

-- A policy cannot tell which columns an UPDATE changes: this trigger does. Freezing,
-- unfreezing and the failure count need licenses.freeze, revoking licenses.revoke, each in the
-- license's org; the system's paths pass.
CREATE FUNCTION bastion.license_change_permitted() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog
    AS $$
BEGIN
    IF bastion.is_system() THEN
        RETURN NEW;
    END IF;
    IF NEW.revoked_ms IS DISTINCT FROM OLD.revoked_ms
       AND NOT coalesce(ARRAY['o:' || OLD.org_id] && bastion.scope_tokens('licenses.revoke'), false) THEN
        RAISE EXCEPTION 'revoking a license needs licenses.revoke'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF (NEW.frozen_ms IS DISTINCT FROM OLD.frozen_ms OR NEW.failures IS DISTINCT FROM OLD.failures)
       AND NOT coalesce(ARRAY['o:' || OLD.org_id] && bastion.scope_tokens('licenses.freeze'), false) THEN
        RAISE EXCEPTION 'freezing a license needs licenses.freeze'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION bastion.license_change_permitted() FROM PUBLIC;
CREATE TRIGGER licenses_change_permitted BEFORE UPDATE ON bastion.licenses
    FOR EACH ROW EXECUTE FUNCTION bastion.license_change_permitted();

-- Machines: activated by the system's public path only, seen by readers, deactivated by
-- whoever may revoke.
CREATE POLICY machine_read ON bastion.license_machines FOR SELECT TO bastion_app
    USING (ARRAY['o:' || org_id] && (SELECT bastion.scope_tokens('licenses.read')));
CREATE POLICY machine_deactivate ON bastion.license_machines FOR DELETE TO bastion_app
    USING (ARRAY['o:' || org_id] && (SELECT bastion.scope_tokens('licenses.revoke')));
