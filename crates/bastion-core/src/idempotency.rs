//! Idempotent requests (SPEC P4): a client that retries a POST with the same `Idempotency-Key`
//! gets the first response again instead of a second effect.
//!
//! - same key, same request → the stored response, replayed;
//! - same key, another request (method, path, content type or body differ) → refused;
//! - same key while the first request still runs → refused as busy;
//! - keys are per principal and kept 24 hours.
//!
//! Stored responses are sealed by the vault (`idempotency` keys, bound to the row): a response
//! may carry a secret shown once, such as a new license key or API key.

use std::sync::Arc;

use bastion_store::{Begin, Scope, SealedColumn, Store, StoreError, StoredResponse};

use crate::Clock;
use crate::audit::{AuditEvent, AuditLog, Category, Outcome};
use crate::ids::new_id;
use crate::vault::{Field, Vault, VaultError};

const SCOPE: Scope = Scope::System("idempotency");
/// How long a key and its response are kept (24 h).
pub const DEFAULT_TTL_MS: i64 = 24 * 3_600_000;
/// Longest key accepted (Stripe's limit too).
pub const MAX_KEY_LEN: usize = 255;

#[derive(Debug, thiserror::Error)]
pub enum IdempotencyError {
    #[error("Idempotency-Key is 1 to {MAX_KEY_LEN} visible ASCII characters")]
    BadKey,
    #[error("idempotency storage: {0}")]
    Store(#[from] StoreError),
    #[error("sealing the stored response: {0}")]
    Vault(#[from] VaultError),
    #[error("the stored response is corrupt")]
    Corrupt,
    #[error("no randomness for an id")]
    Random,
}

/// A response as the edge hands it over and gets it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Headers to replay (name, value), already filtered by the edge.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What to do with a request that carries a key.
#[derive(Debug)]
pub enum Decision {
    /// Run it; then [`Idempotency::complete`] or [`Idempotency::release`] the row.
    Run {
        row_id: String,
    },
    /// Answer with the first response.
    Replay(Response),
    InFlight,
    Mismatch,
}

pub struct Idempotency {
    store: Arc<dyn Store>,
    vault: Arc<Vault>,
    clock: Arc<dyn Clock>,
    audit: Arc<AuditLog>,
    ttl_ms: i64,
}

/// SHA-256 over the parts that make two requests "the same", each length-prefixed so no two
/// different requests share a fingerprint.
pub fn fingerprint(
    method: &str,
    path_and_query: &str,
    content_type: &str,
    body: &[u8],
) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for part in [
        method.as_bytes(),
        path_and_query.as_bytes(),
        content_type.as_bytes(),
        body,
    ] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// A key must be short, visible ASCII (it is stored and compared as given).
pub fn check_key(key: &str) -> Result<(), IdempotencyError> {
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(IdempotencyError::BadKey);
    }
    Ok(())
}

impl Idempotency {
    pub fn new(
        store: Arc<dyn Store>,
        vault: Arc<Vault>,
        clock: Arc<dyn Clock>,
        audit: Arc<AuditLog>,
        ttl_ms: i64,
    ) -> Self {
        Self {
            store,
            vault,
            clock,
            audit,
            ttl_ms,
        }
    }

    /// Claims `key` for `owner`'s request, or says why not.
    #[tracing::instrument(skip_all)]
    pub async fn begin(
        &self,
        owner: &str,
        key: &str,
        request: &[u8; 32],
    ) -> Result<Decision, IdempotencyError> {
        check_key(key)?;
        let row_id = new_id("idm").map_err(|_| IdempotencyError::Random)?;
        let now = self.clock.now_ms();
        let begun = self
            .store
            .begin(
                &SCOPE,
                owner,
                key,
                request,
                &row_id,
                now,
                now.saturating_add(self.ttl_ms),
            )
            .await?;
        Ok(match begun {
            Begin::Started { row_id } => Decision::Run { row_id },
            Begin::InFlight => Decision::InFlight,
            Begin::Mismatch => Decision::Mismatch,
            Begin::Completed { row_id, response } => {
                let kept = self.open(&row_id, &response)?;
                // A replay answers without the handler: the audit trail still sees it.
                let ev =
                    AuditEvent::new(Category::Action, "idempotency.replayed", Outcome::Success)
                        .actor(owner.to_owned())
                        .details(serde_json::json!({ "record": row_id, "status": kept.status }));
                if let Err(e) = self.audit.record(ev).await {
                    tracing::error!(error = %e, "audit write failed");
                }
                Decision::Replay(kept)
            }
        })
    }

    fn open(&self, row_id: &str, stored: &StoredResponse) -> Result<Response, IdempotencyError> {
        let body = self.vault.open(
            &Field::of(SealedColumn::IdempotentResponse, row_id),
            &stored.body,
        )?;
        let headers: Vec<(String, String)> =
            serde_json::from_str(&stored.headers).map_err(|_| IdempotencyError::Corrupt)?;
        Ok(Response {
            status: stored.status,
            headers,
            body: body.to_vec(),
        })
    }

    /// Keeps the response of a request that ran, for replay.
    pub async fn complete(
        &self,
        row_id: &str,
        response: &Response,
    ) -> Result<(), IdempotencyError> {
        let sealed = self
            .vault
            .seal(
                &Field::of(SealedColumn::IdempotentResponse, row_id),
                &response.body,
            )
            .await?;
        let stored = StoredResponse {
            status: response.status,
            headers: serde_json::to_string(&response.headers)
                .map_err(|_| IdempotencyError::Corrupt)?,
            body_key: sealed.key_id,
            body: sealed.envelope,
        };
        self.store.complete(&SCOPE, row_id, &stored).await?;
        Ok(())
    }

    /// Frees the key of a request that failed without a response worth keeping (a server
    /// error, a conflict, a rate limit): the client's retry runs again.
    pub async fn release(&self, row_id: &str) -> Result<(), IdempotencyError> {
        self.store.release(&SCOPE, row_id).await?;
        Ok(())
    }

    /// Deletes expired keys (the cleanup job), up to `limit`.
    pub async fn purge(&self, limit: u32) -> Result<u64, IdempotencyError> {
        Ok(self
            .store
            .purge_idempotency(&SCOPE, self.clock.now_ms(), limit)
            .await?)
    }
}
