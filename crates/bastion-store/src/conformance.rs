//! The conformance suite: every backend runs these against a real database.
//!
//! A backend's tests call [`conformance_tests!`] with an async expression that yields
//! `Option<(Arc<store>, guard)>` for a fresh, migrated, empty database (`None` skips: the backend
//! is not configured); the guard keeps the database alive until the test ends. Each function
//! below becomes one test there.

// Test code (behind the `conformance` feature): a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use crate::{
    API_KEY_TOUCH_MS, ActivityRow, ApiKeyRow, AttemptDecision, AttemptOutcome, ChainHead,
    CheckpointRecord, InvitationRow, KeyKind, MagicLinkRow, MemberChange, MemberRow, NewAuditEvent,
    OrgRow, OutboundMail, ProjectRow, Purgeable, Reservation, Rewrapped, Rotation, Scope,
    SealedColumn, SealedCount, SealedRow, SecretMeta, SecretRow, SecretUpdate, SessionRow, Store,
    StoreError, StoredKey, ThrottleRule, UserRow,
};

pub mod idempotency;
pub mod licenses;
pub mod wallet;
pub mod webhooks;
pub use idempotency::*;
pub use licenses::*;
pub use wallet::*;
pub use webhooks::*;

const SYS: Scope = Scope::System("conformance");

fn event(i: usize) -> NewAuditEvent {
    NewAuditEvent {
        ts_ms: 1_700_000_000_000 + i as i64,
        actor: Some(format!("usr_{i}")),
        org_id: if i.is_multiple_of(2) {
            Some("org_a".into())
        } else {
            None
        },
        category: "admin".into(),
        action: format!("action.{i}"),
        outcome: "success".into(),
        details: format!("{{\"i\":{i}}}"),
    }
}

/// A stand-in for the domain's hash: deterministic, depends on the head, the seq and the event.
fn seal(head: &ChainHead, seq: i64, ev: &NewAuditEvent) -> [u8; 32] {
    let mut out = head.hash;
    for (i, b) in seq
        .to_be_bytes()
        .iter()
        .chain(ev.action.as_bytes())
        .chain(ev.details.as_bytes())
        .enumerate()
    {
        out[i % 32] = out[i % 32].rotate_left(3) ^ b;
    }
    out
}

/// Appends keep seq contiguous from 1 and hand the sealer the true predecessor.
pub async fn audit_append_builds_a_contiguous_chain<S: Store>(store: Arc<S>) {
    assert_eq!(store.head(&SYS).await.unwrap(), ChainHead::GENESIS);
    let h1 = store.append(&SYS, &[event(1)], &seal).await.unwrap();
    assert_eq!(h1.seq, 1);
    let batch: Vec<_> = (2..=10).map(event).collect();
    let h10 = store.append(&SYS, &batch, &seal).await.unwrap();
    assert_eq!(h10.seq, 10);
    assert_eq!(store.head(&SYS).await.unwrap(), h10);
    let rows = store.events_after(&SYS, 0, 100).await.unwrap();
    assert_eq!(rows.len(), 10);
    let mut prev = ChainHead::GENESIS;
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r.seq, i as i64 + 1);
        assert_eq!(r.event, event(i + 1), "event round-trips unchanged");
        assert_eq!(r.prev_hash, prev.hash);
        assert_eq!(r.hash, seal(&prev, r.seq, &r.event));
        prev = ChainHead {
            seq: r.seq,
            hash: r.hash,
        };
    }
    let page = store.events_after(&SYS, 4, 3).await.unwrap();
    assert_eq!(
        page.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![5, 6, 7]
    );
    assert!(
        store.append(&SYS, &[], &seal).await.unwrap() == h10,
        "an empty batch changes nothing"
    );
}

/// Concurrent appenders never fork the chain or reuse a seq.
pub async fn audit_concurrent_appends_stay_linear<S: Store>(store: Arc<S>) {
    let mut tasks = Vec::new();
    for t in 0..16 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            for j in 0..5 {
                s.append(&SYS, &[event(t * 100 + j), event(t * 100 + j + 50)], &seal)
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let rows = store.events_after(&SYS, 0, 1000).await.unwrap();
    assert_eq!(rows.len(), 160);
    let mut prev = ChainHead::GENESIS;
    for r in &rows {
        assert_eq!(r.seq, prev.seq + 1);
        assert_eq!(r.prev_hash, prev.hash, "chain forked at {}", r.seq);
        assert_eq!(r.hash, seal(&prev, r.seq, &r.event));
        prev = ChainHead {
            seq: r.seq,
            hash: r.hash,
        };
    }
}

/// Checkpoints round-trip in order and one per size.
pub async fn audit_checkpoints_are_unique_per_size<S: Store>(store: Arc<S>) {
    let cp = |size: i64| CheckpointRecord {
        size,
        head_hash: [size as u8; 32],
        ts_ms: 1_700_000_000_000 + size,
        key_id: "audit-v1-abcd".into(),
        signature: vec![size as u8; 64],
    };
    store.insert_checkpoint(&SYS, &cp(5)).await.unwrap();
    store.insert_checkpoint(&SYS, &cp(2)).await.unwrap();
    let mut dup = cp(5);
    dup.signature = vec![0; 64];
    store.insert_checkpoint(&SYS, &dup).await.unwrap();
    assert_eq!(store.checkpoints(&SYS).await.unwrap(), vec![cp(2), cp(5)]);
}

/// The canary is written once; keys are unique per purpose and version.
pub async fn keyring_canary_and_keys<S: Store>(store: Arc<S>) {
    assert_eq!(store.canary(&SYS).await.unwrap(), None);
    assert_eq!(
        store.init_canary(&SYS, b"first", 1).await.unwrap(),
        b"first"
    );
    assert_eq!(
        store.init_canary(&SYS, b"second", 2).await.unwrap(),
        b"first",
        "never overwritten"
    );
    assert_eq!(
        store.canary(&SYS).await.unwrap().as_deref(),
        Some(b"first".as_slice())
    );
    let key = StoredKey {
        purpose: "audit".into(),
        version: 1,
        key_id: "audit-v1-0011".into(),
        algorithm: "Ed25519".into(),
        wrapped: vec![1, 2, 3],
        public_key: Some(vec![4; 32]),
        created_ms: 42,
        retired: false,
    };
    store.insert_key(&SYS, &key).await.unwrap();
    assert!(matches!(
        store.insert_key(&SYS, &key).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.keys(&SYS).await.unwrap(), vec![key]);
}

/// Tenant scopes see no system tables: key ring and audit chain are system paths only.
pub async fn non_system_scopes_cannot_touch_system_tables<S: Store>(store: Arc<S>) {
    store.init_canary(&SYS, b"c", 1).await.unwrap();
    store.append(&SYS, &[event(1)], &seal).await.unwrap();
    for scope in [
        Scope::Anonymous,
        Scope::User {
            user_id: "usr_x".into(),
            org_id: Some("org_a".into()),
        },
    ] {
        assert!(
            store.canary(&scope).await.is_err() || store.canary(&scope).await.unwrap().is_none()
        );
        assert!(
            store
                .keys(&scope)
                .await
                .map(|k| k.is_empty())
                .unwrap_or(true)
        );
        assert!(
            store.append(&scope, &[event(2)], &seal).await.is_err(),
            "{scope:?} appended to the chain"
        );
    }
    assert_eq!(store.head(&SYS).await.unwrap().seq, 1);
}

const RULE: ThrottleRule = ThrottleRule {
    max_attempts: 10,
    window_ms: 15 * 60_000,
    lockout_ms: 15 * 60_000,
};

/// A8: 20 simultaneous attempts against a limit of 10: exactly 10 are let through, the rest
/// are locked, and the lock lasts its full term, then the window starts over.
pub async fn a8_concurrent_attempts_cannot_slip_past_the_limit<S: Store>(store: Arc<S>) {
    let now = 1_700_000_000_000;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.register_attempt(&SYS, "acct:victim", now, &RULE)
                .await
                .unwrap()
        }));
    }
    let mut allowed = Vec::new();
    let mut locked = 0;
    for t in tasks {
        match t.await.unwrap() {
            AttemptDecision::Allowed { attempt } => allowed.push(attempt),
            AttemptDecision::Locked { until_ms } => {
                assert_eq!(until_ms, now + RULE.lockout_ms);
                locked += 1;
            }
        }
    }
    allowed.sort_unstable();
    assert_eq!(
        allowed,
        (1..=10).collect::<Vec<_>>(),
        "each allowed attempt got its own number"
    );
    assert_eq!(locked, 10);
    // Another key is unaffected.
    assert_eq!(
        store
            .register_attempt(&SYS, "acct:other", now, &RULE)
            .await
            .unwrap(),
        AttemptDecision::Allowed { attempt: 1 }
    );
    // Still locked just before the end, even though the window has also passed.
    let later = now + RULE.lockout_ms - 1;
    assert!(matches!(
        store
            .register_attempt(&SYS, "acct:victim", later, &RULE)
            .await
            .unwrap(),
        AttemptDecision::Locked { .. }
    ));
    // After the lock, a fresh window.
    let after = now + RULE.lockout_ms;
    assert_eq!(
        store
            .register_attempt(&SYS, "acct:victim", after, &RULE)
            .await
            .unwrap(),
        AttemptDecision::Allowed { attempt: 1 }
    );
}

/// A8: 20 simultaneous reservations against a limit of 10 failures: exactly 10 places, the rest
/// busy; a pass frees its place and counts nothing; the 10 failures, settled concurrently, start
/// exactly one lock, which refuses every reservation until it ends. Several limits are reserved
/// all or none.
pub async fn a8_reservations_bound_parallel_evaluations_and_one_failure_starts_the_lock<
    S: Store,
>(
    store: Arc<S>,
) {
    let now = 1_700_000_000_000;
    let victim = [("login:victim", RULE)];
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let s = store.clone();
            tokio::spawn(async move {
                s.reserve_attempts(&SYS, &[("login:victim", RULE)], now)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.unwrap());
    }
    let granted = got.iter().filter(|r| **r == Reservation::Granted).count();
    assert_eq!(granted, 10, "{got:?}");
    assert_eq!(got.iter().filter(|r| **r == Reservation::Busy).count(), 10);
    // One pass: its place is free again, and nothing was counted.
    let passed = store
        .settle_attempts(&SYS, &victim, now, AttemptOutcome::Passed, true)
        .await
        .unwrap();
    assert_eq!(passed[0].failures, 0);
    assert_eq!(
        store.reserve_attempts(&SYS, &victim, now).await.unwrap(),
        Reservation::Granted
    );
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let s = store.clone();
            tokio::spawn(async move {
                s.settle_attempts(
                    &SYS,
                    &[("login:victim", RULE)],
                    now,
                    AttemptOutcome::Failed,
                    true,
                )
                .await
                .unwrap()
            })
        })
        .collect();
    let mut started = Vec::new();
    for t in tasks {
        started.extend(t.await.unwrap()[0].lock_started_until_ms);
    }
    assert_eq!(
        started,
        vec![now + RULE.lockout_ms],
        "exactly one lock started"
    );
    assert_eq!(
        store
            .reserve_attempts(&SYS, &victim, now + RULE.lockout_ms - 1)
            .await
            .unwrap(),
        Reservation::Locked {
            until_ms: now + RULE.lockout_ms
        }
    );
    assert_eq!(
        store
            .locked_until(&SYS, "login:victim", now + 1)
            .await
            .unwrap(),
        Some(now + RULE.lockout_ms)
    );
    // All or none: with the victim locked, a reservation of [other, victim] takes nothing, so
    // "other" still has all ten places afterwards.
    let both = [("login:other", RULE), ("login:victim", RULE)];
    assert!(matches!(
        store.reserve_attempts(&SYS, &both, now).await.unwrap(),
        Reservation::Locked { .. }
    ));
    for _ in 0..10 {
        assert_eq!(
            store
                .reserve_attempts(&SYS, &[("login:other", RULE)], now)
                .await
                .unwrap(),
            Reservation::Granted
        );
    }
    assert_eq!(
        store
            .reserve_attempts(&SYS, &[("login:other", RULE)], now)
            .await
            .unwrap(),
        Reservation::Busy
    );
    // After the lock, a fresh window.
    assert_eq!(
        store
            .reserve_attempts(&SYS, &victim, now + RULE.lockout_ms)
            .await
            .unwrap(),
        Reservation::Granted
    );
    // Tenants cannot reserve or settle.
    let user = Scope::User {
        user_id: "usr_x".into(),
        org_id: None,
    };
    assert!(store.reserve_attempts(&user, &victim, now).await.is_err());
    assert!(
        store
            .settle_attempts(
                &Scope::Anonymous,
                &victim,
                now,
                AttemptOutcome::Failed,
                false
            )
            .await
            .is_err()
    );
}

/// A success clears the counter; expired counters are purged (A6); tenants cannot touch them.
pub async fn a8_clear_purge_and_scope<S: Store>(store: Arc<S>) {
    let now = 1_700_000_000_000;
    let stale = Purgeable::StaleAttempts {
        window_ms: RULE.window_ms,
    };
    for _ in 0..5 {
        store
            .register_attempt(&SYS, "acct:a", now, &RULE)
            .await
            .unwrap();
    }
    store.clear_attempts(&SYS, "acct:a").await.unwrap();
    assert_eq!(
        store
            .register_attempt(&SYS, "acct:a", now, &RULE)
            .await
            .unwrap(),
        AttemptDecision::Allowed { attempt: 1 }
    );
    store
        .register_attempt(&SYS, "ip:203.0.113.7", now, &RULE)
        .await
        .unwrap();
    assert_eq!(
        store.purge(&SYS, stale, now + 1, 100).await.unwrap(),
        0,
        "windows still open"
    );
    assert_eq!(
        store
            .purge(&SYS, stale, now + RULE.window_ms, 100)
            .await
            .unwrap(),
        2
    );
    let user = Scope::User {
        user_id: "usr_x".into(),
        org_id: None,
    };
    assert!(
        store
            .register_attempt(&user, "acct:a", now, &RULE)
            .await
            .is_err()
    );
    assert!(
        store
            .clear_attempts(&Scope::Anonymous, "acct:a")
            .await
            .is_err()
    );
}

