//! Attempt counters that hold across nodes (SPEC A8, L6, L7, T5).
//!
//! Two kinds of counter share one table:
//! - **failure limits** (sign-in, license activation): an attempt first takes an in-flight
//!   *reservation*, so N parallel guesses can never have more verified than the limit allows; a
//!   pass releases it, a failure turns it into a counted failure. Honest successes never count.
//!   The rules live in [`CounterState::reserve`] and [`CounterState::settle`], pure functions
//!   that both stores apply under a row lock, so the two databases cannot disagree.
//! - **attempt budgets** (mail per address, invitations): [`LockoutStore::register_attempt`]
//!   counts every attempt in one atomic statement.

use crate::{Scope, StoreResult};

/// How many attempts (budgets) or failures (limits) a key may have per window, and how long it
/// is locked after that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleRule {
    pub max_attempts: u32,
    pub window_ms: i64,
    pub lockout_ms: i64,
}

/// How long a reservation holds when its holder never settles it (a crashed node, a dropped
/// request): longer than the 30 s request deadline, so a live request never loses its place.
pub const RESERVATION_LEASE_MS: i64 = 60_000;

/// What the counter says about the attempt just registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptDecision {
    /// Go ahead and evaluate; this is attempt number `attempt` in the current window.
    Allowed { attempt: u32 },
    /// Refused without evaluation until `until_ms`.
    Locked { until_ms: i64 },
}

/// The answer to a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// A place is held: evaluate, then settle it.
    Granted,
    /// Counted failures plus reservations in flight fill the limit; one may free up once those
    /// settle. Not a lock: nothing is counted.
    Busy,
    /// Refused without evaluation until `until_ms`.
    Locked { until_ms: i64 },
}

/// How an evaluated attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// Succeeded, or was never evaluated: nothing is counted.
    Passed,
    /// Counts one failure.
    Failed,
}

/// The counter after a settle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    /// Failures counted in the current window after this settle.
    pub failures: u32,
    /// Set only for the settle whose failure started the lock, so a lock is announced (audited,
    /// mailed) once, however many requests it then refuses.
    pub lock_started_until_ms: Option<i64>,
}

/// One counter row as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterState {
    pub window_start_ms: i64,
    /// Failures (limits) or attempts (budgets) counted since `window_start_ms`.
    pub count: i64,
    pub locked_until_ms: i64,
    pub in_flight: i64,
    /// Reservations lapse together at this time unless they are settled before.
    pub in_flight_until_ms: i64,
}

impl CounterState {
    /// A counter seen for the first time at `now_ms`.
    pub fn new(now_ms: i64) -> Self {
        Self {
            window_start_ms: now_ms,
            count: 0,
            locked_until_ms: 0,
            in_flight: 0,
            in_flight_until_ms: 0,
        }
    }

    fn window_open(&self, now_ms: i64, rule: &ThrottleRule) -> bool {
        self.window_start_ms.saturating_add(rule.window_ms) > now_ms
    }

    fn live_failures(&self, now_ms: i64, rule: &ThrottleRule) -> i64 {
        if self.window_open(now_ms, rule) {
            self.count.max(0)
        } else {
            0
        }
    }

    fn live_in_flight(&self, now_ms: i64) -> i64 {
        if self.in_flight_until_ms > now_ms {
            self.in_flight.max(0)
        } else {
            0
        }
    }

    /// Takes a place for one evaluation, unless the key is locked or counted failures plus
    /// places already taken fill the limit.
    pub fn reserve(self, now_ms: i64, rule: &ThrottleRule) -> (Self, Reservation) {
        if self.locked_until_ms > now_ms {
            return (
                self,
                Reservation::Locked {
                    until_ms: self.locked_until_ms,
                },
            );
        }
        let failures = self.live_failures(now_ms, rule);
        let in_flight = self.live_in_flight(now_ms);
        if failures.saturating_add(in_flight) >= i64::from(rule.max_attempts) {
            return (self, Reservation::Busy);
        }
        let next = Self {
            window_start_ms: if self.window_open(now_ms, rule) {
                self.window_start_ms
            } else {
                now_ms
            },
            count: failures,
            in_flight: in_flight + 1,
            in_flight_until_ms: now_ms.saturating_add(RESERVATION_LEASE_MS),
            ..self
        };
        (next, Reservation::Granted)
    }

