-- Licensing (SPEC L1–L7): an org's products and policies, the licenses issued under them and the
-- machines each license is activated on. Only keyed hashes of license keys and machine
-- identifiers are stored (L3). The store's queries apply the scope (docs/tenancy.md); the
-- permission decision is bastion-core's.

CREATE TABLE products (
    id          TEXT    PRIMARY KEY,
    org_id      TEXT    NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    name        TEXT    NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_ms  INTEGER NOT NULL,
    UNIQUE (org_id, name),
    -- The target of the policies' (product_id, org_id) key: a policy's org is its product's.
    UNIQUE (id, org_id)
);

CREATE TABLE license_policies (
    id            TEXT    PRIMARY KEY,
    org_id        TEXT    NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    product_id    TEXT    NOT NULL,
    name          TEXT    NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    max_machines  INTEGER NOT NULL CHECK (max_machines >= 1),
    duration_ms   INTEGER CHECK (duration_ms IS NULL OR duration_ms > 0),
    -- A JSON array of entitlement names, sorted and de-duplicated by the domain.
    entitlements  TEXT    NOT NULL CHECK (json_valid(entitlements) AND json_type(entitlements) = 'array'),
    lease_ms      INTEGER NOT NULL CHECK (lease_ms > 0),
    created_ms    INTEGER NOT NULL,
    UNIQUE (product_id, name),
    -- The target of the licenses' key: a license's policy is of its product and org.
    UNIQUE (id, product_id, org_id),
    FOREIGN KEY (product_id, org_id) REFERENCES products (id, org_id) ON DELETE CASCADE
);
-- The child side of the org key, for the cascade when an org is deleted.
CREATE INDEX license_policies_org ON license_policies (org_id);

CREATE TABLE licenses (
    -- `lic_…`: named in signed keys and the revocation list, so it never changes.
    id            TEXT    PRIMARY KEY,
    org_id        TEXT    NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    product_id    TEXT    NOT NULL,
    policy_id     TEXT    NOT NULL,
    -- HMAC-SHA256 of the key under the lookup pepper, never the key.
    key_hash      BLOB    NOT NULL UNIQUE CHECK (length(key_hash) = 32),
    email         TEXT    NOT NULL,
    -- Copied from the policy at issue (JSON array).
    entitlements  TEXT    NOT NULL CHECK (json_valid(entitlements) AND json_type(entitlements) = 'array'),
    max_machines  INTEGER NOT NULL CHECK (max_machines >= 1),
    lease_ms      INTEGER NOT NULL CHECK (lease_ms > 0),
    expires_ms    INTEGER,
    created_ms    INTEGER NOT NULL,
    created_by    TEXT    NOT NULL,
    failures      INTEGER NOT NULL DEFAULT 0 CHECK (failures >= 0),
    frozen_ms     INTEGER,
    revoked_ms    INTEGER,
    -- The target of the machines' (license_id, org_id) key.
    UNIQUE (id, org_id),
    FOREIGN KEY (policy_id, product_id, org_id)
        REFERENCES license_policies (id, product_id, org_id) ON DELETE CASCADE
);
-- An org's licenses newest first, of all products or of one.
CREATE INDEX licenses_org ON licenses (org_id, created_ms);
CREATE INDEX licenses_product ON licenses (org_id, product_id, created_ms);
-- The signed revocation list of a product.
CREATE INDEX licenses_revoked ON licenses (product_id, id) WHERE revoked_ms IS NOT NULL;
-- The foreign key's child side, for cascades from a policy.
CREATE INDEX licenses_policy ON licenses (policy_id);

CREATE TABLE license_machines (
    id            TEXT    PRIMARY KEY,
    org_id        TEXT    NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    license_id    TEXT    NOT NULL,
    -- HMAC-SHA256 of the canonical machine identifiers, never the identifiers.
    machine_hash  BLOB    NOT NULL CHECK (length(machine_hash) = 32),
    name          TEXT    NOT NULL,
    activated_ms  INTEGER NOT NULL,
    last_seen_ms  INTEGER NOT NULL,
    -- Also the index that counts and lists a license's machines.
    UNIQUE (license_id, machine_hash),
    FOREIGN KEY (license_id, org_id) REFERENCES licenses (id, org_id) ON DELETE CASCADE
);
CREATE INDEX license_machines_org ON license_machines (org_id);