/// An unverified user with a stub password hash.
pub fn user_row(id: &str, email: &str) -> UserRow {
    UserRow {
        id: id.into(),
        email: email.into(),
        email_verified_ms: None,
        password_hash: Some("$argon2id$stub".into()),
        super_admin: false,
        created_ms: 1,
        updated_ms: 1,
    }
}

fn session_row(id: &str, user: &str, now: i64) -> SessionRow {
    SessionRow {
        id: id.into(),
        user_id: user.into(),
        device_name: "laptop".into(),
        platform: "linux".into(),
        ip: "203.0.113.7".into(),
        user_agent: "test".into(),
        created_ms: now,
        last_seen_ms: now,
        idle_expires_ms: now + 7 * 86_400_000,
        absolute_expires_ms: now + 90 * 86_400_000,
        revoked_ms: None,
        revoked_reason: None,
    }
}

/// A user acting outside any org.
pub fn as_user(id: &str) -> Scope {
    Scope::User {
        user_id: id.into(),
        org_id: None,
    }
}

/// A1/R5: emails are unique; a user reads and changes only their own account.
pub async fn a1_accounts_are_unique_by_email_and_private<S: Store>(store: Arc<S>) {
    store
        .create_user(&SYS, &user_row("usr_a", "a@example.com"))
        .await
        .unwrap();
    store
        .create_user(&SYS, &user_row("usr_b", "b@example.com"))
        .await
        .unwrap();
    assert!(matches!(
        store
            .create_user(&SYS, &user_row("usr_c", "a@example.com"))
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store
            .user_by_email(&SYS, "a@example.com")
            .await
            .unwrap()
            .unwrap()
            .id,
        "usr_a"
    );
    assert!(
        store
            .user_by_email(&SYS, "nobody@example.com")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .user_by_id(&as_user("usr_a"), "usr_a")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .user_by_id(&as_user("usr_b"), "usr_a")
            .await
            .unwrap()
            .is_none(),
        "another user's account is invisible"
    );
    assert!(
        store
            .set_password_hash(&as_user("usr_b"), "usr_a", "$x", 2)
            .await
            .is_err()
    );
    store
        .set_password_hash(&as_user("usr_a"), "usr_a", "$new", 2)
        .await
        .unwrap();
    assert_eq!(
        store
            .user_by_id(&SYS, "usr_a")
            .await
            .unwrap()
            .unwrap()
            .password_hash
            .as_deref(),
        Some("$new")
    );
    assert!(
        store
            .user_by_email(&Scope::Anonymous, "a@example.com")
            .await
            .is_err(),
        "login lookups are a system path"
    );
}

/// A1: the start-up pass over stored addresses pages through every user in id order and
/// rewrites an address only while it reads as expected, never onto another account's; the
/// copy on the user's memberships follows. Both are system paths.
pub async fn a1_stored_addresses_page_in_id_order_and_are_rewritten_conditionally<S: Store>(
    store: Arc<S>,
) {
    for (id, email) in [
        ("usr_c", "c@example.com"),
        ("usr_a", "a@example.com"),
        ("usr_b", "B@xn--bcher-kva.example"),
    ] {
        store.create_user(&SYS, &user_row(id, email)).await.unwrap();
    }
    org_with(store.as_ref(), "org_mail", &[("usr_m", 100)]).await;
    let ids = |rows: Vec<UserRow>| rows.into_iter().map(|u| u.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.users_page(&SYS, None, 2).await.unwrap()),
        ["usr_a", "usr_b"]
    );
    assert_eq!(
        ids(store.users_page(&SYS, Some("usr_b"), 2).await.unwrap()),
        ["usr_c", "usr_m"]
    );
    assert!(
        store
            .users_page(&SYS, Some("usr_m"), 2)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.users_page(&as_user("usr_a"), None, 10).await.is_err());
    assert!(
        store
            .set_email(
                &as_user("usr_b"),
                "usr_b",
                "B@xn--bcher-kva.example",
                "x@example.com",
                5
            )
            .await
            .is_err(),
        "a user scope cannot rewrite addresses"
    );

    // Only while the address still reads as expected, and only for an existing user.
    assert!(
        !store
            .set_email(
                &SYS,
                "usr_b",
                "b@bücher.example",
                "b@xn--bcher-kva.example",
                5
            )
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_email(
                &SYS,
                "usr_none",
                "B@xn--bcher-kva.example",
                "b@xn--bcher-kva.example",
                5
            )
            .await
            .unwrap()
    );
    // Never onto another account's address.
    assert!(matches!(
        store
            .set_email(&SYS, "usr_b", "B@xn--bcher-kva.example", "a@example.com", 5)
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store
            .user_by_id(&SYS, "usr_b")
            .await
            .unwrap()
            .unwrap()
            .email,
        "B@xn--bcher-kva.example",
        "a refused rewrite changes nothing"
    );
    assert!(
        store
            .set_email(
                &SYS,
                "usr_b",
                "B@xn--bcher-kva.example",
                "b@xn--bcher-kva.example",
                5
            )
            .await
            .unwrap()
    );
    let b = store
        .user_by_email(&SYS, "b@xn--bcher-kva.example")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((b.id.as_str(), b.updated_ms), ("usr_b", 5));
    assert!(
        store
            .user_by_email(&SYS, "B@xn--bcher-kva.example")
            .await
            .unwrap()
            .is_none()
    );

    // A member's address in member lists follows the account's.
    assert!(
        store
            .set_email(&SYS, "usr_m", "usr_m@example.com", "m@example.com", 6)
            .await
            .unwrap()
    );
    let member = store
        .membership(&SYS, "org_mail", "usr_m")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(member.email, "m@example.com");
}

/// A3: of 50 concurrent rotations of one refresh token exactly one wins and stores the successor.
pub async fn a3_concurrent_rotations_of_one_token_have_one_winner<S: Store>(store: Arc<S>) {
    let now = 1_700_000_000_000;
    store
        .create_user(&SYS, &user_row("usr_a", "a@example.com"))
        .await
        .unwrap();
    store
        .create_session(&SYS, &session_row("ses_1", "usr_a", now), &[1; 32])
        .await
        .unwrap();
    let first = store.find_refresh(&SYS, &[1; 32]).await.unwrap().unwrap();
    assert_eq!(
        (
            first.session_id.as_str(),
            first.user_id.as_str(),
            first.generation,
            first.used_ms
        ),
        ("ses_1", "usr_a", 1, None)
    );
    let mut tasks = Vec::new();
    for i in 0..50u8 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut new = [2; 32];
            new[0] = i;
            (
                new,
                s.rotate_refresh(&SYS, &[1; 32], &new, now + 1, now + 1000)
                    .await
                    .unwrap(),
            )
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (new, outcome) = t.await.unwrap();
        match outcome {
            Rotation::Rotated => winners.push(new),
            Rotation::AlreadyUsed => {}
            Rotation::SessionEnded => panic!("the session is live"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one rotation wins");
    assert_eq!(
        store
            .find_refresh(&SYS, &[1; 32])
            .await
            .unwrap()
            .unwrap()
            .used_ms,
        Some(now + 1)
    );
    let next = store
        .find_refresh(&SYS, &winners[0])
        .await
        .unwrap()
        .unwrap();
    assert_eq!((next.generation, next.used_ms), (2, None));
    let mut loser = [2; 32];
    loser[0] = if winners[0][0] == 0 { 1 } else { 0 };
    assert!(
        store.find_refresh(&SYS, &loser).await.unwrap().is_none(),
        "losers stored nothing"
    );
    let s = store.session(&SYS, "ses_1").await.unwrap().unwrap();
    assert_eq!((s.last_seen_ms, s.idle_expires_ms), (now + 1, now + 1000));
}

/// A4: sessions are listed per user, and a revoked or expired session's tokens stop rotating.
pub async fn a4_sessions_are_per_user_and_revocation_ends_the_family<S: Store>(store: Arc<S>) {
    let now = 1_700_000_000_000;
    store
        .create_user(&SYS, &user_row("usr_a", "a@example.com"))
        .await
        .unwrap();
    store
        .create_user(&SYS, &user_row("usr_b", "b@example.com"))
        .await
        .unwrap();
    store
        .create_session(&SYS, &session_row("ses_1", "usr_a", now), &[1; 32])
        .await
        .unwrap();
    store
        .create_session(&SYS, &session_row("ses_2", "usr_a", now + 1), &[2; 32])
        .await
        .unwrap();
    store
        .create_session(&SYS, &session_row("ses_3", "usr_b", now), &[3; 32])
        .await
        .unwrap();
    let mine: Vec<_> = store
        .sessions_of(&as_user("usr_a"), "usr_a")
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(mine, vec!["ses_2", "ses_1"], "newest first");
    assert!(
        store
            .sessions_of(&as_user("usr_b"), "usr_a")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .session(&as_user("usr_b"), "ses_1")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        !store
            .revoke_session(&as_user("usr_b"), "ses_1", now, "logout")
            .await
            .unwrap(),
        "not someone else's"
    );
    assert!(
        store
            .revoke_session(&as_user("usr_a"), "ses_1", now + 5, "logout")
            .await
            .unwrap()
    );
    assert!(
        !store
            .revoke_session(&SYS, "ses_1", now + 6, "again")
            .await
            .unwrap()
    );
    let s1 = store.session(&SYS, "ses_1").await.unwrap().unwrap();
    assert_eq!(
        (s1.revoked_ms, s1.revoked_reason.as_deref()),
        (Some(now + 5), Some("logout"))
    );
    assert_eq!(
        store
            .rotate_refresh(&SYS, &[1; 32], &[9; 32], now + 7, now + 1000)
            .await
            .unwrap(),
        Rotation::SessionEnded
    );
    assert!(
        store
            .find_refresh(&SYS, &[1; 32])
            .await
            .unwrap()
            .unwrap()
            .used_ms
            .is_none(),
        "nothing consumed"
    );
    // Past its idle expiry a session no longer rotates either.
    let late = now + 8 * 86_400_000;
    assert_eq!(
        store
            .rotate_refresh(&SYS, &[2; 32], &[8; 32], late, late + 1000)
            .await
            .unwrap(),
        Rotation::SessionEnded
    );
    assert!(
        store
            .rotate_refresh(&as_user("usr_b"), &[3; 32], &[7; 32], now, now + 1)
            .await
            .is_err(),
        "rotation is a system path"
    );
}

fn link(token: u8, purpose: &str, subject: &str, created_ms: i64) -> MagicLinkRow {
    MagicLinkRow {
        token_hash: [token; 32],
        purpose: purpose.into(),
        subject: subject.into(),
        email: "ada@example.com".into(),
        created_ms,
        expires_ms: created_ms + 1_800_000,
    }
}

fn mail(id: &str, now: i64) -> OutboundMail {
    OutboundMail {
        id: id.into(),
        recipient: "ada@example.com".into(),
        template: "verify_email".into(),
        sealed: vec![7; 40],
        sealed_key: "mail-v1".into(),
        created_ms: now,
    }
}

/// A link opens once, for its purpose, before expiry, and only while no newer one exists.
pub async fn a7_magic_links_are_single_use_expiring_and_newest_only<S: Store>(store: Arc<S>) {
    let now = 1_700_000_000_000;
    store
        .insert_link(
            &SYS,
            &link(1, "verify_email", "usr_a", now),
            Some(&mail("mail_1", now)),
        )
        .await
        .unwrap();
    assert_eq!(
        store.mail_counts(&SYS).await.unwrap().pending,
        1,
        "the link's mail is queued with it"
    );
    let consume = |t: u8, purpose: &'static str, at: i64| {
        let store = store.clone();
        async move {
            store
                .consume_link(&SYS, &[t; 32], purpose, at)
                .await
                .unwrap()
        }
    };
    assert!(
        consume(1, "reset_password", now + 1).await.is_none(),
        "wrong purpose"
    );
    assert!(
        consume(9, "verify_email", now + 1).await.is_none(),
        "unknown token"
    );
    assert!(
        consume(1, "verify_email", now + 1_800_000).await.is_none(),
        "expired"
    );
    // A newer link for the same subject and purpose voids the older one.
    store
        .insert_link(
            &SYS,
            &link(2, "verify_email", "usr_a", now + 10),
            Some(&mail("mail_2", now)),
        )
        .await
        .unwrap();
    assert!(
        consume(1, "verify_email", now + 11).await.is_none(),
        "superseded"
    );
    // …but not links of another subject or purpose.
    store
        .insert_link(
            &SYS,
            &link(3, "reset_password", "usr_a", now + 12),
            Some(&mail("mail_3", now)),
        )
        .await
        .unwrap();
    let used = consume(2, "verify_email", now + 13).await.unwrap();
    assert_eq!(
        (
            used.purpose.as_str(),
            used.subject.as_str(),
            used.email.as_str()
        ),
        ("verify_email", "usr_a", "ada@example.com")
    );
    assert!(
        consume(2, "verify_email", now + 14).await.is_none(),
        "used once"
    );
    assert!(consume(3, "reset_password", now + 15).await.is_some());
    // Not a tenant path.
    let user = as_user("usr_a");
    assert!(
        store
            .insert_link(
                &user,
                &link(4, "verify_email", "usr_a", now),
                Some(&mail("mail_4", now))
            )
            .await
            .is_err()
    );
    assert!(
        store
            .consume_link(&user, &[3; 32], "reset_password", now)
            .await
            .is_err()
    );
}

/// Of many concurrent consumers of one token, exactly one gets the link.
pub async fn a7_concurrent_consumers_of_one_link_have_one_winner<S: Store>(store: Arc<S>) {
    let now = 1_700_000_000_000;
    store
        .insert_link(
            &SYS,
            &link(5, "reset_password", "usr_b", now),
            Some(&mail("mail_5", now)),
        )
        .await
        .unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .consume_link(&SYS, &[5; 32], "reset_password", now + i)
                    .await
                    .unwrap()
                    .is_some()
            })
        })
        .collect();
    let mut winners = 0;
    for t in tasks {
        winners += usize::from(t.await.unwrap());
    }
    assert_eq!(winners, 1);
}

