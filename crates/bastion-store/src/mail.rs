//! The transactional email outbox: mail is committed to the database first, and a dispatcher
//! delivers it with retries and backoff, so an unreachable mail server loses nothing.

use crate::{Scope, StoreResult};

/// A message to deliver. The body is sealed (AES-256-GCM) by the domain because it may carry
/// a magic link; the store never sees it in the clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundMail {
    /// `mail_…`
    pub id: String,
    pub recipient: String,
    /// Which template rendered it (for operators; carries nothing secret).
    pub template: String,
    pub sealed: Vec<u8>,
    /// The id of the key that sealed it, as the envelope names it (see [`crate::SealedColumn`]).
    pub sealed_key: String,
    pub created_ms: i64,
}

/// A message a dispatcher has leased for one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedMail {
    pub id: String,
    pub recipient: String,
    pub template: String,
    pub sealed: Vec<u8>,
    /// Including this one.
    pub attempts: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MailCounts {
    pub pending: u64,
    pub sent: u64,
    pub failed: u64,
}

#[async_trait::async_trait]
pub trait MailStore {
    /// Queues a message that stands alone (no link to commit with it).
    async fn enqueue_mail(&self, scope: &Scope, mail: &OutboundMail) -> StoreResult<()>;
    /// Leases up to `limit` due messages (the longest-waiting ones, returned in no particular
    /// order) until `now_ms + lease_ms` and counts the attempt. A leased message is invisible
    /// to other dispatchers (other nodes) until the lease ends.
    async fn claim_mail(
        &self,
        scope: &Scope,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<ClaimedMail>>;
    /// Marks a message delivered and drops its sealed body.
    async fn mail_sent(&self, scope: &Scope, id: &str, now_ms: i64) -> StoreResult<()>;
    /// Records a failed attempt: retried from `retry_at_ms`, or abandoned when `None` (its body
    /// is dropped). `error` must not contain message contents.
    async fn mail_failed(
        &self,
        scope: &Scope,
        id: &str,
        now_ms: i64,
        retry_at_ms: Option<i64>,
        error: &str,
    ) -> StoreResult<()>;
    async fn mail_counts(&self, scope: &Scope) -> StoreResult<MailCounts>;
}
