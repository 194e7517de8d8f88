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
    AttemptDecision, ChainHead, CheckpointRecord, MagicLinkRow, NewAuditEvent, OutboundMail,
    Purgeable, Rotation, Scope, SessionRow, Store, StoreError, StoredKey, ThrottleRule, UserRow,
};

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

fn user_row(id: &str, email: &str) -> UserRow {
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

fn as_user(id: &str) -> Scope {
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
    let kinds = [
        (Purgeable::EndedSessions, 3),
        (Purgeable::SpentLinks, 2),
        (Purgeable::FinishedMail { retention_ms: week }, 1),
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
            a1_accounts_are_unique_by_email_and_private,
            a3_concurrent_rotations_of_one_token_have_one_winner,
            a4_sessions_are_per_user_and_revocation_ends_the_family,
            a7_magic_links_are_single_use_expiring_and_newest_only,
            a7_concurrent_consumers_of_one_link_have_one_winner,
            mail_outbox_leases_retries_and_finishes,
            a6_cleanup_counts_then_purges_only_what_ended
        );
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