/// Due mail is leased to one dispatcher at a time, retried when it fails, and finished.
pub async fn mail_outbox_leases_retries_and_finishes<S: Store>(store: Arc<S>) {
    let now = 1_700_000_000_000;
    for i in 0..3 {
        store
            .enqueue_mail(&SYS, &mail(&format!("mail_{i}"), now + i))
            .await
            .unwrap();
    }
    let first = store.claim_mail(&SYS, now + 10, 60_000, 2).await.unwrap();
    let mut ids: Vec<_> = first.iter().map(|m| m.id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["mail_0", "mail_1"], "the oldest due first");
    assert!(
        first
            .iter()
            .all(|m| m.attempts == 1 && m.sealed == vec![7; 40])
    );
    let second = store.claim_mail(&SYS, now + 10, 60_000, 10).await.unwrap();
    assert_eq!(second.len(), 1, "leased mail is not handed out twice");
    assert!(
        store
            .claim_mail(&SYS, now + 20, 60_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    store
        .mail_failed(
            &SYS,
            "mail_0",
            now + 30,
            Some(now + 1_000),
            "connection refused",
        )
        .await
        .unwrap();
    store.mail_sent(&SYS, "mail_1", now + 30).await.unwrap();
    store
        .mail_failed(&SYS, "mail_2", now + 30, None, "mailbox unavailable")
        .await
        .unwrap();
    assert!(
        store
            .claim_mail(&SYS, now + 999, 60_000, 10)
            .await
            .unwrap()
            .is_empty(),
        "not before its retry time"
    );
    let retry = store
        .claim_mail(&SYS, now + 1_000, 60_000, 10)
        .await
        .unwrap();
    assert_eq!(
        retry
            .iter()
            .map(|m| (m.id.as_str(), m.attempts))
            .collect::<Vec<_>>(),
        [("mail_0", 2)]
    );
    // An expired lease (a dispatcher that died) makes the mail due again.
    let again = store
        .claim_mail(&SYS, now + 61_000, 60_000, 10)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 3);
    store.mail_sent(&SYS, "mail_0", now + 61_001).await.unwrap();
    let counts = store.mail_counts(&SYS).await.unwrap();
    assert_eq!((counts.pending, counts.sent, counts.failed), (0, 2, 1));
    assert!(
        store
            .claim_mail(&as_user("usr_a"), now, 1, 1)
            .await
            .is_err()
    );
}

/// Cleanup counts exactly what it then removes, in batches, and leaves live rows alone (A6).
pub async fn a6_cleanup_counts_then_purges_only_what_ended<S: Store>(store: Arc<S>) {
    let now = 1_700_000_000_000;
    store
        .create_user(&SYS, &user_row("usr_c", "c@example.com"))
        .await
        .unwrap();
    let mut live = session_row("ses_live", "usr_c", now);
    live.idle_expires_ms = now + 1_000;
    let mut revoked = session_row("ses_revoked", "usr_c", now);
    revoked.idle_expires_ms = now + 1_000;
    let mut idle = session_row("ses_idle", "usr_c", now);
    idle.idle_expires_ms = now - 1;
    let mut old = session_row("ses_old", "usr_c", now);
    old.absolute_expires_ms = now;
    for (s, t) in [(&live, 1u8), (&revoked, 2), (&idle, 3), (&old, 4)] {
        store.create_session(&SYS, s, &[t; 32]).await.unwrap();
    }
    store
        .revoke_session(&SYS, "ses_revoked", now - 5, "logout")
        .await
        .unwrap();
    // Links: one used, one expired, one live.
    store
        .insert_link(
            &SYS,
            &link(11, "verify_email", "usr_1", now - 10),
            Some(&mail("mail_a", now)),
        )
        .await
        .unwrap();
    store
        .consume_link(&SYS, &[11; 32], "verify_email", now - 9)
        .await
        .unwrap();
    store
        .insert_link(
            &SYS,
            &link(12, "verify_email", "usr_2", now - 1_800_000),
            Some(&mail("mail_b", now)),
        )
        .await
        .unwrap();
    store
        .insert_link(
            &SYS,
            &link(13, "verify_email", "usr_3", now),
            Some(&mail("mail_c", now)),
        )
        .await
        .unwrap();
    // Mail: one sent long ago, one sent just now, one pending.
    store
        .mail_sent(&SYS, "mail_a", now - 8 * 86_400_000)
        .await
        .unwrap();
    store.mail_sent(&SYS, "mail_b", now - 1).await.unwrap();
    let week = 7 * 86_400_000;
    // Invitations: one expired and never accepted (purged), one live, one accepted (history).
    org_with(&*store, "org_c", &[("usr_c", 100)]).await;
    let day = 86_400_000;
    for (id, at) in [
        ("inv_old", now - 2 * day),
        ("inv_live", now),
        ("inv_taken", now - 2 * day),
    ] {
        store
            .create_invitation(
                &SYS,
                &invitation_row(id, "org_c", &format!("{id}@example.com"), 20, at),
            )
            .await
            .unwrap();
    }
    store
        .create_user(&SYS, &user_row("usr_taker", "inv_taken@example.com"))
        .await
        .unwrap();
    let taker = MemberRow {
        org_id: "org_c".into(),
        user_id: "usr_taker".into(),
        email: "inv_taken@example.com".into(),
        level: 20,
        created_ms: now - 2 * day,
        updated_ms: now - 2 * day,
    };
    assert!(
        store
            .accept_invitation(&SYS, "inv_taken", &taker, now - 2 * day + 1)
            .await
            .unwrap()
    );
    let kinds = [
        (Purgeable::EndedSessions, 3),
        (Purgeable::SpentLinks, 2),
        (Purgeable::FinishedMail { retention_ms: week }, 1),
        (Purgeable::ExpiredInvitations, 1),
    ];
    for (what, n) in kinds {
        assert_eq!(
            store.count_purgeable(&SYS, what, now).await.unwrap(),
            n,
            "{}",
            what.name()
        );
    }
    assert_eq!(
        store
            .purge(&SYS, Purgeable::EndedSessions, now, 2)
            .await
            .unwrap(),
        2,
        "one batch"
    );
    assert_eq!(
        store
            .purge(&SYS, Purgeable::EndedSessions, now, 2)
            .await
            .unwrap(),
        1
    );
    for (what, n) in &kinds[1..] {
        assert_eq!(store.purge(&SYS, *what, now, 100).await.unwrap(), *n);
    }
    for (what, _) in kinds {
        assert_eq!(store.count_purgeable(&SYS, what, now).await.unwrap(), 0);
    }
    assert!(store.session(&SYS, "ses_live").await.unwrap().is_some());
    for (id, t) in [("ses_revoked", 2u8), ("ses_idle", 3), ("ses_old", 4)] {
        assert!(store.session(&SYS, id).await.unwrap().is_none());
        assert!(
            store.find_refresh(&SYS, &[t; 32]).await.unwrap().is_none(),
            "a purged session takes its refresh tokens with it"
        );
    }
    assert!(store.find_refresh(&SYS, &[1; 32]).await.unwrap().is_some());
    let mut kept: Vec<String> = store
        .invitations(&SYS, "org_c")
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    kept.sort();
    assert_eq!(kept, ["inv_live", "inv_taken"]);
    assert!(
        store
            .consume_link(&SYS, &[13; 32], "verify_email", now + 1)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .count_purgeable(&as_user("usr_c"), Purgeable::EndedSessions, now)
            .await
            .is_err(),
        "cleanup is a system path"
    );
}

/// The organization tests' clock.
const NOW: i64 = 1_700_000_000_000;

/// The cumulative permission sets the organization tests run with (PostgreSQL's policies read
/// them; SQLite keeps none): what each level holds, level 0 being a publishable key.
pub fn permission_rows() -> Vec<(i32, String)> {
    let adds: [(i32, &[&str]); 6] = [
        (20, &["org.read", "members.read", "projects.read"]),
        (30, &["licenses.read"]),
        (40, &["secrets.read", "wallet.read"]),
        (
            60,
            &[
                "members.invite",
                "projects.write",
                "secrets.write",
                "webhooks.read",
            ],
        ),
        (
            80,
            &[
                "org.rename",
                "members.update",
                "members.remove",
                "api_keys.read",
                "api_keys.create",
                "api_keys.revoke",
                "audit.read",
                "licenses.issue",
                "licenses.revoke",
                "licenses.freeze",
                "wallet.manage",
                "webhooks.manage",
            ],
        ),
        (100, &["org.delete"]),
    ];
    let mut rows = vec![(0, "org.read".to_owned())];
    let mut held: Vec<&str> = Vec::new();
    for (level, add) in adds {
        held.extend(add);
        rows.extend(held.iter().map(|p| (level, (*p).to_owned())));
    }
    rows
}

/// A user acting inside `org`.
pub fn in_org(user: &str, org: &str) -> Scope {
    Scope::User {
        user_id: user.into(),
        org_id: Some(org.into()),
    }
}

/// An API key acting for `org`.
pub fn key_scope(key: &str, org: &str, kind: KeyKind) -> Scope {
    Scope::ApiKey {
        key_id: key.into(),
        org_id: org.into(),
        kind,
    }
}

fn email_of(user: &str) -> String {
    format!("{user}@example.com")
}

/// An org row created at `NOW`, named after its id.
pub fn org_row(id: &str, creator: &str) -> OrgRow {
    OrgRow {
        id: id.into(),
        name: format!("Org {id}"),
        created_by: creator.into(),
        created_ms: NOW,
        updated_ms: NOW,
    }
}

/// A membership starting at `at`, with the user's test address.
pub fn member_row(org: &str, user: &str, level: i32, at: i64) -> MemberRow {
    MemberRow {
        org_id: org.into(),
        user_id: user.into(),
        email: email_of(user),
        level,
        created_ms: at,
        updated_ms: at,
    }
}

/// A pending invitation made at `at`, valid for a day.
pub fn invitation_row(id: &str, org: &str, email: &str, level: i32, at: i64) -> InvitationRow {
    InvitationRow {
        id: id.into(),
        org_id: org.into(),
        email: email.into(),
        level,
        invited_by: "usr_inviter".into(),
        created_ms: at,
        expires_ms: at + 86_400_000,
        accepted_ms: None,
        accepted_by: None,
    }
}

/// A live, never used API key whose hash is `hash` repeated.
pub fn key_row(id: &str, org: &str, kind: KeyKind, hash: u8, at: i64) -> ApiKeyRow {
    ApiKeyRow {
        id: id.into(),
        org_id: org.into(),
        kind,
        name: format!("key {id}"),
        hint: "bst_sk_AbCd".into(),
        key_hash: [hash; 32],
        created_by: "usr_creator".into(),
        created_ms: at,
        last_used_ms: None,
        revoked_ms: None,
    }
}

fn org_event(org: &str, action: &str) -> NewAuditEvent {
    NewAuditEvent {
        ts_ms: NOW,
        actor: None,
        org_id: Some(org.into()),
        category: "admin".into(),
        action: action.into(),
        outcome: "success".into(),
        details: "{}".into(),
    }
}

/// Creates `org_id` with `members` (users created when missing): the first, a Super Admin,
/// creates it; the others join in order by an accepted invitation.
pub async fn org_with<S: Store + ?Sized>(store: &S, org_id: &str, members: &[(&str, i32)]) {
    for (user, _) in members {
        if store.user_by_id(&SYS, user).await.unwrap().is_none() {
            store
                .create_user(&SYS, &user_row(user, &email_of(user)))
                .await
                .unwrap();
        }
    }
    let (creator, level) = members[0];
    assert_eq!(level, 100, "an org starts with its Super Admin");
    store
        .create_org(
            &as_user(creator),
            &org_row(org_id, creator),
            &member_row(org_id, creator, 100, NOW),
        )
        .await
        .unwrap();
    for (i, (user, level)) in members.iter().enumerate().skip(1) {
        let at = NOW + i as i64;
        let inv = invitation_row(
            &format!("inv_{org_id}_{user}"),
            org_id,
            &email_of(user),
            *level,
            at,
        );
        store.create_invitation(&SYS, &inv).await.unwrap();
        assert!(
            store
                .accept_invitation(&SYS, &inv.id, &member_row(org_id, user, *level, at), at)
                .await
                .unwrap()
        );
    }
}

/// R1: an org, its members and its name reach only its members; its creator is its first
/// Super Admin; deleting it takes the memberships along.
pub async fn r1_orgs_are_visible_only_to_their_members<S: Store>(store: Arc<S>) {
    store
        .sync_permissions(&SYS, &permission_rows())
        .await
        .unwrap();
    org_with(&*store, "org_a", &[("usr_a", 100), ("usr_b", 20)]).await;
    org_with(&*store, "org_c", &[("usr_c", 100)]).await;
    // A second org of usr_a, joined later.
    let mut later = org_row("org_a2", "usr_a");
    later.created_ms = NOW + 10;
    store
        .create_org(
            &as_user("usr_a"),
            &later,
            &member_row("org_a2", "usr_a", 100, NOW + 10),
        )
        .await
        .unwrap();
    for scope in [
        as_user("usr_a"),
        in_org("usr_a", "org_a"),
        in_org("usr_b", "org_a"),
        SYS,
    ] {
        assert_eq!(
            store.org(&scope, "org_a").await.unwrap(),
            Some(org_row("org_a", "usr_a")),
            "{scope:?}"
        );
    }
    for scope in [
        as_user("usr_c"),
        in_org("usr_c", "org_a"),
        in_org("usr_c", "org_c"),
        Scope::Anonymous,
    ] {
        assert_eq!(store.org(&scope, "org_a").await.unwrap(), None, "{scope:?}");
    }
    let ids = |v: Vec<(OrgRow, i32)>| v.into_iter().map(|(o, l)| (o.id, l)).collect::<Vec<_>>();
    assert_eq!(
        ids(store.orgs_of(&as_user("usr_a"), "usr_a").await.unwrap()),
        [("org_a".to_owned(), 100), ("org_a2".to_owned(), 100)],
        "oldest membership first"
    );
    assert_eq!(
        ids(store.orgs_of(&as_user("usr_b"), "usr_b").await.unwrap()),
        [("org_a".to_owned(), 20)]
    );
    assert_eq!(
        ids(store.orgs_of(&SYS, "usr_b").await.unwrap()),
        [("org_a".to_owned(), 20)]
    );
    for scope in [as_user("usr_c"), in_org("usr_a", "org_a"), Scope::Anonymous] {
        assert!(
            store.orgs_of(&scope, "usr_b").await.unwrap().is_empty(),
            "{scope:?} listed another user's orgs"
        );
    }
    let members: Vec<_> = store
        .members(&in_org("usr_b", "org_a"), "org_a")
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.user_id, m.level, m.email))
        .collect();
    assert_eq!(
        members,
        [
            ("usr_a".to_owned(), 100, "usr_a@example.com".to_owned()),
            ("usr_b".to_owned(), 20, "usr_b@example.com".to_owned())
        ],
        "highest level first"
    );
    assert!(
        store
            .members(&in_org("usr_c", "org_a"), "org_a")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .membership(&as_user("usr_b"), "org_a", "usr_b")
            .await
            .unwrap(),
        Some(member_row("org_a", "usr_b", 20, NOW + 1)),
        "one's own membership, from any scope of one's own"
    );
    assert_eq!(
        store
            .membership(&in_org("usr_c", "org_c"), "org_a", "usr_a")
            .await
            .unwrap(),
        None
    );
    // Only the creator makes an org, as its one first Super Admin, and nothing half-made stays.
    let attempts = [
        (
            as_user("usr_c"),
            org_row("org_x", "usr_a"),
            member_row("org_x", "usr_a", 100, NOW),
        ),
        (
            as_user("usr_c"),
            org_row("org_x", "usr_c"),
            member_row("org_x", "usr_c", 80, NOW),
        ),
        (
            as_user("usr_c"),
            org_row("org_x", "usr_c"),
            member_row("org_x", "usr_a", 100, NOW),
        ),
        (
            as_user("usr_c"),
            org_row("org_x", "usr_c"),
            member_row("org_nowhere", "usr_c", 100, NOW),
        ),
        (
            Scope::Anonymous,
            org_row("org_x", "usr_c"),
            member_row("org_x", "usr_c", 100, NOW),
        ),
    ];
    for (scope, org, creator) in attempts {
        assert!(
            matches!(
                store.create_org(&scope, &org, &creator).await,
                Err(StoreError::Forbidden)
            ),
            "{scope:?} {creator:?}"
        );
        assert_eq!(store.org(&SYS, "org_x").await.unwrap(), None);
    }
    assert!(matches!(
        store
            .create_org(
                &as_user("usr_c"),
                &org_row("org_a", "usr_c"),
                &member_row("org_a", "usr_c", 100, NOW)
            )
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(
        !store
            .rename_org(&in_org("usr_c", "org_a"), "org_a", "Mine now", NOW + 1)
            .await
            .unwrap()
    );
    assert!(
        store
            .rename_org(&in_org("usr_a", "org_a"), "org_a", "Renamed", NOW + 2)
            .await
            .unwrap()
    );
    let renamed = store.org(&SYS, "org_a").await.unwrap().unwrap();
    assert_eq!(
        (renamed.name.as_str(), renamed.updated_ms),
        ("Renamed", NOW + 2)
    );
    assert!(
        !store
            .delete_org(&in_org("usr_c", "org_a"), "org_a")
            .await
            .unwrap()
    );
    assert!(
        store
            .delete_org(&in_org("usr_a", "org_a"), "org_a")
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete_org(&in_org("usr_a", "org_a"), "org_a")
            .await
            .unwrap(),
        "already gone"
    );
    assert_eq!(store.org(&SYS, "org_a").await.unwrap(), None);
    assert_eq!(
        store.membership(&SYS, "org_a", "usr_b").await.unwrap(),
        None,
        "memberships go with their org"
    );
    assert!(store.orgs_of(&SYS, "usr_b").await.unwrap().is_empty());
}

/// R2: an org always keeps a Super Admin: two of them demoting each other at once leave one,
/// and the last one can neither be demoted nor leave.
pub async fn r2_the_last_super_admin_cannot_be_demoted_or_removed_even_concurrently<S: Store>(
    store: Arc<S>,
) {
    store
        .sync_permissions(&SYS, &permission_rows())
        .await
        .unwrap();
    let mut survivors = Vec::new();
    for round in 0..5 {
        let org = format!("org_r{round}");
        org_with(
            &*store,
            &org,
            &[("usr_a", 100), ("usr_b", 100), ("usr_c", 40)],
        )
        .await;
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let demote = |me: &'static str, them: &'static str| {
            let (store, barrier, org) = (store.clone(), barrier.clone(), org.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let change = store
                    .change_member(&in_org(me, &org), &org, them, 100, Some(80), NOW + 100)
                    .await
                    .unwrap();
                (me, change)
            })
        };
        let (one, two) = (demote("usr_a", "usr_b"), demote("usr_b", "usr_a"));
        let outcomes = [one.await.unwrap(), two.await.unwrap()];
        let winners: Vec<_> = outcomes
            .iter()
            .filter(|(_, c)| *c == MemberChange::Changed)
            .map(|(me, _)| *me)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {outcomes:?}");
        // The loser either ran after the winner (and no longer outranks anyone) or alongside.
        assert!(
            outcomes.iter().all(|(_, c)| matches!(
                c,
                MemberChange::Changed | MemberChange::LastSuperAdmin | MemberChange::NotFound
            )),
            "{outcomes:?}"
        );
        let supers: Vec<_> = store
            .members(&SYS, &org)
            .await
            .unwrap()
            .into_iter()
            .filter(|m| m.level == 100)
            .map(|m| m.user_id)
            .collect();
        assert_eq!(supers, [winners[0]], "round {round}");
        survivors.push((org, winners[0]));
    }
    let (org, last) = survivors.swap_remove(0);
    let me = in_org(last, &org);
    for to in [Some(80), Some(20), None] {
        assert_eq!(
            store
                .change_member(&me, &org, last, 100, to, NOW + 200)
                .await
                .unwrap(),
            MemberChange::LastSuperAdmin,
            "{to:?}"
        );
        assert_eq!(
            store
                .membership(&SYS, &org, last)
                .await
                .unwrap()
                .unwrap()
                .level,
            100,
            "the refused change left nothing behind"
        );
    }
    // A stale expectation changes nothing.
    assert_eq!(
        store
            .change_member(&me, &org, "usr_c", 60, Some(20), NOW + 200)
            .await
            .unwrap(),
        MemberChange::NotFound
    );
    assert_eq!(
        store
            .change_member(&me, &org, "usr_nobody", 40, None, NOW + 200)
            .await
            .unwrap(),
        MemberChange::NotFound
    );
    // With a successor in place, the last one may step down, then leave.
    assert_eq!(
        store
            .change_member(&me, &org, "usr_c", 40, Some(100), NOW + 201)
            .await
            .unwrap(),
        MemberChange::Changed
    );
    let promoted = store
        .membership(&SYS, &org, "usr_c")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((promoted.level, promoted.updated_ms), (100, NOW + 201));
    assert_eq!(
        store
            .change_member(&me, &org, last, 100, Some(80), NOW + 202)
            .await
            .unwrap(),
        MemberChange::Changed
    );
    assert_eq!(
        store
            .change_member(&me, &org, last, 80, None, NOW + 203)
            .await
            .unwrap(),
        MemberChange::Changed,
        "anyone may leave"
    );
    assert_eq!(store.membership(&SYS, &org, last).await.unwrap(), None);
    // Deleting the org removes its Super Admins with it.
    assert!(
        store
            .delete_org(&in_org("usr_c", &org), &org)
            .await
            .unwrap()
    );
    assert!(store.members(&SYS, &org).await.unwrap().is_empty());
}

