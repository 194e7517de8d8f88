//! Attempt counters that hold across nodes (SPEC A8, L6, L7): one atomic statement counts an
//! attempt *before* the expensive check runs, so parallel attempts cannot slip past the limit.

use crate::{Scope, StoreResult};

/// How many attempts a key may make, per window, and how long it is locked after that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleRule {
    pub max_attempts: u32,
    pub window_ms: i64,
    pub lockout_ms: i64,
}

/// What the counter says about the attempt just registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptDecision {
    /// Go ahead and evaluate; this is attempt number `attempt` in the current window.
    Allowed { attempt: u32 },
    /// Refused without evaluation until `until_ms`.
    Locked { until_ms: i64 },
}

#[async_trait::async_trait]
pub trait LockoutStore {
    /// Counts one attempt for `key` and decides, atomically.
    async fn register_attempt(
        &self,
        scope: &Scope,
        key: &str,
        now_ms: i64,
        rule: &ThrottleRule,
    ) -> StoreResult<AttemptDecision>;
    /// Until when `key` is locked, if it is locked at `now_ms`; counts nothing. For limits on
    /// failures only (SPEC L6), where the check comes first and only a failure is registered.
    async fn locked_until(&self, scope: &Scope, key: &str, now_ms: i64)
    -> StoreResult<Option<i64>>;
    /// Forgets `key`'s attempts (after a success). Stale counters go through
    /// [`crate::CleanupStore`].
    async fn clear_attempts(&self, scope: &Scope, key: &str) -> StoreResult<()>;
}
