-- Idempotency keys (SPEC P4): the first request with a key claims it; its response is kept,
-- the body sealed under an `idempotency` key and bound to the row id, and replayed to a retry
-- of the same request until `expires_ms`. Keys are per principal (`owner`: a user or API key
-- id), which is the isolation: rows are reached through a system path only.
CREATE TABLE idempotency_keys (
    -- `idm_…`: the sealed body's AAD names it, so a row replaced after expiry takes a new one.
    id            TEXT    PRIMARY KEY,
    owner         TEXT    NOT NULL CHECK (length(owner) >= 1),
    key           TEXT    NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    -- The fingerprint of the request (method, path, body): a retry must match it.
    request_hash  BLOB    NOT NULL CHECK (length(request_hash) = 32),
    -- The response; all NULL while the request is in flight, all set once it completed.
    status        INTEGER CHECK (status IS NULL OR status BETWEEN 100 AND 599),
    headers       TEXT    CHECK (headers IS NULL OR json_valid(headers)),
    body_key      TEXT,
    body          BLOB,
    created_ms    INTEGER NOT NULL,
    expires_ms    INTEGER NOT NULL,
    UNIQUE (owner, key),
    CHECK ((status IS NULL AND headers IS NULL AND body_key IS NULL AND body IS NULL)
        OR (status IS NOT NULL AND headers IS NOT NULL AND body_key IS NOT NULL AND body IS NOT NULL))
);
-- Purging what expired.
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_ms);
-- Rewrap walks a column's rows by key id, then row id.
CREATE INDEX idempotency_keys_body_key ON idempotency_keys (body_key, id);