/// R2: a replacement invitation withdraws only the pending invitations its author could have
/// made: a Manager re-inviting an address at User level leaves an Admin-level invitation (made
/// by a Super Admin) in place, and says which ones it withdrew.
pub async fn r2_a_replacement_invitation_withdraws_only_what_its_author_could_grant<S: Store>(
    store: Arc<S>,
) {
    store
        .sync_permissions(&SYS, &permission_rows())
        .await
        .unwrap();
    org_with(&*store, "org_a", &[("usr_a", 100), ("usr_m", 60)]).await;
    let owner = in_org("usr_a", "org_a");
    let manager = in_org("usr_m", "org_a");
    let x = email_of("usr_x");
    let withdrawn = store
        .replace_invitation(
            &owner,
            &invitation_row("inv_admin", "org_a", &x, 80, NOW + 1),
            100,
        )
        .await
        .unwrap();
    assert!(withdrawn.is_empty());
    let withdrawn = store
        .replace_invitation(
            &manager,
            &invitation_row("inv_user", "org_a", &x, 40, NOW + 2),
            40,
        )
        .await
        .unwrap();
    assert!(
        withdrawn.is_empty(),
        "the Admin-level invitation stays: {withdrawn:?}"
    );
    let mut ids: Vec<_> = store
        .invitations(&owner, "org_a")
        .await
        .unwrap()
        .into_iter()
        .filter(|i| i.accepted_ms.is_none())
        .map(|i| i.id)
        .collect();
    ids.sort();
    assert_eq!(ids, ["inv_admin", "inv_user"], "both pending");
    // The manager's next replacement withdraws its own earlier one, and says so.
    let withdrawn = store
        .replace_invitation(
            &manager,
            &invitation_row("inv_user2", "org_a", &x, 30, NOW + 3),
            40,
        )
        .await
        .unwrap();
    assert_eq!(withdrawn, ["inv_user"]);
    // The owner may replace everything.
    let mut withdrawn = store
        .replace_invitation(
            &owner,
            &invitation_row("inv_final", "org_a", &x, 60, NOW + 4),
            100,
        )
        .await
        .unwrap();
    withdrawn.sort();
    assert_eq!(withdrawn, ["inv_admin", "inv_user2"]);
}

