-- Attempt counters for lockouts (logins per account and per IP; later activations).
-- `key` is an opaque, hashed identifier: no email or address is stored in the clear here.
CREATE TABLE attempt_counters (
    key              TEXT    PRIMARY KEY,
    window_start_ms  INTEGER NOT NULL,
    attempts         INTEGER NOT NULL,
    locked_until_ms  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX attempt_counters_expiry ON attempt_counters (window_start_ms, locked_until_ms);
