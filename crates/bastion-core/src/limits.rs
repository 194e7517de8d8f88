//! Failure limits (SPEC A8, L6): each evaluation of a credential first reserves a place under
//! every limit that applies, waits briefly while the places are all taken by evaluations still
//! running, and settles afterwards: a pass releases its places, a failure counts. So honest
//! successes never count against anyone, and parallel guesses never get more verified than the
//! limit. The counters live in the database ([`bastion_store::LockoutStore`]), so the limits hold
//! across nodes.

use std::sync::Arc;
use std::time::Duration;

use bastion_store::{AttemptOutcome, Reservation, Scope, Settled, Store, StoreError, ThrottleRule};

use crate::Clock;

/// How long an attempt waits for a place while the limit is full of evaluations in flight
/// (a few password hashes' time), before it is refused as busy.
const BUSY_WAIT: Duration = Duration::from_secs(5);
const BUSY_BACKOFF_FIRST: Duration = Duration::from_millis(5);
const BUSY_BACKOFF_MAX: Duration = Duration::from_millis(100);

/// One counter an evaluation is held against: its key (hashed, see `accounts::attempt_key`) and
/// its rule.
#[derive(Debug, Clone)]
pub struct Limit {
    pub key: String,
    pub rule: ThrottleRule,
}

/// Why no place was had.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("locked")]
    Locked { until_ms: i64 },
    /// The limit stayed full of evaluations in flight for the whole wait.
    #[error("busy")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Refusal {
    /// Seconds to tell the client to wait, rounded up, at least 1.
    pub fn retry_after_secs(&self, now_ms: i64) -> u64 {
        match self {
            Self::Locked { until_ms } => {
                u64::try_from(((until_ms - now_ms).max(1) + 999) / 1000).unwrap_or(1)
            }
            Self::Busy | Self::Store(_) => 1,
        }
    }
}

/// Reserves and settles places under failure limits.
pub struct Limiter {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    scope: Scope,
}

impl Limiter {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, scope: Scope) -> Self {
        Self {
            store,
            clock,
            scope,
        }
    }

    /// Takes a place under every limit at once (all or none), waiting while one is busy.
    pub async fn reserve(&self, limits: Vec<Limit>) -> Result<Held, Refusal> {
        let deadline = tokio::time::Instant::now() + BUSY_WAIT;
        let mut backoff = BUSY_BACKOFF_FIRST;
        loop {
            let now = self.clock.now_ms();
            match self
                .store
                .reserve_attempts(&self.scope, &pairs(&limits), now)
                .await?
            {
                Reservation::Granted => {
                    return Ok(Held {
                        store: self.store.clone(),
                        clock: self.clock.clone(),
                        scope: self.scope.clone(),
                        limits,
                    });
                }
                Reservation::Locked { until_ms } => return Err(Refusal::Locked { until_ms }),
                Reservation::Busy if tokio::time::Instant::now() + backoff > deadline => {
                    return Err(Refusal::Busy);
                }
                Reservation::Busy => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BUSY_BACKOFF_MAX);
                }
            }
        }
    }

    /// Records an outcome against a key that holds no reservation (e.g. distinct accounts that
    /// failed from one address); a pass counts nothing but takes the same path.
    pub async fn record(
        &self,
        limit: &Limit,
        outcome: AttemptOutcome,
    ) -> Result<Settled, StoreError> {
        let settled = self
            .store
            .settle_attempts(
                &self.scope,
                &[(limit.key.as_str(), limit.rule)],
                self.clock.now_ms(),
                outcome,
                false,
            )
            .await?;
        settled
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::Corrupt("a settle returned no counter".into()))
    }

    /// Until when `key` is locked, counting nothing.
    pub async fn locked_until(&self, key: &str) -> Result<Option<i64>, StoreError> {
        self.store
            .locked_until(&self.scope, key, self.clock.now_ms())
            .await
    }
}

/// Places held for one evaluation. Settle it; one dropped unsettled (a cancelled request) is
/// released in the background, and failing that its lease lapses.
#[must_use = "settle the reservation with the evaluation's outcome"]
pub struct Held {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    scope: Scope,
    limits: Vec<Limit>,
}

impl Held {
    /// Settles every place with `outcome`; returns, per limit in reservation order, the counter
    /// after it. A counter that could not be written is logged and left to its lease: the
    /// answer to the caller does not change.
    pub async fn settle(mut self, outcome: AttemptOutcome) -> Vec<Option<Settled>> {
        let limits = std::mem::take(&mut self.limits);
        settle_all(&*self.store, &*self.clock, &self.scope, &limits, outcome).await
    }
}

fn pairs(limits: &[Limit]) -> Vec<(&str, ThrottleRule)> {
    limits.iter().map(|l| (l.key.as_str(), l.rule)).collect()
}

async fn settle_all(
    store: &dyn Store,
    clock: &dyn Clock,
    scope: &Scope,
    limits: &[Limit],
    outcome: AttemptOutcome,
) -> Vec<Option<Settled>> {
    match store
        .settle_attempts(scope, &pairs(limits), clock.now_ms(), outcome, true)
        .await
    {
        Ok(settled) => settled.into_iter().map(Some).collect(),
        Err(e) => {
            tracing::error!(error = %e, "a reservation was not settled; it lapses with its lease");
            vec![None; limits.len()]
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.limits.is_empty() {
            return;
        }
        let limits = std::mem::take(&mut self.limits);
        let (store, clock, scope) = (self.store.clone(), self.clock.clone(), self.scope.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                settle_all(&*store, &*clock, &scope, &limits, AttemptOutcome::Passed).await;
            });
        }
    }
}