/// R1: an invitation replaces the pending one for the same address, is accepted once, before
/// it expires, by someone not yet a member; an accepted one is history, not revocable.
pub async fn r1_invitations_are_accepted_once_and_replace_older_ones<S: Store>(store: Arc<S>) {
    store
        .sync_permissions(&SYS, &permission_rows())
        .await
        .unwrap();
    org_with(&*store, "org_a", &[("usr_a", 100)]).await;
    for u in ["usr_x", "usr_y"] {
        store
            .create_user(&SYS, &user_row(u, &email_of(u)))
            .await
            .unwrap();
    }
    let admin = in_org("usr_a", "org_a");
    let x = email_of("usr_x");
    store
        .create_invitation(&admin, &invitation_row("inv_1", "org_a", &x, 40, NOW + 1))
        .await
        .unwrap();
    store
        .create_invitation(&admin, &invitation_row("inv_2", "org_a", &x, 60, NOW + 2))
        .await
        .unwrap();
    store
        .create_invitation(
            &admin,
            &invitation_row("inv_3", "org_a", &email_of("usr_y"), 20, NOW + 3),
        )
        .await
        .unwrap();
    let ids = |v: Vec<InvitationRow>| v.into_iter().map(|i| i.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.invitations(&admin, "org_a").await.unwrap()),
        ["inv_3", "inv_2"],
        "newest first; the older one for the same address is gone"
    );
    assert_eq!(store.invitation(&SYS, "inv_1").await.unwrap(), None);
    assert_eq!(
        store.invitation(&SYS, "inv_2").await.unwrap(),
        Some(invitation_row("inv_2", "org_a", &x, 60, NOW + 2))
    );
    assert!(
        store.invitation(&admin, "inv_2").await.is_err(),
        "reading by id is a system path"
    );
    assert!(
        store
            .accept_invitation(&admin, "inv_2", &member_row("org_a", "usr_x", 60, NOW), NOW)
            .await
            .is_err(),
        "accepting is a system path"
    );
    // Many at once: one joins.
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let m = member_row("org_a", "usr_x", 60, NOW + 10);
                store
                    .accept_invitation(&SYS, "inv_2", &m, NOW + 10 + i)
                    .await
            })
        })
        .collect();
    let mut accepted = 0;
    for t in tasks {
        accepted += usize::from(t.await.unwrap().unwrap());
    }
    assert_eq!(accepted, 1);
    let inv = store.invitation(&SYS, "inv_2").await.unwrap().unwrap();
    assert!(inv.accepted_ms.is_some());
    assert_eq!(inv.accepted_by.as_deref(), Some("usr_x"));
    assert_eq!(
        store
            .membership(&SYS, "org_a", "usr_x")
            .await
            .unwrap()
            .map(|m| m.level),
        Some(60)
    );
    assert!(
        !store
            .revoke_invitation(&admin, "org_a", "inv_2")
            .await
            .unwrap(),
        "an accepted invitation is not revoked"
    );
    // A new invitation for the same address leaves the accepted one alone.
    store
        .create_invitation(&admin, &invitation_row("inv_4", "org_a", &x, 20, NOW + 20))
        .await
        .unwrap();
    assert!(store.invitation(&SYS, "inv_2").await.unwrap().is_some());
    // Already a member: a conflict, and the invitation stays pending.
    assert!(matches!(
        store
            .accept_invitation(
                &SYS,
                "inv_4",
                &member_row("org_a", "usr_x", 20, NOW + 21),
                NOW + 21
            )
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store
            .invitation(&SYS, "inv_4")
            .await
            .unwrap()
            .unwrap()
            .accepted_ms,
        None
    );
    assert_eq!(
        store
            .membership(&SYS, "org_a", "usr_x")
            .await
            .unwrap()
            .map(|m| m.level),
        Some(60),
        "the membership is unchanged"
    );
    // Expired: not accepted at its expiry.
    let inv3 = store.invitation(&SYS, "inv_3").await.unwrap().unwrap();
    let y = member_row("org_a", "usr_y", 20, inv3.expires_ms);
    assert!(
        !store
            .accept_invitation(&SYS, "inv_3", &y, inv3.expires_ms)
            .await
            .unwrap()
    );
    // The member must join the invitation's org at the invited level.
    let wrong = member_row("org_a", "usr_y", 100, NOW + 30);
    assert!(
        !store
            .accept_invitation(&SYS, "inv_3", &wrong, NOW + 30)
            .await
            .unwrap()
    );
    assert!(
        !store
            .accept_invitation(&SYS, "inv_missing", &y, NOW + 30)
            .await
            .unwrap()
    );
    assert_eq!(
        store.membership(&SYS, "org_a", "usr_y").await.unwrap(),
        None
    );
    // Revoking: a pending one once.
    assert!(
        store
            .revoke_invitation(&admin, "org_a", "inv_3")
            .await
            .unwrap()
    );
    assert!(
        !store
            .revoke_invitation(&admin, "org_a", "inv_3")
            .await
            .unwrap()
    );
    assert_eq!(
        ids(store.invitations(&admin, "org_a").await.unwrap()),
        ["inv_4", "inv_2"]
    );
}

