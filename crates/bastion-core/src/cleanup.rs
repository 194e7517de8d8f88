//! Cleanup (SPEC A6): ended sessions with their refresh tokens, spent magic links, stale
//! lockout counters and finished mail are purged in bounded batches, so a large backlog never
//! holds a long lock.

use std::sync::Arc;

use bastion_store::{Purgeable, Scope, Store, StoreError};

use crate::Clock;

const SCOPE: Scope = Scope::System("cleanup");

#[derive(Debug, Clone, Copy)]
pub struct CleanupPolicy {
    /// The login-attempt window: a counter is stale once it and its lock have passed.
    pub attempt_window_ms: i64,
    /// Delivered or abandoned mail is kept this long (for operators), then purged.
    pub mail_retention_ms: i64,
    /// Rows deleted per statement.
    pub batch: u32,
}

impl Default for CleanupPolicy {
    fn default() -> Self {
        Self {
            attempt_window_ms: 15 * 60_000,
            mail_retention_ms: 7 * 86_400_000,
            batch: 1_000,
        }
    }
}

pub struct Cleanup {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    policy: CleanupPolicy,
}

impl Cleanup {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, policy: CleanupPolicy) -> Self {
        Self {
            store,
            clock,
            policy,
        }
    }

    fn kinds(&self) -> [Purgeable; 6] {
        [
            Purgeable::EndedSessions,
            Purgeable::SpentLinks,
            Purgeable::StaleAttempts {
                window_ms: self.policy.attempt_window_ms,
            },
            Purgeable::FinishedMail {
                retention_ms: self.policy.mail_retention_ms,
            },
            Purgeable::ExpiredInvitations,
            Purgeable::LapsedMachineRevocations,
        ]
    }

    /// What a run would remove now, per kind (`bastion cleanup --dry-run`).
    pub async fn preview(&self) -> Result<Vec<(&'static str, u64)>, StoreError> {
        let now = self.clock.now_ms();
        let mut out = Vec::new();
        for what in self.kinds() {
            out.push((
                what.name(),
                self.store.count_purgeable(&SCOPE, what, now).await?,
            ));
        }
        Ok(out)
    }

    /// Purges everything that has ended, batch by batch; returns how many rows per kind.
    #[tracing::instrument(skip_all)]
    pub async fn run(&self) -> Result<Vec<(&'static str, u64)>, StoreError> {
        let now = self.clock.now_ms();
        let mut out = Vec::new();
        for what in self.kinds() {
            let mut total = 0;
            loop {
                let n = self
                    .store
                    .purge(&SCOPE, what, now, self.policy.batch)
                    .await?;
                total += n;
                if n < u64::from(self.policy.batch) {
                    break;
                }
                // Let other work in between batches.
                tokio::task::yield_now().await;
            }
            if total > 0 {
                tracing::info!(kind = what.name(), rows = total, "purged");
            }
            out.push((what.name(), total));
        }
        Ok(out)
    }
}
