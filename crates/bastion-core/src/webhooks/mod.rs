//! Inbound webhooks (SPEC P2, P3, P6): per-org endpoints whose deliveries are verified over the
//! raw body against every live secret, an inbox that stores each verified event once, and a
//! processing state machine with retries.
//!
//! Fail closed (P2): an endpoint without a usable secret answers 500 and audits it; a bad,
//! stale or future signature is refused; nothing unverified is ever stored. A replay of a
//! stored event answers 2xx without processing it again (P3).

pub mod endpoints;
mod inbox;
pub mod signature;

use std::sync::Arc;

use bastion_store::{EndpointRow, EventRow, Scope, Store, StoreError};

use crate::Clock;
use crate::audit::{AuditEvent, AuditLog};
use crate::orgs::{OrgError, Orgs};
use crate::vault::{Vault, VaultError};

pub use endpoints::{EndpointConfig, EndpointInput, Handler, Provider};
pub use inbox::{Ingested, RetryPolicy};

/// The path ingestion and processing run on: no principal, the signature is the proof.
pub const SYSTEM: Scope = Scope::System("webhooks");

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error(transparent)]
    Org(#[from] OrgError),
    #[error("{0}")]
    Invalid(String),
    #[error("no such webhook endpoint or event")]
    NotFound,
    #[error("only a failed or dead event can be retried")]
    NotRetryable,
    /// P2: the endpoint has no live secret; answered 500, audited, nothing stored.
    #[error("the webhook endpoint has no signing secret configured")]
    SecretMissing,
    #[error("webhook signature rejected: {0}")]
    Rejected(signature::SignatureError),
    #[error("the verified body has no event id")]
    NoEventId,
    #[error("stored webhook data is corrupt: {0}")]
    Corrupt(String),
    #[error("webhook secrets: {0}")]
    Vault(#[from] VaultError),
    #[error("webhook storage: {0}")]
    Store(StoreError),
    #[error("no randomness for an id")]
    Random,
}

impl From<StoreError> for WebhookError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound | StoreError::Forbidden => Self::NotFound,
            StoreError::Conflict(_) => {
                Self::Invalid("an endpoint of that name already exists".into())
            }
            other => Self::Store(other),
        }
    }
}

/// Acts on a verified event once it is in the inbox. Must be idempotent in its own effects
/// (a crash after acting and before the event is marked processed runs it again).
#[async_trait::async_trait]
pub trait EventProcessor: Send + Sync {
    /// `Ok` marks the event processed; `Err(reason)` schedules a retry. The reason is stored
    /// and shown to admins, so it must never contain a secret.
    async fn process(&self, endpoint: &EndpointRow, event: &EventRow) -> Result<(), String>;
}

pub struct Webhooks {
    orgs: Arc<Orgs>,
    store: Arc<dyn Store>,
    vault: Arc<Vault>,
    audit: Arc<AuditLog>,
    clock: Arc<dyn Clock>,
    retry: RetryPolicy,
    payments: Option<Arc<dyn EventProcessor>>,
}

impl Webhooks {
    pub fn new(
        orgs: Arc<Orgs>,
        store: Arc<dyn Store>,
        vault: Arc<Vault>,
        audit: Arc<AuditLog>,
        clock: Arc<dyn Clock>,
        retry: RetryPolicy,
    ) -> Self {
        Self {
            orgs,
            store,
            vault,
            audit,
            clock,
            retry,
            payments: None,
        }
    }

    /// Sets what `Handler::Payments` endpoints run (the payments service, built later because
    /// it needs licensing and wallets).
    pub fn with_payments(mut self, payments: Arc<dyn EventProcessor>) -> Self {
        self.payments = Some(payments);
        self
    }

    async fn record(&self, ev: AuditEvent) {
        if let Err(e) = self.audit.record(ev).await {
            tracing::error!(error = %e, "audit write failed");
        }
    }
}