/// R6: a key is found by its hash only, touched at most once a minute, and once revoked its
/// scope reaches nothing of its org.
pub async fn r6_api_keys_are_found_by_hash_and_revoked_keys_lose_their_org<S: Store>(
    store: Arc<S>,
) {
    store
        .sync_permissions(&SYS, &permission_rows())
        .await
        .unwrap();
    org_with(&*store, "org_a", &[("usr_a", 100)]).await;
    store
        .append(&SYS, &[org_event("org_a", "a.1")], &seal)
        .await
        .unwrap();
    let admin = in_org("usr_a", "org_a");
    let service = key_row("key_s", "org_a", KeyKind::Service, 1, NOW + 1);
    let publishable = key_row("key_p", "org_a", KeyKind::Publishable, 2, NOW + 2);
    store.create_api_key(&admin, &service).await.unwrap();
    store.create_api_key(&admin, &publishable).await.unwrap();
    let mut same_hash = key_row("key_dup", "org_a", KeyKind::Service, 1, NOW + 3);
    same_hash.name = "duplicate".into();
    assert!(matches!(
        store.create_api_key(&admin, &same_hash).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store.api_key_by_hash(&SYS, &[1; 32]).await.unwrap(),
        Some(service.clone())
    );
    assert_eq!(store.api_key_by_hash(&SYS, &[9; 32]).await.unwrap(), None);
    assert!(
        store.api_key_by_hash(&admin, &[1; 32]).await.is_err(),
        "look-up by hash is a system path"
    );
    assert_eq!(
        store.api_keys(&admin, "org_a").await.unwrap(),
        [publishable.clone(), service.clone()],
        "newest first"
    );
    // Use is recorded at most once per API_KEY_TOUCH_MS.
    let used = |at: i64| {
        let store = store.clone();
        async move {
            store.touch_api_key(&SYS, "key_s", at).await.unwrap();
            store
                .api_key_by_hash(&SYS, &[1; 32])
                .await
                .unwrap()
                .unwrap()
                .last_used_ms
        }
    };
    assert_eq!(used(NOW + 10).await, Some(NOW + 10));
    assert_eq!(used(NOW + 11).await, Some(NOW + 10));
    assert_eq!(used(NOW + 10 + API_KEY_TOUCH_MS).await, Some(NOW + 10));
    assert_eq!(
        used(NOW + 11 + API_KEY_TOUCH_MS).await,
        Some(NOW + 11 + API_KEY_TOUCH_MS)
    );
    assert!(
        store
            .touch_api_key(&admin, "key_s", NOW + 99)
            .await
            .is_err()
    );
    // A live key reaches its own org.
    let svc = key_scope("key_s", "org_a", KeyKind::Service);
    let publ = key_scope("key_p", "org_a", KeyKind::Publishable);
    for scope in [&svc, &publ] {
        assert!(
            store.org(scope, "org_a").await.unwrap().is_some(),
            "{scope:?}"
        );
    }
    assert_eq!(store.api_keys(&svc, "org_a").await.unwrap().len(), 2);
    assert_eq!(
        store
            .org_events(&svc, "org_a", None, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    // The same id presented as the other kind, or for another org, is no key.
    for scope in [
        key_scope("key_p", "org_a", KeyKind::Service),
        key_scope("key_s", "org_a", KeyKind::Publishable),
        key_scope("key_s", "org_b", KeyKind::Service),
    ] {
        assert!(
            store.org(&scope, "org_a").await.unwrap().is_none(),
            "{scope:?}"
        );
        assert!(store.api_keys(&scope, "org_a").await.unwrap().is_empty());
    }
    // Revoked: once, and then the key reaches nothing.
    assert!(
        store
            .revoke_api_key(&admin, "org_a", "key_s", NOW + 20)
            .await
            .unwrap()
    );
    assert!(
        !store
            .revoke_api_key(&admin, "org_a", "key_s", NOW + 21)
            .await
            .unwrap()
    );
    assert!(
        !store
            .revoke_api_key(&admin, "org_a", "key_missing", NOW + 21)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .api_key_by_hash(&SYS, &[1; 32])
            .await
            .unwrap()
            .unwrap()
            .revoked_ms,
        Some(NOW + 20),
        "still found, so the caller can tell it is revoked"
    );
    assert_eq!(store.org(&svc, "org_a").await.unwrap(), None);
    assert!(store.api_keys(&svc, "org_a").await.unwrap().is_empty());
    assert!(store.members(&svc, "org_a").await.unwrap().is_empty());
    assert!(
        store
            .org_events(&svc, "org_a", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        !store
            .rename_org(&svc, "org_a", "Revoked", NOW + 22)
            .await
            .unwrap()
    );
    assert!(matches!(
        store
            .create_api_key(
                &svc,
                &key_row("key_n", "org_a", KeyKind::Service, 3, NOW + 23)
            )
            .await,
        Err(StoreError::Forbidden)
    ));
    assert!(
        !store
            .revoke_api_key(&svc, "org_a", "key_p", NOW + 24)
            .await
            .unwrap()
    );
    assert_eq!(
        store.org(&SYS, "org_a").await.unwrap().unwrap().name,
        "Org org_a"
    );
    let listed = store.api_keys(&admin, "org_a").await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|k| (k.id.as_str(), k.revoked_ms))
            .collect::<Vec<_>>(),
        [("key_p", None), ("key_s", Some(NOW + 20))],
        "revoked keys are still listed"
    );
}

/// R5: a user's private activity is theirs alone: not their org's Super Admin's, nor an
/// Admin's, nor a key's, whatever the scope.
pub async fn r5_private_activity_is_visible_to_its_user_only<S: Store>(store: Arc<S>) {
    store
        .sync_permissions(&SYS, &permission_rows())
        .await
        .unwrap();
    org_with(
        &*store,
        "org_a",
        &[("usr_owner", 100), ("usr_admin", 80), ("usr_m", 40)],
    )
    .await;
    store
        .create_api_key(
            &in_org("usr_owner", "org_a"),
            &key_row("key_s", "org_a", KeyKind::Service, 1, NOW),
        )
        .await
        .unwrap();
    let row = |id: &str, org: Option<&str>, ts: i64| ActivityRow {
        id: id.into(),
        user_id: "usr_m".into(),
        org_id: org.map(str::to_owned),
        ts_ms: ts,
        kind: "app.focus".into(),
        data: "{\"app\":\"editor\"}".into(),
    };
    store
        .add_activity(&as_user("usr_m"), &row("act_1", None, NOW + 1))
        .await
        .unwrap();
    store
        .add_activity(
            &in_org("usr_m", "org_a"),
            &row("act_2", Some("org_a"), NOW + 2),
        )
        .await
        .unwrap();
    store
        .add_activity(&as_user("usr_m"), &row("act_3", Some("org_a"), NOW + 3))
        .await
        .unwrap();
    let mine = store
        .activity_of(&as_user("usr_m"), "usr_m", 10)
        .await
        .unwrap();
    assert_eq!(
        mine,
        [
            row("act_3", Some("org_a"), NOW + 3),
            row("act_2", Some("org_a"), NOW + 2),
            row("act_1", None, NOW + 1)
        ],
        "newest first"
    );
    assert_eq!(
        store
            .activity_of(&in_org("usr_m", "org_a"), "usr_m", 2)
            .await
            .unwrap()
            .len(),
        2
    );
    for scope in [
        in_org("usr_owner", "org_a"),
        in_org("usr_admin", "org_a"),
        as_user("usr_owner"),
        key_scope("key_s", "org_a", KeyKind::Service),
        Scope::Anonymous,
    ] {
        assert!(
            store
                .activity_of(&scope, "usr_m", 10)
                .await
                .unwrap()
                .is_empty(),
            "{scope:?} read another user's activity"
        );
        assert!(
            matches!(
                store.add_activity(&scope, &row("act_x", None, NOW)).await,
                Err(StoreError::Forbidden)
            ),
            "{scope:?} wrote as another user"
        );
    }
    assert_eq!(
        store
            .activity_of(&as_user("usr_m"), "usr_m", 10)
            .await
            .unwrap()
            .len(),
        3
    );
}

/// R4: a member of org A, whether its scope names A or claims B, reaches nothing of org B:
/// no reads, no changes, no inserts.
pub async fn r4_a_scope_inside_org_a_sees_nothing_of_org_b<S: Store>(store: Arc<S>) {
    store
        .sync_permissions(&SYS, &permission_rows())
        .await
        .unwrap();
    org_with(&*store, "org_a", &[("usr_a", 100)]).await;
    org_with(&*store, "org_b", &[("usr_b", 100), ("usr_b2", 40)]).await;
    store
        .create_api_key(
            &in_org("usr_a", "org_a"),
            &key_row("key_a", "org_a", KeyKind::Service, 1, NOW),
        )
        .await
        .unwrap();
    let owner_b = in_org("usr_b", "org_b");
    store
        .create_api_key(
            &owner_b,
            &key_row("key_b", "org_b", KeyKind::Service, 2, NOW),
        )
        .await
        .unwrap();
    let pending = invitation_row("inv_b", "org_b", "new@example.com", 20, NOW + 5);
    store.create_invitation(&owner_b, &pending).await.unwrap();
    store
        .append(
            &SYS,
            &[
                org_event("org_a", "a.1"),
                org_event("org_b", "b.1"),
                org_event("org_b", "b.2"),
            ],
            &seal,
        )
        .await
        .unwrap();
    // Controls: each org's own members do see these rows.
    assert_eq!(
        store
            .org_events(&in_org("usr_a", "org_a"), "org_a", None, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store
            .org_events(&owner_b, "org_b", None, 10)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(store.invitations(&owner_b, "org_b").await.unwrap().len(), 2);
    assert_eq!(store.api_keys(&owner_b, "org_b").await.unwrap().len(), 1);
    for scope in [
        in_org("usr_a", "org_b"),
        in_org("usr_a", "org_a"),
        as_user("usr_a"),
        key_scope("key_a", "org_a", KeyKind::Service),
        key_scope("key_a", "org_b", KeyKind::Service),
        Scope::Anonymous,
    ] {
        let s = &scope;
        assert_eq!(store.org(s, "org_b").await.unwrap(), None, "{s:?}");
        assert!(store.members(s, "org_b").await.unwrap().is_empty(), "{s:?}");
        for user in ["usr_b", "usr_b2"] {
            assert_eq!(
                store.membership(s, "org_b", user).await.unwrap(),
                None,
                "{s:?}"
            );
        }
        assert!(store.orgs_of(s, "usr_b").await.unwrap().is_empty(), "{s:?}");
        assert!(
            store.invitations(s, "org_b").await.unwrap().is_empty(),
            "{s:?}"
        );
        assert!(
            store.api_keys(s, "org_b").await.unwrap().is_empty(),
            "{s:?}"
        );
        assert!(
            store
                .org_events(s, "org_b", None, 10)
                .await
                .unwrap()
                .is_empty(),
            "{s:?}"
        );
        assert!(store.activity_of(s, "usr_b", 10).await.unwrap().is_empty());
        assert!(
            !store
                .rename_org(s, "org_b", "Taken", NOW + 9)
                .await
                .unwrap(),
            "{s:?}"
        );
        assert!(!store.delete_org(s, "org_b").await.unwrap(), "{s:?}");
        for (user, expected, to) in [
            ("usr_b2", 40, Some(20)),
            ("usr_b2", 40, Some(100)),
            ("usr_b2", 40, None),
            ("usr_b", 100, Some(20)),
            ("usr_b", 100, None),
        ] {
            assert_eq!(
                store
                    .change_member(s, "org_b", user, expected, to, NOW + 9)
                    .await
                    .unwrap(),
                MemberChange::NotFound,
                "{s:?} {user} {to:?}"
            );
        }
        assert!(
            !store.revoke_invitation(s, "org_b", "inv_b").await.unwrap(),
            "{s:?}"
        );
        assert!(
            !store
                .revoke_api_key(s, "org_b", "key_b", NOW + 9)
                .await
                .unwrap(),
            "{s:?}"
        );
        let mut planted = invitation_row("inv_evil", "org_b", "evil@example.com", 100, NOW + 9);
        planted.invited_by = "usr_a".into();
        assert!(
            matches!(
                store.create_invitation(s, &planted).await,
                Err(StoreError::Forbidden)
            ),
            "{s:?}"
        );
        // Not even replacing the pending invitation for that address.
        let replace = invitation_row("inv_evil2", "org_b", "new@example.com", 20, NOW + 9);
        assert!(
            matches!(
                store.create_invitation(s, &replace).await,
                Err(StoreError::Forbidden)
            ),
            "{s:?}"
        );
        assert!(
            matches!(
                store
                    .create_api_key(s, &key_row("key_evil", "org_b", KeyKind::Service, 7, NOW))
                    .await,
                Err(StoreError::Forbidden)
            ),
            "{s:?}"
        );
    }
    // Org B is exactly as it was.
    assert_eq!(
        store.org(&SYS, "org_b").await.unwrap(),
        Some(org_row("org_b", "usr_b"))
    );
    assert_eq!(
        store
            .members(&SYS, "org_b")
            .await
            .unwrap()
            .into_iter()
            .map(|m| (m.user_id, m.level))
            .collect::<Vec<_>>(),
        [("usr_b".to_owned(), 100), ("usr_b2".to_owned(), 40)]
    );
    assert_eq!(
        store.invitation(&SYS, "inv_b").await.unwrap(),
        Some(pending)
    );
    for id in ["inv_evil", "inv_evil2"] {
        assert_eq!(store.invitation(&SYS, id).await.unwrap(), None);
    }
    let keys = store.api_keys(&SYS, "org_b").await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].revoked_ms, None);
    assert_eq!(store.api_key_by_hash(&SYS, &[7; 32]).await.unwrap(), None);
}

/// An org's audit events come newest first, a page at a time, and only that org's.
pub async fn r1_org_audit_events_page_newest_first_within_their_org<S: Store>(store: Arc<S>) {
    store
        .sync_permissions(&SYS, &permission_rows())
        .await
        .unwrap();
    org_with(&*store, "org_a", &[("usr_a", 100)]).await;
    let events: Vec<_> = (0..7)
        .map(|i| {
            if i % 3 == 2 {
                org_event("org_b", &format!("b.{i}"))
            } else {
                org_event("org_a", &format!("a.{i}"))
            }
        })
        .chain([event(1)])
        .collect();
    store.append(&SYS, &events, &seal).await.unwrap();
    let me = in_org("usr_a", "org_a");
    let seqs = |v: Vec<crate::AuditRecord>| v.into_iter().map(|r| r.seq).collect::<Vec<_>>();
    assert_eq!(
        seqs(store.org_events(&me, "org_a", None, 3).await.unwrap()),
        [7, 5, 4]
    );
    assert_eq!(
        seqs(store.org_events(&me, "org_a", Some(4), 3).await.unwrap()),
        [2, 1]
    );
    assert!(
        store
            .org_events(&me, "org_a", Some(1), 3)
            .await
            .unwrap()
            .is_empty()
    );
    let all = store.org_events(&SYS, "org_a", None, 100).await.unwrap();
    assert_eq!(seqs(all.clone()), [7, 5, 4, 2, 1]);
    assert!(
        all.iter()
            .all(|r| r.event.org_id.as_deref() == Some("org_a"))
    );
    assert_eq!(all[0].event, events[6], "events round-trip unchanged");
    let chain = store.events_after(&SYS, 0, 100).await.unwrap();
    assert_eq!(all[0], chain[6], "as stored in the chain");
}

// Vault (SPEC S1: sensitive fields sealed at the application layer; S3: key rotation with
// rewrap). Envelopes are arbitrary bytes here: the store never opens one.

/// A project of `org` created at `NOW` by its Manager.
pub fn project_row(id: &str, org: &str, name: &str) -> ProjectRow {
    ProjectRow {
        id: id.into(),
        org_id: org.into(),
        name: name.into(),
        created_by: "usr_m".into(),
        created_ms: NOW,
    }
}

/// A new secret (version 1) of `project`, sealed under `key`.
pub fn secret_row(id: &str, org: &str, project: &str, name: &str, key: &str) -> SecretRow {
    SecretRow {
        id: id.into(),
        org_id: org.into(),
        project_id: project.into(),
        name: name.into(),
        value_key: key.into(),
        value: format!("sealed:{id}").into_bytes(),
        version: 1,
        created_ms: NOW,
        updated_ms: NOW,
        updated_by: "usr_m".into(),
    }
}

fn meta_of(r: &SecretRow) -> SecretMeta {
    SecretMeta {
        id: r.id.clone(),
        project_id: r.project_id.clone(),
        name: r.name.clone(),
        version: r.version,
        created_ms: r.created_ms,
        updated_ms: r.updated_ms,
        updated_by: r.updated_by.clone(),
    }
}

fn new_value(key: &str, value: &[u8], at: i64) -> SecretUpdate {
    SecretUpdate {
        value_key: key.into(),
        value: value.to_vec(),
        updated_ms: at,
        updated_by: "usr_m".into(),
    }
}

/// Due mail sealed under `key` (`""`: a message queued before key ids were kept).
fn sealed_mail(id: &str, key: &str) -> OutboundMail {
    OutboundMail {
        id: id.into(),
        recipient: "ada@example.com".into(),
        template: "verify_email".into(),
        sealed: format!("sealed:{id}").into_bytes(),
        sealed_key: key.into(),
        created_ms: NOW,
    }
}

/// A data key of the ring as the key ring stores it (`<purpose>-v<N>-<8 hex>`).
fn ring_key(purpose: &str, version: u32, key_id: &str) -> StoredKey {
    StoredKey {
        purpose: purpose.into(),
        version,
        key_id: key_id.into(),
        algorithm: "AES-256-GCM".into(),
        wrapped: format!("wrapped:{key_id}").into_bytes(),
        public_key: None,
        created_ms: NOW,
        retired: false,
    }
}

/// A rewrap of `row` to `key`: the new envelope tells where it came from.
fn rewrap(row: &SealedRow, key: &str) -> Rewrapped {
    Rewrapped {
        row_id: row.row_id.clone(),
        old: row.envelope.clone(),
        key_id: key.into(),
        new: [b"re:".as_slice(), &row.envelope].concat(),
    }
}

/// Org A with its Super Admin `usr_a` and Manager `usr_m`, and the Manager's project `prj_1`;
/// returns the Manager's scope.
async fn vault_org<S: Store>(store: &S) -> Scope {
    store
        .sync_permissions(&SYS, &permission_rows())
        .await
        .unwrap();
    org_with(store, "org_a", &[("usr_a", 100), ("usr_m", 60)]).await;
    let m = in_org("usr_m", "org_a");
    store
        .create_project(&m, &project_row("prj_1", "org_a", "api"))
        .await
        .unwrap();
    m
}

fn ids(rows: &[SealedRow]) -> Vec<&str> {
    rows.iter().map(|r| r.row_id.as_str()).collect()
}

/// S1: projects and secrets reach only their org, whatever the scope names; names are unique
/// per org (projects) and per project (secrets); an update bumps the version; lists show
/// metadata only.
pub async fn s1_secrets_are_org_scoped_and_listing_never_returns_a_value<S: Store>(store: Arc<S>) {
    let a = vault_org(&*store).await;
    org_with(&*store, "org_b", &[("usr_b", 100)]).await;
    let b = in_org("usr_b", "org_b");
    let api = project_row("prj_1", "org_a", "api");
    let web = project_row("prj_2", "org_a", "web");
    let b_api = project_row("prj_b", "org_b", "api");
    store.create_project(&a, &web).await.unwrap();
    store.create_project(&b, &b_api).await.unwrap();
    assert!(
        matches!(
            store
                .create_project(&a, &project_row("prj_3", "org_a", "api"))
                .await,
            Err(StoreError::Conflict(_))
        ),
        "a second project named api in org A"
    );
    assert_eq!(
        store.projects(&a, "org_a").await.unwrap(),
        [api.clone(), web.clone()],
        "by name"
    );
    assert_eq!(
        store.project(&a, "org_a", "prj_1").await.unwrap(),
        Some(api)
    );

    let db = secret_row("sec_1", "org_a", "prj_1", "DB_URL", "secrets-v1");
    let token = secret_row("sec_2", "org_a", "prj_1", "API_TOKEN", "secrets-v1");
    let b_db = secret_row("sec_b", "org_b", "prj_b", "DB_URL", "secrets-v1");
    store.insert_secret(&a, &db).await.unwrap();
    store.insert_secret(&a, &token).await.unwrap();
    store.insert_secret(&b, &b_db).await.unwrap();
    assert!(matches!(
        store
            .insert_secret(
                &a,
                &secret_row("sec_3", "org_a", "prj_1", "DB_URL", "secrets-v1")
            )
            .await,
        Err(StoreError::Conflict(_))
    ));
    store
        .insert_secret(
            &a,
            &secret_row("sec_4", "org_a", "prj_2", "DB_URL", "secrets-v1"),
        )
        .await
        .unwrap();
    // Another org's project (even under a name it holds there) or none: not found, so a member
    // of A learns nothing of B's names.
    for project in ["prj_b", "prj_none"] {
        assert!(
            matches!(
                store
                    .insert_secret(
                        &a,
                        &secret_row("sec_5", "org_a", project, "DB_URL", "secrets-v1")
                    )
                    .await,
                Err(StoreError::NotFound)
            ),
            "{project}"
        );
    }
    assert_eq!(
        store.secrets(&a, "org_a", "prj_1").await.unwrap(),
        [meta_of(&token), meta_of(&db)],
        "metadata only, by name"
    );
    assert_eq!(
        store
            .secret(&a, "org_a", "prj_1", "DB_URL")
            .await
            .unwrap()
            .as_ref(),
        Some(&db)
    );
    assert_eq!(
        store.secret(&a, "org_a", "prj_1", "NOPE").await.unwrap(),
        None
    );

    // Updates replace the value and bump the version.
    for (i, expected) in [(1u8, 2u32), (2, 3)] {
        assert_eq!(
            store
                .update_secret(
                    &a,
                    "org_a",
                    "sec_1",
                    &new_value("secrets-v2", &[i; 8], NOW + i64::from(i))
                )
                .await
                .unwrap(),
            Some(expected)
        );
    }
    let updated = SecretRow {
        value_key: "secrets-v2".into(),
        value: vec![2; 8],
        version: 3,
        updated_ms: NOW + 2,
        ..db.clone()
    };
    assert_eq!(
        store.secret(&a, "org_a", "prj_1", "DB_URL").await.unwrap(),
        Some(updated.clone())
    );
    assert_eq!(
        store.secrets(&a, "org_a", "prj_1").await.unwrap(),
        [meta_of(&token), meta_of(&updated)]
    );
    assert_eq!(
        store
            .update_secret(&a, "org_a", "sec_none", &new_value("secrets-v2", b"x", NOW))
            .await
            .unwrap(),
        None
    );

    // Nothing of org B through any method: from A's scope, a scope claiming B, no org, none.
    for scope in [
        a.clone(),
        in_org("usr_m", "org_b"),
        as_user("usr_m"),
        Scope::Anonymous,
    ] {
        assert!(
            store.projects(&scope, "org_b").await.unwrap().is_empty(),
            "{scope:?}"
        );
        // Naming B, or naming A with B's ids.
        for org in ["org_b", "org_a"] {
            let at = format!("{scope:?} naming {org}");
            assert_eq!(
                store.project(&scope, org, "prj_b").await.unwrap(),
                None,
                "{at}"
            );
            assert!(
                store
                    .secrets(&scope, org, "prj_b")
                    .await
                    .unwrap()
                    .is_empty(),
                "{at}"
            );
            assert_eq!(
                store.secret(&scope, org, "prj_b", "DB_URL").await.unwrap(),
                None,
                "{at}"
            );
            assert_eq!(
                store
                    .update_secret(&scope, org, "sec_b", &new_value("secrets-v9", b"evil", NOW))
                    .await
                    .unwrap(),
                None,
                "{at}"
            );
            assert!(
                !store
                    .delete_secret(&scope, org, "prj_b", "DB_URL")
                    .await
                    .unwrap(),
                "{at}"
            );
            assert!(
                !store.delete_project(&scope, org, "prj_b").await.unwrap(),
                "{at}"
            );
        }
        assert!(
            matches!(
                store
                    .create_project(&scope, &project_row("prj_x", "org_b", "evil"))
                    .await,
                Err(StoreError::Forbidden)
            ),
            "{scope:?}"
        );
        assert!(
            matches!(
                store
                    .insert_secret(
                        &scope,
                        &secret_row("sec_x", "org_b", "prj_b", "EVIL", "secrets-v1")
                    )
                    .await,
                Err(StoreError::Forbidden)
            ),
            "{scope:?}"
        );
    }
    assert_eq!(store.projects(&SYS, "org_b").await.unwrap(), [b_api]);
    assert_eq!(
        store.secret(&b, "org_b", "prj_b", "DB_URL").await.unwrap(),
        Some(b_db.clone()),
        "org B's secret is untouched"
    );

    // Deleting a secret: once.
    assert!(
        store
            .delete_secret(&a, "org_a", "prj_1", "API_TOKEN")
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete_secret(&a, "org_a", "prj_1", "API_TOKEN")
            .await
            .unwrap()
    );
    assert_eq!(
        store.secrets(&a, "org_a", "prj_1").await.unwrap(),
        [meta_of(&updated)]
    );

    // An org's service key acts there like its Admins.
    store
        .create_api_key(
            &in_org("usr_a", "org_a"),
            &key_row("key_s", "org_a", KeyKind::Service, 1, NOW),
        )
        .await
        .unwrap();
    let svc = key_scope("key_s", "org_a", KeyKind::Service);
    store
        .create_project(&svc, &project_row("prj_k", "org_a", "ci"))
        .await
        .unwrap();
    store
        .insert_secret(
            &svc,
            &secret_row("sec_k", "org_a", "prj_k", "TOKEN", "secrets-v2"),
        )
        .await
        .unwrap();
    assert_eq!(
        store.secrets(&svc, "org_a", "prj_k").await.unwrap().len(),
        1
    );
    assert!(store.projects(&svc, "org_b").await.unwrap().is_empty());
}

/// S1: deleting a project deletes its secrets (and frees its name); deleting the org deletes
/// its projects and their secrets.
pub async fn s1_deleting_a_project_or_its_org_takes_its_secrets_along<S: Store>(store: Arc<S>) {
    let m = vault_org(&*store).await;
    store
        .create_project(&m, &project_row("prj_2", "org_a", "web"))
        .await
        .unwrap();
    for (id, project, name) in [
        ("sec_1", "prj_1", "A"),
        ("sec_2", "prj_1", "B"),
        ("sec_3", "prj_1", "C"),
        ("sec_4", "prj_2", "A"),
    ] {
        store
            .insert_secret(&m, &secret_row(id, "org_a", project, name, "secrets-v1"))
            .await
            .unwrap();
    }
    assert!(store.delete_project(&m, "org_a", "prj_1").await.unwrap());
    assert!(!store.delete_project(&m, "org_a", "prj_1").await.unwrap());
    assert_eq!(store.project(&SYS, "org_a", "prj_1").await.unwrap(), None);
    assert!(
        store
            .secrets(&SYS, "org_a", "prj_1")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.secret(&SYS, "org_a", "prj_1", "A").await.unwrap(),
        None
    );
    assert_eq!(
        store.sealed_counts(&SYS).await.unwrap(),
        [SealedCount {
            column: SealedColumn::SecretValue,
            key_id: "secrets-v1".into(),
            rows: 1
        }],
        "no secret of the deleted project is left behind"
    );
    // The name and the secret names are free again.
    store
        .create_project(&m, &project_row("prj_3", "org_a", "api"))
        .await
        .unwrap();
    store
        .insert_secret(
            &m,
            &secret_row("sec_5", "org_a", "prj_3", "A", "secrets-v1"),
        )
        .await
        .unwrap();
    assert!(
        store
            .delete_org(&in_org("usr_a", "org_a"), "org_a")
            .await
            .unwrap()
    );
    assert!(store.projects(&SYS, "org_a").await.unwrap().is_empty());
    assert!(store.sealed_counts(&SYS).await.unwrap().is_empty());
}

/// S3: a rewrap writes a new envelope only where the row still holds the one it read, so a
/// value written (or mail delivered) meanwhile wins; the count says what changed.
pub async fn s3_replace_sealed_writes_only_rows_that_still_hold_the_old_envelope<S: Store>(
    store: Arc<S>,
) {
    let m = vault_org(&*store).await;
    for i in 1..=3 {
        store
            .insert_secret(
                &m,
                &secret_row(
                    &format!("sec_{i}"),
                    "org_a",
                    "prj_1",
                    &format!("S{i}"),
                    "secrets-v1",
                ),
            )
            .await
            .unwrap();
    }
    let batch = store
        .sealed_batch(&SYS, SealedColumn::SecretValue, "secrets-v2", None, 10)
        .await
        .unwrap();
    assert_eq!(ids(&batch), ["sec_1", "sec_2", "sec_3"]);
    // A user writes sec_2 after the batch was read.
    assert_eq!(
        store
            .update_secret(
                &m,
                "org_a",
                "sec_2",
                &new_value("secrets-v2", b"users", NOW + 5)
            )
            .await
            .unwrap(),
        Some(2)
    );
    let rewrapped: Vec<Rewrapped> = batch.iter().map(|r| rewrap(r, "secrets-v2")).collect();
    assert_eq!(
        store
            .replace_sealed(&SYS, SealedColumn::SecretValue, &rewrapped)
            .await
            .unwrap(),
        2,
        "the row written meanwhile is not counted"
    );
    for i in [1, 3] {
        let id = format!("sec_{i}");
        let mut expected = secret_row(&id, "org_a", "prj_1", &format!("S{i}"), "secrets-v2");
        expected.value = [b"re:".as_slice(), format!("sealed:{id}").as_bytes()].concat();
        assert_eq!(
            store
                .secret(&m, "org_a", "prj_1", &format!("S{i}"))
                .await
                .unwrap(),
            Some(expected),
            "rewrapped in place: same version, same update time"
        );
    }
    let kept = store
        .secret(&m, "org_a", "prj_1", "S2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (kept.value.as_slice(), kept.version),
        (b"users".as_slice(), 2)
    );
    assert_eq!(
        store
            .replace_sealed(&SYS, SealedColumn::SecretValue, &rewrapped)
            .await
            .unwrap(),
        0,
        "a replay finds no old envelope"
    );
    assert_eq!(
        store
            .replace_sealed(&SYS, SealedColumn::SecretValue, &[])
            .await
            .unwrap(),
        0
    );

    // Mail: a message delivered meanwhile keeps its emptied body.
    for id in ["mail_1", "mail_2"] {
        store
            .enqueue_mail(&SYS, &sealed_mail(id, "mail-v1"))
            .await
            .unwrap();
    }
    let batch = store
        .sealed_batch(&SYS, SealedColumn::MailBody, "mail-v2", None, 10)
        .await
        .unwrap();
    assert_eq!(ids(&batch), ["mail_1", "mail_2"]);
    store.mail_sent(&SYS, "mail_2", NOW + 1).await.unwrap();
    let rewrapped: Vec<Rewrapped> = batch.iter().map(|r| rewrap(r, "mail-v2")).collect();
    assert_eq!(
        store
            .replace_sealed(&SYS, SealedColumn::MailBody, &rewrapped)
            .await
            .unwrap(),
        1
    );
    let claimed = store.claim_mail(&SYS, NOW + 10, 60_000, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, "mail_1");
    assert_eq!(claimed[0].sealed, b"re:sealed:mail_1");
    assert_eq!(
        store.sealed_counts(&SYS).await.unwrap(),
        [
            SealedCount {
                column: SealedColumn::MailBody,
                key_id: "mail-v2".into(),
                rows: 1
            },
            SealedCount {
                column: SealedColumn::SecretValue,
                key_id: "secrets-v2".into(),
                rows: 3
            }
        ]
    );
}

/// S3: rewrap pages through rows by id, skipping rows already under the current key and
/// mail whose body is gone; a message of unknown key ('') is rewrapped too.
pub async fn s3_sealed_batch_pages_by_row_id_and_skips_current_key_and_empty_mail<S: Store>(
    store: Arc<S>,
) {
    let m = vault_org(&*store).await;
    // Inserted out of order: pages follow the row id.
    for i in [7, 1, 5, 3, 2, 6, 4] {
        let key = if i % 3 == 0 {
            "secrets-v2"
        } else {
            "secrets-v1"
        };
        store
            .insert_secret(
                &m,
                &secret_row(
                    &format!("sec_{i:02}"),
                    "org_a",
                    "prj_1",
                    &format!("S{i}"),
                    key,
                ),
            )
            .await
            .unwrap();
    }
    let page = |after: Option<&'static str>| {
        let store = store.clone();
        async move {
            store
                .sealed_batch(&SYS, SealedColumn::SecretValue, "secrets-v2", after, 2)
                .await
                .unwrap()
        }
    };
    let first = page(None).await;
    assert_eq!(ids(&first), ["sec_01", "sec_02"]);
    assert_eq!(
        first[0],
        SealedRow {
            row_id: "sec_01".into(),
            key_id: "secrets-v1".into(),
            envelope: b"sealed:sec_01".to_vec()
        }
    );
    assert_eq!(ids(&page(Some("sec_02")).await), ["sec_04", "sec_05"]);
    assert_eq!(ids(&page(Some("sec_05")).await), ["sec_07"]);
    assert!(page(Some("sec_07")).await.is_empty());

    for (id, key) in [
        ("mail_1", "mail-v1"),
        ("mail_2", "mail-v2"),
        ("mail_3", "mail-v1"),
        ("mail_4", "mail-v1"),
        ("mail_5", "mail-v1"),
        ("mail_6", ""),
    ] {
        store
            .enqueue_mail(&SYS, &sealed_mail(id, key))
            .await
            .unwrap();
    }
    store.mail_sent(&SYS, "mail_3", NOW + 1).await.unwrap();
    store
        .mail_failed(&SYS, "mail_4", NOW + 1, None, "mailbox unavailable")
        .await
        .unwrap();
    store
        .mail_failed(&SYS, "mail_5", NOW + 1, Some(NOW + 60_000), "try later")
        .await
        .unwrap();
    let mail = store
        .sealed_batch(&SYS, SealedColumn::MailBody, "mail-v2", None, 10)
        .await
        .unwrap();
    assert_eq!(
        mail.iter()
            .map(|r| (r.row_id.as_str(), r.key_id.as_str()))
            .collect::<Vec<_>>(),
        [("mail_1", "mail-v1"), ("mail_5", "mail-v1"), ("mail_6", "")]
    );
    assert_eq!(mail[2].envelope, b"sealed:mail_6");
    assert_eq!(
        ids(&store
            .sealed_batch(&SYS, SealedColumn::MailBody, "mail-v2", Some("mail_1"), 1)
            .await
            .unwrap()),
        ["mail_5"]
    );
}

/// S3: a key is retired only once no row of the given columns is sealed by it (nor by an
/// unknown key); key ids are the envelopes' `<purpose>-v<N>`.
pub async fn s3_retire_refuses_while_a_row_is_sealed_by_the_key<S: Store>(store: Arc<S>) {
    for key in [
        ring_key("secrets", 1, "secrets-v1-abcdef12"),
        ring_key("secrets", 2, "secrets-v2-12345678"),
        ring_key("mail", 1, "mail-v1-0badf00d"),
        ring_key("mail", 2, "mail-v2-feedbeef"),
    ] {
        store.insert_key(&SYS, &key).await.unwrap();
    }
    let retired = |store: Arc<S>| async move {
        store
            .keys(&SYS)
            .await
            .unwrap()
            .into_iter()
            .filter(|k| k.retired)
            .map(|k| k.key_id)
            .collect::<Vec<_>>()
    };
    let m = vault_org(&*store).await;
    for (id, name, key) in [("sec_1", "A", "secrets-v1"), ("sec_2", "B", "secrets-v2")] {
        store
            .insert_secret(&m, &secret_row(id, "org_a", "prj_1", name, key))
            .await
            .unwrap();
    }
    store
        .enqueue_mail(&SYS, &sealed_mail("mail_1", "mail-v1"))
        .await
        .unwrap();
    let v1 = ["secrets-v1".to_owned()];
    for columns in [&[SealedColumn::SecretValue][..], SealedColumn::ALL] {
        assert!(
            matches!(
                store.retire_keys(&SYS, columns, &v1).await,
                Err(StoreError::Conflict(_))
            ),
            "{columns:?}"
        );
    }
    assert!(retired(store.clone()).await.is_empty(), "nothing retired");

    // Rewrapped, the key goes; the mail key's message does not hold back a secrets key.
    let rows = store
        .sealed_batch(&SYS, SealedColumn::SecretValue, "secrets-v2", None, 10)
        .await
        .unwrap();
    let rewrapped: Vec<Rewrapped> = rows.iter().map(|r| rewrap(r, "secrets-v2")).collect();
    assert_eq!(
        store
            .replace_sealed(&SYS, SealedColumn::SecretValue, &rewrapped)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .retire_keys(&SYS, &[SealedColumn::SecretValue], &v1)
            .await
            .unwrap(),
        1
    );
    assert_eq!(retired(store.clone()).await, ["secrets-v1-abcdef12"]);

    // Pending mail holds its key; delivered mail does not.
    let mail_v1 = ["mail-v1".to_owned()];
    assert!(matches!(
        store
            .retire_keys(&SYS, &[SealedColumn::MailBody], &mail_v1)
            .await,
        Err(StoreError::Conflict(_))
    ));
    store.mail_sent(&SYS, "mail_1", NOW + 1).await.unwrap();
    assert_eq!(
        store
            .retire_keys(&SYS, &[SealedColumn::MailBody], &mail_v1)
            .await
            .unwrap(),
        1
    );
    // A message whose key could not be told may be sealed by any key of its column.
    store
        .enqueue_mail(&SYS, &sealed_mail("mail_2", ""))
        .await
        .unwrap();
    let mail_v2 = ["mail-v2".to_owned()];
    assert!(matches!(
        store
            .retire_keys(&SYS, &[SealedColumn::MailBody], &mail_v2)
            .await,
        Err(StoreError::Conflict(_))
    ));
    store
        .mail_failed(&SYS, "mail_2", NOW + 2, None, "mailbox unavailable")
        .await
        .unwrap();
    assert_eq!(
        store
            .retire_keys(&SYS, &[SealedColumn::MailBody], &mail_v2)
            .await
            .unwrap(),
        1
    );
    let mut now_retired = retired(store.clone()).await;
    now_retired.sort_unstable();
    assert_eq!(
        now_retired,
        [
            "mail-v1-0badf00d",
            "mail-v2-feedbeef",
            "secrets-v1-abcdef12"
        ]
    );
    assert_eq!(
        store
            .retire_keys(&SYS, SealedColumn::ALL, &[])
            .await
            .unwrap(),
        0
    );
}

/// S3: a master-key rotation replaces the canary and every wrapped key together, or nothing:
/// not over a canary another rotation changed, not with a key the ring lacks, not leaving one
/// of the ring's keys out.
pub async fn s3_replace_key_ring_is_all_or_nothing_and_checks_the_canary<S: Store>(store: Arc<S>) {
    store.init_canary(&SYS, b"canary-1", NOW).await.unwrap();
    let data = ring_key("secrets", 1, "secrets-v1-abcdef12");
    let signing = StoredKey {
        purpose: "audit".into(),
        version: 1,
        key_id: "audit-v1-0011".into(),
        algorithm: "Ed25519".into(),
        wrapped: vec![2; 8],
        public_key: Some(vec![4; 32]),
        created_ms: NOW,
        retired: true,
    };
    store.insert_key(&SYS, &data).await.unwrap();
    store.insert_key(&SYS, &signing).await.unwrap();
    let before = store.keys(&SYS).await.unwrap();
    let rw = |k: &StoredKey| StoredKey {
        wrapped: [b"new:".as_slice(), &k.wrapped].concat(),
        ..k.clone()
    };
    let unchanged = |store: Arc<S>, before: Vec<StoredKey>, why: &'static str| async move {
        assert_eq!(
            store.canary(&SYS).await.unwrap().as_deref(),
            Some(b"canary-1".as_slice()),
            "{why}"
        );
        assert_eq!(store.keys(&SYS).await.unwrap(), before, "{why}");
    };
    assert!(matches!(
        store
            .replace_key_ring(&SYS, b"canary-0", b"canary-2", &[rw(&data), rw(&signing)])
            .await,
        Err(StoreError::Conflict(_))
    ));
    unchanged(store.clone(), before.clone(), "stale canary").await;
    let stray = StoredKey {
        version: 9,
        ..rw(&data)
    };
    assert!(
        store
            .replace_key_ring(
                &SYS,
                b"canary-1",
                b"canary-2",
                &[rw(&data), rw(&signing), stray]
            )
            .await
            .is_err()
    );
    unchanged(store.clone(), before.clone(), "a key the ring lacks").await;
    assert!(
        store
            .replace_key_ring(&SYS, b"canary-1", b"canary-2", &[rw(&data), rw(&data)])
            .await
            .is_err()
    );
    unchanged(store.clone(), before.clone(), "a key given twice").await;
    assert!(
        store
            .replace_key_ring(&SYS, b"canary-1", b"canary-2", &[rw(&data)])
            .await
            .is_err()
    );
    unchanged(store.clone(), before.clone(), "a key left out").await;

    store
        .replace_key_ring(&SYS, b"canary-1", b"canary-2", &[rw(&signing), rw(&data)])
        .await
        .unwrap();
    assert_eq!(
        store.canary(&SYS).await.unwrap().as_deref(),
        Some(b"canary-2".as_slice())
    );
    assert_eq!(
        store.keys(&SYS).await.unwrap(),
        [rw(&signing), rw(&data)],
        "every key re-wrapped, nothing else changed"
    );
    assert!(matches!(
        store
            .replace_key_ring(&SYS, b"canary-1", b"canary-3", &[data.clone(), signing])
            .await,
        Err(StoreError::Conflict(_))
    ));
}

