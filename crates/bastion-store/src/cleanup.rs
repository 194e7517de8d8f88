//! Purging what has expired or been revoked (SPEC A6), in bounded batches.

use crate::{Scope, StoreResult};

/// A kind of row that can be purged once its life is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purgeable {
    /// Sessions revoked or past their idle or absolute expiry, with their refresh tokens.
    EndedSessions,
    /// Magic links used or expired.
    SpentLinks,
    /// Lockout counters whose window (`window_ms` long) and lock have both passed.
    StaleAttempts { window_ms: i64 },
    /// Mail delivered or abandoned more than `retention_ms` ago.
    FinishedMail { retention_ms: i64 },
    /// Invitations never accepted and past their expiry (accepted ones stay as history).
    ExpiredInvitations,
    /// Revocations of deactivated machines whose certificates' leases have all ended.
    LapsedMachineRevocations,
}

impl Purgeable {
    pub fn name(self) -> &'static str {
        match self {
            Self::EndedSessions => "sessions",
            Self::SpentLinks => "magic_links",
            Self::StaleAttempts { .. } => "attempt_counters",
            Self::FinishedMail { .. } => "email_outbox",
            Self::ExpiredInvitations => "invitations",
            Self::LapsedMachineRevocations => "revoked_machines",
        }
    }
}

#[async_trait::async_trait]
pub trait CleanupStore {
    /// How many rows [`CleanupStore::purge`] would remove at `now_ms`.
    async fn count_purgeable(
        &self,
        scope: &Scope,
        what: Purgeable,
        now_ms: i64,
    ) -> StoreResult<u64>;
    /// Deletes up to `limit` such rows; returns how many.
    async fn purge(
        &self,
        scope: &Scope,
        what: Purgeable,
        now_ms: i64,
        limit: u32,
    ) -> StoreResult<u64>;
}