    /// Ends one evaluation: `reserved` releases the place it held; a failure is counted, and the
    /// failure that reaches the limit starts the lock and opens the next window when it ends.
    pub fn settle(
        self,
        now_ms: i64,
        rule: &ThrottleRule,
        outcome: AttemptOutcome,
        reserved: bool,
    ) -> (Self, Settled) {
        let in_flight = if reserved {
            (self.live_in_flight(now_ms) - 1).max(0)
        } else {
            self.live_in_flight(now_ms)
        };
        let window_start_ms = if self.window_open(now_ms, rule) {
            self.window_start_ms
        } else {
            now_ms
        };
        let failures =
            self.live_failures(now_ms, rule) + i64::from(outcome == AttemptOutcome::Failed);
        let mut next = Self {
            window_start_ms,
            count: failures,
            in_flight,
            ..self
        };
        let mut lock_started_until_ms = None;
        let locked = self.locked_until_ms > now_ms;
        if outcome == AttemptOutcome::Failed && !locked && failures >= i64::from(rule.max_attempts)
        {
            let until = now_ms.saturating_add(rule.lockout_ms);
            next.locked_until_ms = until;
            // The lock is the penalty for this window; the next one starts when it ends.
            next.window_start_ms = until;
            next.count = 0;
            lock_started_until_ms = Some(until);
        }
        let settled = Settled {
            failures: u32::try_from(failures).unwrap_or(u32::MAX),
            lock_started_until_ms,
        };
        (next, settled)
    }
}

/// A rule applied by [`LockoutStore::update_counters`]: the states read, to the states to write.
pub type CounterRule<'a> = &'a mut (dyn FnMut(&[CounterState]) -> Option<Vec<CounterState>> + Send);

/// [`CounterState::reserve`] over several counters: the new states if every one granted, else the
/// first refusal (and the states must not be written).
pub fn reserve_all(
    states: &[CounterState],
    rules: &[ThrottleRule],
    now_ms: i64,
) -> Result<Vec<CounterState>, Reservation> {
    let mut out = Vec::with_capacity(states.len());
    for (state, rule) in states.iter().zip(rules) {
        match state.reserve(now_ms, rule) {
            (next, Reservation::Granted) => out.push(next),
            (_, refusal) => return Err(refusal),
        }
    }
    Ok(out)
}

/// [`CounterState::settle`] over several counters.
pub fn settle_all(
    states: &[CounterState],
    rules: &[ThrottleRule],
    now_ms: i64,
    outcome: AttemptOutcome,
    reserved: bool,
) -> (Vec<CounterState>, Vec<Settled>) {
    states
        .iter()
        .zip(rules)
        .map(|(s, rule)| s.settle(now_ms, rule, outcome, reserved))
        .unzip()
}

#[async_trait::async_trait]
pub trait LockoutStore {
    /// Counts one attempt for `key` against a budget and decides, atomically.
    async fn register_attempt(
        &self,
        scope: &Scope,
        key: &str,
        now_ms: i64,
        rule: &ThrottleRule,
    ) -> StoreResult<AttemptDecision>;
    /// Runs `rule` on the counters of `keys` (a missing one as [`CounterState::new`]) while every
    /// other caller, on any node, waits, and writes the states it returns (`None`: nothing). The
    /// one backend-specific step of [`LockoutStore::reserve_attempts`] and
    /// [`LockoutStore::settle_attempts`], so both stores apply the same rules.
    async fn update_counters(
        &self,
        scope: &Scope,
        keys: &[&str],
        now_ms: i64,
        rule: CounterRule<'_>,
    ) -> StoreResult<()>;
    /// Takes an in-flight place for one evaluation under every one of `limits` (key, rule)
    /// ([`CounterState::reserve`]), in one transaction, atomically across nodes: all places or
    /// none. A refusal is the first one in `limits` order.
    async fn reserve_attempts(
        &self,
        scope: &Scope,
        limits: &[(&str, ThrottleRule)],
        now_ms: i64,
    ) -> StoreResult<Reservation> {
        let (keys, rules): (Vec<&str>, Vec<ThrottleRule>) = limits.iter().copied().unzip();
        let mut answer = Reservation::Granted;
        let mut rule = |states: &[CounterState]| match reserve_all(states, &rules, now_ms) {
            Ok(next) => Some(next),
            Err(refusal) => {
                answer = refusal;
                None
            }
        };
        self.update_counters(scope, &keys, now_ms, &mut rule)
            .await?;
        Ok(answer)
    }
    /// Settles an evaluation under every one of `limits` ([`CounterState::settle`]), in one
    /// transaction; the counters after it, in `limits` order. `reserved` says whether places were
    /// held (a failure may also be counted against a key nobody reserved, e.g. a
    /// distinct-accounts counter).
    async fn settle_attempts(
        &self,
        scope: &Scope,
        limits: &[(&str, ThrottleRule)],
        now_ms: i64,
        outcome: AttemptOutcome,
        reserved: bool,
    ) -> StoreResult<Vec<Settled>> {
        let (keys, rules): (Vec<&str>, Vec<ThrottleRule>) = limits.iter().copied().unzip();
        let mut answer = Vec::new();
        let mut rule = |states: &[CounterState]| {
            let (next, settled) = settle_all(states, &rules, now_ms, outcome, reserved);
            answer = settled;
            Some(next)
        };
        self.update_counters(scope, &keys, now_ms, &mut rule)
            .await?;
        Ok(answer)
    }
    /// Until when `key` is locked, if it is locked at `now_ms`; counts nothing.
    async fn locked_until(&self, scope: &Scope, key: &str, now_ms: i64)
    -> StoreResult<Option<i64>>;
    /// Forgets `key`'s attempts (a password reset proves the mailbox). Stale counters go through
    /// [`crate::CleanupStore`].
    async fn clear_attempts(&self, scope: &Scope, key: &str) -> StoreResult<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: ThrottleRule = ThrottleRule {
        max_attempts: 3,
        window_ms: 1_000,
        lockout_ms: 5_000,
    };

