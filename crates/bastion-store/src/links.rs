//! Magic links (SPEC A7, later L5 and invitations): single-use, expiring, stored only as hashes,
//! consumed by one conditional statement, and voided by a newer link for the same purpose and
//! subject. Each link is written in the same transaction as the email that carries it.

use crate::mail::OutboundMail;
use crate::{Scope, StoreResult};

/// A link as stored: the hash of its token, never the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MagicLinkRow {
    pub token_hash: [u8; 32],
    /// `verify_email`, `reset_password`, `set_password`, …
    pub purpose: String,
    /// What the link acts on (a user id for the account links).
    pub subject: String,
    /// Where it was sent.
    pub email: String,
    pub created_ms: i64,
    pub expires_ms: i64,
}

/// What a consumed link was for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedLink {
    pub purpose: String,
    pub subject: String,
    pub email: String,
}

#[async_trait::async_trait]
pub trait MagicLinkStore {
    /// Stores `link` and queues `mail` (which carries it; `None` when the link is handed over
    /// another way, e.g. printed by the CLI) in one transaction, deleting every earlier
    /// unconsumed link for the same purpose and subject.
    async fn insert_link(
        &self,
        scope: &Scope,
        link: &MagicLinkRow,
        mail: Option<&OutboundMail>,
    ) -> StoreResult<()>;
    /// Consumes the link in one conditional update: it must exist for `purpose`, be unused,
    /// unexpired at `now_ms`, and be the newest link for its subject. Of concurrent calls with
    /// the same token, at most one gets `Some`.
    async fn consume_link(
        &self,
        scope: &Scope,
        token_hash: &[u8; 32],
        purpose: &str,
        now_ms: i64,
    ) -> StoreResult<Option<ConsumedLink>>;
}
