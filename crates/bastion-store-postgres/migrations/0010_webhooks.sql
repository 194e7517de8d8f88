-- Inbound webhooks (SPEC P2, P3): an org's endpoints, their signing secrets (sealed by the
-- vault under a `webhooks` key; several live at once during a rotation) and the inbox of
-- verified events.
--
-- Request work reaches endpoints and events through the permission map, like 0006–0008:
-- reading needs webhooks.read in the row's org; adding and deleting endpoints and retrying an
-- event webhooks.manage. Ingestion and processing have no principal (the signature is the
-- proof): they are the system path `Scope::System("webhooks")`, the only one that records,
-- claims and finishes events. Signing secrets are the system's alone: the app role has no
-- grant on them at all, so no request can read one back; a request adding secrets (a new
-- endpoint, a rotation) switches its transaction to the named system path
-- `System("webhook_secrets")` once the endpoint's own policy has admitted it.

CREATE TABLE bastion.webhook_endpoints (
    -- `whe_…`: part of the endpoint's URL and of its secrets' envelope context.
    id           TEXT    PRIMARY KEY,
    org_id       TEXT    NOT NULL REFERENCES bastion.orgs (id) ON DELETE CASCADE,
    provider     TEXT    NOT NULL
                 CHECK (provider IN ('stripe', 'github', 'slack', 'standard', 'twilio', 'generic')),
    name         TEXT    NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- The scheme's settings (JSON).
    config       TEXT    NOT NULL,
    created_ms   BIGINT  NOT NULL,
    created_by   TEXT    NOT NULL,
    disabled_ms  BIGINT,
    UNIQUE (org_id, name),
    -- The target of the secrets' and events' (endpoint_id, org_id) keys.
    UNIQUE (id, org_id)
);

CREATE TABLE bastion.webhook_secrets (
    -- `whs_…`
    id           TEXT    PRIMARY KEY,
    endpoint_id  TEXT    NOT NULL,
    org_id       TEXT    NOT NULL,
    -- The id of the key that sealed `secret` (`webhooks-v<N>`).
    secret_key   TEXT    NOT NULL,
    secret       BYTEA   NOT NULL,
    created_ms   BIGINT  NOT NULL,
    -- Set by a rotation: the secret verifies until then.
    expires_ms   BIGINT,
    FOREIGN KEY (endpoint_id, org_id)
        REFERENCES bastion.webhook_endpoints (id, org_id) ON DELETE CASCADE
);
-- An endpoint's secrets newest first; also the foreign key's child side.
CREATE INDEX webhook_secrets_endpoint ON bastion.webhook_secrets (endpoint_id, created_ms DESC, id DESC);
-- Status counts and retirement checks by key; rewrap pages by id.
CREATE INDEX webhook_secrets_secret_key ON bastion.webhook_secrets (secret_key, id);

CREATE TABLE bastion.webhook_events (
    -- `wev_…`
    id               TEXT    PRIMARY KEY,
    endpoint_id      TEXT    NOT NULL,
    org_id           TEXT    NOT NULL,
    provider         TEXT    NOT NULL,
    -- The provider's delivery id: a replay finds the first delivery.
    event_id         TEXT    NOT NULL,
    event_type       TEXT    NOT NULL,
    payload          BYTEA   NOT NULL,
    received_ms      BIGINT  NOT NULL,
    status           TEXT    NOT NULL
                     CHECK (status IN ('received', 'processing', 'processed', 'failed', 'dead')),
    attempts         BIGINT  NOT NULL DEFAULT 0 CHECK (attempts BETWEEN 0 AND 4294967295),
    -- When a received or failed event is due; the lease's end while processing.
    next_attempt_ms  BIGINT,
    last_error       TEXT,
    processed_ms     BIGINT,
    UNIQUE (endpoint_id, event_id),
    FOREIGN KEY (endpoint_id, org_id)
        REFERENCES bastion.webhook_endpoints (id, org_id) ON DELETE CASCADE
);
-- The workers' queue: what is due, oldest due first.
CREATE INDEX webhook_events_due ON bastion.webhook_events (status, next_attempt_ms);
-- An org's inbox newest first, of all endpoints or of one; the org key's child side.
CREATE INDEX webhook_events_org ON bastion.webhook_events (org_id, received_ms DESC, id DESC);
CREATE INDEX webhook_events_endpoint ON bastion.webhook_events (endpoint_id, received_ms DESC, id DESC);

ALTER TABLE bastion.webhook_endpoints ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
ALTER TABLE bastion.webhook_secrets   ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
ALTER TABLE bastion.webhook_events    ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;

-- System paths: ingestion, processing, secrets, rewrap (`bastion keys rewrap`), the CLI.
GRANT SELECT, INSERT, UPDATE, DELETE ON bastion.webhook_endpoints, bastion.webhook_secrets,
    bastion.webhook_events TO bastion_system;
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['webhook_endpoints', 'webhook_secrets', 'webhook_events'] LOOP
        EXECUTE format('CREATE POLICY system_all ON bastion.%I TO bastion_system '
                       'USING ((SELECT bastion.is_system())) WITH CHECK ((SELECT bastion.is_system()))', t);
    END LOOP;
END
$$;

-- Request work: endpoints are added and deleted, never edited; events are read, and an admin
-- may only send a failed or dead one back to the queue. Nothing of webhook_secrets.
GRANT SELECT, INSERT, DELETE ON bastion.webhook_endpoints TO bastion_app;
GRANT SELECT ON bastion.webhook_events TO bastion_app;
GRANT UPDATE (status, next_attempt_ms) ON bastion.webhook_events TO bastion_app;

CREATE POLICY endpoint_read ON bastion.webhook_endpoints FOR SELECT TO bastion_app
    USING (ARRAY['o:' || org_id] && (SELECT bastion.scope_tokens('webhooks.read')));
CREATE POLICY endpoint_create ON bastion.webhook_endpoints FOR INSERT TO bastion_app
    WITH CHECK (ARRAY['o:' || org_id] && (SELECT bastion.scope_tokens('webhooks.manage')));
CREATE POLICY endpoint_delete ON bastion.webhook_endpoints FOR DELETE TO bastion_app
    USING (ARRAY['o:' || org_id] && (SELECT bastion.scope_tokens('webhooks.manage')));

CREATE POLICY event_read ON bastion.webhook_events FOR SELECT TO bastion_app
    USING (ARRAY['o:' || org_id] && (SELECT bastion.scope_tokens('webhooks.read')));
-- A retry: only back to `received` (the column grant limits what else it may touch).
CREATE POLICY event_retry ON bastion.webhook_events FOR UPDATE TO bastion_app
    USING (ARRAY['o:' || org_id] && (SELECT bastion.scope_tokens('webhooks.manage')))
    WITH CHECK (ARRAY['o:' || org_id] && (SELECT bastion.scope_tokens('webhooks.manage'))
                AND status = 'received');
