-- A digest of what a delivery's signature covered (SPEC P3): some providers' delivery ids are not
-- signed, so a captured delivery re-sent under a new id must still be the same event.
ALTER TABLE webhook_events ADD COLUMN signed_digest BLOB CHECK (signed_digest IS NULL OR length(signed_digest) = 32);
CREATE UNIQUE INDEX webhook_events_signed ON webhook_events (endpoint_id, signed_digest);
