-- Attempt counters for lockouts (logins per account and per IP; later activations).
-- `key` is an opaque, hashed identifier: no email or address is stored in the clear here.
-- Counting happens before any user is known: a system path only.
CREATE TABLE bastion.attempt_counters (
    key              TEXT   PRIMARY KEY,
    window_start_ms  BIGINT NOT NULL,
    attempts         BIGINT NOT NULL,
    locked_until_ms  BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX attempt_counters_expiry ON bastion.attempt_counters (window_start_ms, locked_until_ms);

ALTER TABLE bastion.attempt_counters ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
GRANT SELECT, INSERT, UPDATE, DELETE ON bastion.attempt_counters TO bastion_system;
CREATE POLICY system_only ON bastion.attempt_counters TO bastion_system USING (true) WITH CHECK (true);