/// S1: concurrent reservations under one key add up exactly, each seeing its own total.
pub async fn s1_encryption_reservations_are_atomic_under_concurrency<S: Store>(store: Arc<S>) {
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.reserve_encryptions(&SYS, "secrets-v1", 100)
                .await
                .unwrap()
        }));
    }
    let mut totals = Vec::new();
    for t in tasks {
        totals.push(t.await.unwrap());
    }
    totals.sort_unstable();
    assert_eq!(totals, (1..=20).map(|i| i * 100).collect::<Vec<u64>>());
    assert_eq!(
        store.reserve_encryptions(&SYS, "mail-v1", 5).await.unwrap(),
        5
    );
    assert_eq!(
        store.encryptions(&SYS).await.unwrap(),
        [("mail-v1".to_owned(), 5), ("secrets-v1".to_owned(), 2000)]
    );
}

/// S1: status counts each sealed column's rows per key, mail without a body left out.
pub async fn s1_sealed_counts_group_rows_by_key<S: Store>(store: Arc<S>) {
    assert!(store.sealed_counts(&SYS).await.unwrap().is_empty());
    let m = vault_org(&*store).await;
    for (id, name, key) in [
        ("sec_1", "A", "secrets-v1"),
        ("sec_2", "B", "secrets-v2"),
        ("sec_3", "C", "secrets-v1"),
    ] {
        store
            .insert_secret(&m, &secret_row(id, "org_a", "prj_1", name, key))
            .await
            .unwrap();
    }
    for (id, key) in [
        ("mail_1", "mail-v1"),
        ("mail_2", "mail-v2"),
        ("mail_3", "mail-v1"),
        ("mail_4", ""),
    ] {
        store
            .enqueue_mail(&SYS, &sealed_mail(id, key))
            .await
            .unwrap();
    }
    store.mail_sent(&SYS, "mail_3", NOW + 1).await.unwrap();
    let count = |column, key: &str, rows| SealedCount {
        column,
        key_id: key.into(),
        rows,
    };
    let mut counts = store.sealed_counts(&SYS).await.unwrap();
    counts.sort_by_key(|c| (format!("{:?}", c.column), c.key_id.clone()));
    assert_eq!(
        counts,
        [
            count(SealedColumn::MailBody, "", 1),
            count(SealedColumn::MailBody, "mail-v1", 1),
            count(SealedColumn::MailBody, "mail-v2", 1),
            count(SealedColumn::SecretValue, "secrets-v1", 2),
            count(SealedColumn::SecretValue, "secrets-v2", 1),
        ]
    );
}

