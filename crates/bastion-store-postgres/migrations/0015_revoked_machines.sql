-- A deactivated machine's certificates are revoked (SPEC L2, L4): the machine id stays in its
-- product's signed revocation list until the longest lease a certificate issued before the
-- deactivation can have has ended (`until_ms`), then cleanup purges the row.
CREATE TABLE bastion.revoked_machines (
    machine_id  TEXT   PRIMARY KEY,
    org_id      TEXT   NOT NULL REFERENCES bastion.orgs (id) ON DELETE CASCADE,
    license_id  TEXT   NOT NULL,
    revoked_ms  BIGINT NOT NULL,
    until_ms    BIGINT NOT NULL,
    FOREIGN KEY (license_id, org_id) REFERENCES bastion.licenses (id, org_id) ON DELETE CASCADE
);
CREATE INDEX revoked_machines_license ON bastion.revoked_machines (license_id, until_ms);

ALTER TABLE bastion.revoked_machines ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
-- UPDATE only for the cleanup's `FOR UPDATE SKIP LOCKED`; nothing updates a revocation.
GRANT SELECT, INSERT, UPDATE, DELETE ON bastion.revoked_machines TO bastion_system;
CREATE POLICY system_all ON bastion.revoked_machines TO bastion_system
    USING ((SELECT bastion.is_system())) WITH CHECK ((SELECT bastion.is_system()));
-- Request work records the revocation of a machine it deactivates (licenses.revoke), and reads
-- what it may read of its org's licenses.
GRANT SELECT, INSERT ON bastion.revoked_machines TO bastion_app;
CREATE POLICY machine_revocation ON bastion.revoked_machines FOR INSERT TO bastion_app
    WITH CHECK (ARRAY['o:' || org_id] && (SELECT bastion.scope_tokens('licenses.revoke')));
CREATE POLICY revocation_read ON bastion.revoked_machines FOR SELECT TO bastion_app
    USING (ARRAY['o:' || org_id] && (SELECT bastion.scope_tokens('licenses.read')));
