-- Inbound webhooks (SPEC P2, P3): an org's endpoints, their signing secrets (sealed by the
-- vault under a `webhooks` key; several live at once during a rotation) and the inbox of
-- verified events. The store's queries apply the scope (docs/tenancy.md); the permission
-- decision is bastion-core's. Ingestion and processing are system paths.

CREATE TABLE webhook_endpoints (
    -- `whe_…`: part of the endpoint's URL and of its secrets' envelope context.
    id           TEXT    PRIMARY KEY,
    org_id       TEXT    NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    provider     TEXT    NOT NULL
                 CHECK (provider IN ('stripe', 'github', 'slack', 'standard', 'twilio', 'generic')),
    name         TEXT    NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- The scheme's settings (JSON).
    config       TEXT    NOT NULL CHECK (json_valid(config)),
    created_ms   INTEGER NOT NULL,
    created_by   TEXT    NOT NULL,
    disabled_ms  INTEGER,
    UNIQUE (org_id, name),
    -- The target of the secrets' and events' (endpoint_id, org_id) keys.
    UNIQUE (id, org_id)
);

CREATE TABLE webhook_secrets (
    -- `whs_…`
    id           TEXT    PRIMARY KEY,
    endpoint_id  TEXT    NOT NULL,
    org_id       TEXT    NOT NULL,
    -- The id of the key that sealed `secret` (`webhooks-v<N>`).
    secret_key   TEXT    NOT NULL,
    secret       BLOB    NOT NULL,
    created_ms   INTEGER NOT NULL,
    -- Set by a rotation: the secret verifies until then.
    expires_ms   INTEGER,
    FOREIGN KEY (endpoint_id, org_id) REFERENCES webhook_endpoints (id, org_id) ON DELETE CASCADE
);
-- An endpoint's secrets newest first; also the foreign key's child side.
CREATE INDEX webhook_secrets_endpoint ON webhook_secrets (endpoint_id, created_ms, id);
-- Status counts and retirement checks by key; rewrap pages by id.
CREATE INDEX webhook_secrets_secret_key ON webhook_secrets (secret_key, id);

CREATE TABLE webhook_events (
    -- `wev_…`
    id               TEXT    PRIMARY KEY,
    endpoint_id      TEXT    NOT NULL,
    org_id           TEXT    NOT NULL,
    provider         TEXT    NOT NULL,
    -- The provider's delivery id: a replay finds the first delivery.
    event_id         TEXT    NOT NULL,
    event_type       TEXT    NOT NULL,
    payload          BLOB    NOT NULL,
    received_ms      INTEGER NOT NULL,
    status           TEXT    NOT NULL
                     CHECK (status IN ('received', 'processing', 'processed', 'failed', 'dead')),
    attempts         INTEGER NOT NULL DEFAULT 0 CHECK (attempts BETWEEN 0 AND 4294967295),
    -- When a received or failed event is due; the lease's end while processing.
    next_attempt_ms  INTEGER,
    last_error       TEXT,
    processed_ms     INTEGER,
    UNIQUE (endpoint_id, event_id),
    FOREIGN KEY (endpoint_id, org_id) REFERENCES webhook_endpoints (id, org_id) ON DELETE CASCADE
);
-- The workers' queue: what is due, oldest due first.
CREATE INDEX webhook_events_due ON webhook_events (status, next_attempt_ms);
-- An org's inbox newest first, of all endpoints or of one; the org key's child side.
CREATE INDEX webhook_events_org ON webhook_events (org_id, received_ms DESC, id DESC);
CREATE INDEX webhook_events_endpoint ON webhook_events (endpoint_id, received_ms DESC, id DESC);
