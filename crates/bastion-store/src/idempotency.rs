//! Storage of idempotency keys (SPEC P4): the first request with a key claims it, its response
//! is kept (sealed: a response may carry a secret shown once, like a license key) and replayed
//! to a retry with the same key and the same request, for 24 hours.
//!
//! Keys are per principal (`owner`: a user id or an API key id), so one client can never see
//! another's response. Rows are reached only through the system path
//! `Scope::System("idempotency")`: the middleware runs before any handler, and the owner column
//! is the isolation.

use crate::{Scope, StoreResult};

/// A stored response, its body sealed by the vault (`idempotency` keys) and bound to the row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    /// The response headers worth replaying (content type, location …) as JSON.
    pub headers: String,
    pub body_key: String,
    pub body: Vec<u8>,
}

/// The outcome of [`IdempotencyStore::begin`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// The key was free (or expired): this request runs. The row's id binds the sealed body.
    Started { row_id: String },
    /// The same key is still running for another request.
    InFlight,
    /// The key was used with a different request (method, path or body).
    Mismatch,
    /// The same request already completed: replay this.
    Completed {
        row_id: String,
        response: StoredResponse,
    },
}

#[async_trait::async_trait]
pub trait IdempotencyStore {
    /// Claims `(owner, key)` for a request whose fingerprint is `request_hash`, atomically: of
    /// concurrent calls exactly one is `Started`. A row past its `expires_ms` counts as free
    /// and is replaced. `row_id` is the id the new row takes (`idm_…`).
    #[allow(clippy::too_many_arguments)]
    async fn begin(
        &self,
        scope: &Scope,
        owner: &str,
        key: &str,
        request_hash: &[u8; 32],
        row_id: &str,
        now_ms: i64,
        expires_ms: i64,
    ) -> StoreResult<Begin>;
    /// Stores the response of a started row (only while in flight; `false` otherwise).
    async fn complete(
        &self,
        scope: &Scope,
        row_id: &str,
        response: &StoredResponse,
    ) -> StoreResult<bool>;
    /// Frees a started row without a response (the request failed before it changed
    /// anything, or with a server error), so a retry runs again.
    async fn release(&self, scope: &Scope, row_id: &str) -> StoreResult<bool>;
    /// Deletes up to `limit` rows expired at `now_ms`; returns how many.
    async fn purge_idempotency(&self, scope: &Scope, now_ms: i64, limit: u32) -> StoreResult<u64>;
}