    #[test]
    fn a8_reservations_and_failures_together_never_exceed_the_limit() {
        let mut s = CounterState::new(0);
        for _ in 0..3 {
            let (n, r) = s.reserve(0, &RULE);
            assert_eq!(r, Reservation::Granted);
            s = n;
        }
        assert_eq!(s.reserve(0, &RULE).1, Reservation::Busy);
        // A pass frees its place and counts nothing.
        let (s, settled) = s.settle(0, &RULE, AttemptOutcome::Passed, true);
        assert_eq!(settled.failures, 0);
        let (s, r) = s.reserve(0, &RULE);
        assert_eq!(r, Reservation::Granted);
        // Two failures keep their places as counted failures: still full.
        let (s, _) = s.settle(0, &RULE, AttemptOutcome::Failed, true);
        let (s, settled) = s.settle(0, &RULE, AttemptOutcome::Failed, true);
        assert_eq!((settled.failures, settled.lock_started_until_ms), (2, None));
        assert_eq!(s.in_flight, 1);
        assert_eq!(s.reserve(0, &RULE).1, Reservation::Busy);
        // The third failure locks, once.
        let (s, settled) = s.settle(0, &RULE, AttemptOutcome::Failed, true);
        assert_eq!(settled.lock_started_until_ms, Some(5_000));
        assert_eq!(
            s.reserve(4_999, &RULE).1,
            Reservation::Locked { until_ms: 5_000 }
        );
        let (s, settled) = s.settle(10, &RULE, AttemptOutcome::Failed, false);
        assert_eq!(settled.lock_started_until_ms, None, "a lock starts once");
        // After the lock a new window opens with the failures that came during it.
        let (s, r) = s.reserve(5_000, &RULE);
        assert_eq!(r, Reservation::Granted);
        assert_eq!(s.count, 1);
    }

    #[test]
    fn a8_an_unsettled_reservation_lapses_after_its_lease() {
        let (s, _) = CounterState::new(0).reserve(0, &RULE);
        let (s, _) = s.reserve(0, &RULE);
        let (s, _) = s.reserve(0, &RULE);
        assert_eq!(
            s.reserve(RESERVATION_LEASE_MS - 1, &RULE).1,
            Reservation::Busy
        );
        assert_eq!(
            s.reserve(RESERVATION_LEASE_MS, &RULE).1,
            Reservation::Granted
        );
        // A settle after the lapse never drives the count below zero.
        let (s, _) = s.settle(RESERVATION_LEASE_MS, &RULE, AttemptOutcome::Passed, true);
        assert_eq!(s.in_flight, 0);
    }

    #[test]
    fn a8_failures_age_out_with_their_window() {
        let mut s = CounterState::new(0);
        for _ in 0..2 {
            let (n, _) = s.settle(0, &RULE, AttemptOutcome::Failed, false);
            s = n;
        }
        let (s, settled) = s.settle(999, &RULE, AttemptOutcome::Failed, false);
        assert!(
            settled.lock_started_until_ms.is_some(),
            "third inside the window"
        );
        let s2 = CounterState::new(0);
        let (s2, _) = s2.settle(0, &RULE, AttemptOutcome::Failed, false);
        let (s2, _) = s2.settle(0, &RULE, AttemptOutcome::Failed, false);
        let (_, settled) = s2.settle(1_000, &RULE, AttemptOutcome::Failed, false);
        assert_eq!(
            (settled.failures, settled.lock_started_until_ms),
            (1, None),
            "the window had closed"
        );
        assert!(s.locked_until_ms > 0);
    }
}