/// The vault's system paths (budget, status, rewrap, retirement, master-key rotation) refuse
/// every request scope, and change nothing for them.
pub async fn s1_vault_system_paths_refuse_request_scopes<S: Store>(store: Arc<S>) {
    let m = vault_org(&*store).await;
    store
        .insert_secret(
            &m,
            &secret_row("sec_1", "org_a", "prj_1", "A", "secrets-v1"),
        )
        .await
        .unwrap();
    store.init_canary(&SYS, b"canary-1", NOW).await.unwrap();
    store
        .insert_key(&SYS, &ring_key("secrets", 1, "secrets-v1-abcdef12"))
        .await
        .unwrap();
    let row = store
        .sealed_batch(&SYS, SealedColumn::SecretValue, "secrets-v2", None, 1)
        .await
        .unwrap();
    let forbidden = |r: Result<(), StoreError>| matches!(r, Err(StoreError::Forbidden));
    for scope in [
        in_org("usr_a", "org_a"),
        m.clone(),
        as_user("usr_a"),
        key_scope("key_s", "org_a", KeyKind::Service),
        Scope::Anonymous,
    ] {
        let at = format!("{scope:?}");
        assert!(
            forbidden(
                store
                    .reserve_encryptions(&scope, "secrets-v1", 1)
                    .await
                    .map(|_| ())
            ),
            "{at}"
        );
        assert!(
            forbidden(store.encryptions(&scope).await.map(|_| ())),
            "{at}"
        );
        assert!(
            forbidden(store.sealed_counts(&scope).await.map(|_| ())),
            "{at}"
        );
        assert!(
            forbidden(
                store
                    .sealed_batch(&scope, SealedColumn::SecretValue, "secrets-v2", None, 10)
                    .await
                    .map(|_| ())
            ),
            "{at}"
        );
        assert!(
            forbidden(
                store
                    .replace_sealed(&scope, SealedColumn::SecretValue, &[rewrap(&row[0], "x")])
                    .await
                    .map(|_| ())
            ),
            "{at}"
        );
        assert!(
            forbidden(
                store
                    .retire_keys(&scope, &[], &["secrets-v1".to_owned()])
                    .await
                    .map(|_| ())
            ),
            "{at}"
        );
        assert!(
            forbidden(
                store
                    .replace_key_ring(&scope, b"canary-1", b"evil", &[])
                    .await
            ),
            "{at}"
        );
    }
    assert!(store.encryptions(&SYS).await.unwrap().is_empty());
    assert_eq!(
        store
            .secret(&m, "org_a", "prj_1", "A")
            .await
            .unwrap()
            .unwrap()
            .value,
        b"sealed:sec_1"
    );
    assert_eq!(
        store.canary(&SYS).await.unwrap().as_deref(),
        Some(b"canary-1".as_slice())
    );
    assert!(!store.keys(&SYS).await.unwrap()[0].retired);
}

/// Expands into one `#[tokio::test]` per conformance check (see the module docs for `$make`).
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@each $make;
            audit_append_builds_a_contiguous_chain,
            audit_concurrent_appends_stay_linear,
            audit_checkpoints_are_unique_per_size,
            keyring_canary_and_keys,
            non_system_scopes_cannot_touch_system_tables,
            a8_concurrent_attempts_cannot_slip_past_the_limit,
            a8_clear_purge_and_scope,
            a8_reservations_bound_parallel_evaluations_and_one_failure_starts_the_lock,
            a1_accounts_are_unique_by_email_and_private,
            a1_stored_addresses_page_in_id_order_and_are_rewritten_conditionally,
            a3_concurrent_rotations_of_one_token_have_one_winner,
            a4_sessions_are_per_user_and_revocation_ends_the_family,
            a7_magic_links_are_single_use_expiring_and_newest_only,
            a7_concurrent_consumers_of_one_link_have_one_winner,
            mail_outbox_leases_retries_and_finishes,
            a6_cleanup_counts_then_purges_only_what_ended,
            r1_orgs_are_visible_only_to_their_members,
            r2_the_last_super_admin_cannot_be_demoted_or_removed_even_concurrently,
            r1_invitations_are_accepted_once_and_replace_older_ones,
            r2_a_replacement_invitation_withdraws_only_what_its_author_could_grant,
            r6_api_keys_are_found_by_hash_and_revoked_keys_lose_their_org,
            r5_private_activity_is_visible_to_its_user_only,
            r4_a_scope_inside_org_a_sees_nothing_of_org_b,
            r1_org_audit_events_page_newest_first_within_their_org,
            s1_secrets_are_org_scoped_and_listing_never_returns_a_value,
            s1_deleting_a_project_or_its_org_takes_its_secrets_along,
            s3_replace_sealed_writes_only_rows_that_still_hold_the_old_envelope,
            s3_sealed_batch_pages_by_row_id_and_skips_current_key_and_empty_mail,
            s3_retire_refuses_while_a_row_is_sealed_by_the_key,
            s3_replace_key_ring_is_all_or_nothing_and_checks_the_canary,
            s1_encryption_reservations_are_atomic_under_concurrency,
            s1_sealed_counts_group_rows_by_key,
            s1_vault_system_paths_refuse_request_scopes,
            l3_licenses_are_found_by_key_hash_and_org_scoped,
            l2_concurrent_activations_never_exceed_the_machine_limit,
            l7_key_failures_freeze_exactly_once_and_queue_one_mail,
            l5_revocation_is_once_and_lists_are_per_product,
            l1_deleting_an_org_takes_its_licenses_along
        );
        $crate::conformance_wallet!($make);
        $crate::conformance_webhooks!($make);
        $crate::conformance_idempotency!($make);
    };
    (@each $make:expr; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some((store, _guard)) = $make else { return };
                $crate::conformance::$name(store).await;
            }
        )*
    };
}
