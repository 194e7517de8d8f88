-- A deactivated machine's certificates are revoked (SPEC L2, L4): the machine id stays in its
-- product's signed revocation list until the longest lease a certificate issued before the
-- deactivation can have has ended (`until_ms`), then cleanup purges the row.
CREATE TABLE revoked_machines (
    machine_id  TEXT    PRIMARY KEY,
    org_id      TEXT    NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    license_id  TEXT    NOT NULL,
    revoked_ms  INTEGER NOT NULL,
    until_ms    INTEGER NOT NULL,
    FOREIGN KEY (license_id, org_id) REFERENCES licenses (id, org_id) ON DELETE CASCADE
);
CREATE INDEX revoked_machines_license ON revoked_machines (license_id, until_ms);
