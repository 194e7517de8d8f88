//! Storage of inbound webhooks (SPEC P2, P3): an org's endpoints, their signing secrets (sealed
//! by the vault, several live at once during a rotation) and the inbox of verified events.
//!
//! Only verified deliveries reach the inbox. `(endpoint_id, event_id)` is unique, so a replayed
//! or concurrently repeated delivery finds the first one instead of adding a second. Processing
//! is a state machine: `received` → `processing` (claimed with a lease, by one worker only) →
//! `processed`, or `failed` (retried later with backoff) → `dead` after the last attempt.
//!
//! Endpoints are managed in an org scope (`webhooks.read`, `webhooks.manage`); ingestion and
//! processing have no principal (the signature is the proof) and run as
//! `Scope::System("webhooks")`.

use crate::{Scope, StoreResult};

/// A configured endpoint (`whe_…`): `POST /v1/webhooks/{id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointRow {
    pub id: String,
    pub org_id: String,
    /// `stripe`, `github`, `slack`, `standard`, `twilio` or `generic`.
    pub provider: String,
    pub name: String,
    /// The scheme's settings as JSON (the generic header and encoding, Twilio's public URL …).
    pub config: String,
    pub created_ms: i64,
    pub created_by: String,
    /// A disabled endpoint verifies nothing and stores nothing.
    pub disabled_ms: Option<i64>,
}

/// A signing secret of an endpoint (`whs_…`), sealed under a `webhooks` key bound to its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSecretRow {
    pub id: String,
    pub endpoint_id: String,
    pub org_id: String,
    pub secret_key: String,
    pub secret: Vec<u8>,
    pub created_ms: i64,
    /// Set when a newer secret replaced it: it keeps verifying until then (the overlap).
    pub expires_ms: Option<i64>,
}

/// Where an event is in its processing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventStatus {
    Received,
    Processing,
    Processed,
    Failed,
    /// Failed on its last attempt; only an admin retry runs it again.
    Dead,
}

impl EventStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::Processing => "processing",
            Self::Processed => "processed",
            Self::Failed => "failed",
            Self::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "received" => Some(Self::Received),
            "processing" => Some(Self::Processing),
            "processed" => Some(Self::Processed),
            "failed" => Some(Self::Failed),
            "dead" => Some(Self::Dead),
            _ => None,
        }
    }
}

/// A verified event in the inbox (`wev_…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    pub id: String,
    pub endpoint_id: String,
    pub org_id: String,
    pub provider: String,
    /// The provider's delivery or event id; unique per endpoint.
    pub event_id: String,
    /// The provider's event type (`checkout.session.completed`, `push` …); may be empty.
    pub event_type: String,
    /// The verified raw body.
    pub payload: Vec<u8>,
    pub received_ms: i64,
    pub status: EventStatus,
    /// Processing attempts started so far.
    pub attempts: u32,
    /// When a `received` or `failed` event is next due; the lease's end while `processing`.
    pub next_attempt_ms: Option<i64>,
    /// The last failure's reason (never a secret).
    pub last_error: Option<String>,
    pub processed_ms: Option<i64>,
}

/// The outcome of [`WebhookStore::record_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// Stored now: this caller processes it.
    New(EventRow),
    /// Already in the inbox (a replay): the stored row, untouched.
    Duplicate(EventRow),
}

/// How a processing attempt ended, for [`WebhookStore::finish_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    Processed,
    /// Retried at `retry_at_ms`; `None` makes it `dead`.
    Failed {
        error: String,
        retry_at_ms: Option<i64>,
    },
}

#[async_trait::async_trait]
pub trait WebhookStore {
    /// Stores an endpoint with its first secrets in one transaction (`webhooks.manage`).
    async fn insert_endpoint(
        &self,
        scope: &Scope,
        endpoint: &EndpointRow,
        secrets: &[EndpointSecretRow],
    ) -> StoreResult<()>;
    async fn endpoint(&self, scope: &Scope, endpoint_id: &str) -> StoreResult<Option<EndpointRow>>;
    /// The org's endpoints, by name.
    async fn endpoints(&self, scope: &Scope, org_id: &str) -> StoreResult<Vec<EndpointRow>>;
    /// Deletes an endpoint with its secrets and events; `false` when there was none.
    async fn delete_endpoint(&self, scope: &Scope, endpoint_id: &str) -> StoreResult<bool>;
    /// The secrets still verifying at `now_ms` (no expiry, or an expiry after it), newest first.
    async fn live_secrets(
        &self,
        scope: &Scope,
        endpoint_id: &str,
        now_ms: i64,
    ) -> StoreResult<Vec<EndpointSecretRow>>;
    /// Adds `secret` and, in the same transaction, sets `expires_ms = overlap_until_ms` on every
    /// other secret of the endpoint that has no expiry or a later one (a rotation: a shorter
    /// overlap never lengthens an earlier one, and 0 retires them all now). `NotFound` when
    /// the endpoint does not exist in the scope.
    async fn rotate_secret(
        &self,
        scope: &Scope,
        secret: &EndpointSecretRow,
        overlap_until_ms: i64,
    ) -> StoreResult<()>;

    /// Inserts a verified event unless `(endpoint_id, event_id)` or `(endpoint_id,
    /// signed_digest)` is already there, atomically: of any number of concurrent calls with one
    /// event id or one digest exactly one sees `New`. `signed_digest` is a digest of what the
    /// signature covered, so a captured delivery re-sent under a new, unsigned id is the same
    /// event (SPEC P3).
    async fn record_event(
        &self,
        scope: &Scope,
        event: &EventRow,
        signed_digest: Option<&[u8; 32]>,
    ) -> StoreResult<Recorded>;
    /// Claims an event for processing: only a `received` or `failed` event due at `now_ms`, or
    /// a `processing` one whose lease has run out, becomes `processing` with
    /// `next_attempt_ms = now + lease_ms` and `attempts + 1`. `None` when another worker has
    /// it or there is nothing to do; of concurrent claims exactly one succeeds.
    async fn claim_event(
        &self,
        scope: &Scope,
        event_id: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> StoreResult<Option<EventRow>>;
    /// Ends a claimed attempt (only while `processing`; `false` otherwise).
    async fn finish_event(
        &self,
        scope: &Scope,
        event_id: &str,
        now_ms: i64,
        finish: &Finish,
    ) -> StoreResult<bool>;
    /// Ids of events due for processing at `now_ms`, oldest due first, at most `limit`
    /// (received/failed and due, or processing with an expired lease).
    async fn due_events(&self, scope: &Scope, now_ms: i64, limit: u32) -> StoreResult<Vec<String>>;
    async fn event(&self, scope: &Scope, event_id: &str) -> StoreResult<Option<EventRow>>;
    /// An org's events newest first (by `received_ms`, then id), optionally of one endpoint or
    /// status, with `received_ms < before_ms` when given, at most `limit`.
    async fn events(
        &self,
        scope: &Scope,
        org_id: &str,
        endpoint_id: Option<&str>,
        status: Option<EventStatus>,
        before_ms: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<EventRow>>;
    /// An admin retry (`webhooks.manage`): a `failed` or `dead` event becomes `received`, due at
    /// `now_ms`. `false` when it is in another state or not found.
    async fn retry_event(&self, scope: &Scope, event_id: &str, now_ms: i64) -> StoreResult<bool>;
}
