//! Conformance of [`crate::WalletStore`] (SPEC P5): balances, the double-entry ledger, the
//! overdraft floor, optimistic and locked postings, idempotent references, reversals, and who
//! may read and post.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use super::{NOW, SYS, as_user, in_org, org_with, permission_rows, user_row};
use crate::{LedgerEntry, Movement, MovementKind, Posted, Scope, Store, StoreError, WalletRow};

/// The tests of this area, listed for [`crate::conformance_tests!`].
#[macro_export]
macro_rules! conformance_wallet {
    ($make:expr) => {
        $crate::conformance_tests!(@each $make;
            p5_credit_debit_and_history_keep_the_ledger_balanced,
            p5_debits_never_overdraw_without_a_credit_line,
            p5_stale_version_is_a_conflict_and_writes_nothing,
            p5_duplicate_reference_posts_once,
            p5_reversal_undoes_a_credit_once,
            p5_concurrent_locked_debits_never_overdraw,
            p5_wallets_are_visible_and_postable_only_within_their_owner,
            p5_deleting_an_org_takes_its_wallets_and_ledger_along
        );
    };
}

/// The payments path: the only one that credits a user's wallet.
const PAY: Scope = Scope::System("payments");

/// An empty wallet of an org (`org`) or a user (`user`) created at `NOW`.
fn wallet_row(id: &str, org: Option<&str>, user: Option<&str>, currency: &str) -> WalletRow {
    WalletRow {
        id: id.into(),
        org_id: org.map(Into::into),
        user_id: user.map(Into::into),
        currency: currency.into(),
        balance: 0,
        credit_limit: 0,
        ledger_version: 0,
        created_ms: NOW,
        updated_ms: NOW,
    }
}

fn movement(txn: &str, kind: MovementKind, amount: i64, reference: Option<&str>) -> Movement {
    Movement {
        txn_id: txn.into(),
        kind,
        amount,
        reverses: None,
        reference: reference.map(Into::into),
        memo: format!("memo {txn}"),
        created_ms: NOW + 1,
        created_by: "usr_a".into(),
    }
}

fn credit(txn: &str, amount: i64) -> Movement {
    movement(txn, MovementKind::Credit, amount, None)
}

fn debit(txn: &str, amount: i64) -> Movement {
    movement(txn, MovementKind::Debit, amount, None)
}

fn reversal(txn: &str, of: &str) -> Movement {
    Movement {
        reverses: Some(of.into()),
        ..movement(txn, MovementKind::Reversal, 0, None)
    }
}

fn applied(p: Posted) -> LedgerEntry {
    match p {
        Posted::Applied(e) => e,
        other => panic!("expected Applied, got {other:?}"),
    }
}

/// Org A (Super Admin `usr_a`) with its EUR wallet `wal_a`; returns the admin's scope.
async fn wallet_org<S: Store>(store: &S) -> Scope {
    store
        .sync_permissions(&SYS, &permission_rows())
        .await
        .unwrap();
    org_with(store, "org_a", &[("usr_a", 100)]).await;
    let a = in_org("usr_a", "org_a");
    store
        .create_wallet(&a, &wallet_row("wal_a", Some("org_a"), None, "EUR"))
        .await
        .unwrap();
    a
}

/// The wallet's balance, version and ledger agree: the wallet account sums to the balance and
/// every posting to zero.
async fn assert_balanced<S: Store>(store: &S, wallet: &str, balance: i64, version: i64) {
    let w = store.wallet(&SYS, wallet).await.unwrap().unwrap();
    assert_eq!((w.balance, w.ledger_version), (balance, version));
    assert_eq!(store.ledger_sums(&SYS, wallet).await.unwrap(), (balance, 0));
    let all = store.entries(&SYS, wallet, None, 10_000).await.unwrap();
    assert_eq!(all.len() as i64, version, "one wallet entry per posting");
    assert_eq!(all.iter().map(|e| e.amount).sum::<i64>(), balance);
}

/// P5: credits and debits move the balance and the version; history lists the wallet side of
/// each posting newest first, pages by `before`, and the ledger sums to the balance and zero.
pub async fn p5_credit_debit_and_history_keep_the_ledger_balanced<S: Store>(store: Arc<S>) {
    let a = wallet_org(&*store).await;
    let fresh = store.wallet(&a, "wal_a").await.unwrap().unwrap();
    assert_eq!(fresh, wallet_row("wal_a", Some("org_a"), None, "EUR"));
    assert!(matches!(
        store
            .create_wallet(&a, &wallet_row("wal_a2", Some("org_a"), None, "EUR"))
            .await,
        Err(StoreError::Conflict("wallet_exists"))
    ));
    store
        .create_wallet(&a, &wallet_row("wal_a_usd", Some("org_a"), None, "USD"))
        .await
        .unwrap();
    let listed: Vec<String> = store
        .wallets_of(&a, Some("org_a"), None)
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.id)
        .collect();
    assert_eq!(listed, vec!["wal_a", "wal_a_usd"], "by currency");

    let e1 = applied(
        store
            .post(&a, "wal_a", Some(0), &credit("wtx_1", 500))
            .await
            .unwrap(),
    );
    assert_eq!(
        e1,
        LedgerEntry {
            txn_id: "wtx_1".into(),
            wallet_id: "wal_a".into(),
            seq: 1,
            kind: MovementKind::Credit,
            amount: 500,
            balance_after: 500,
            reverses: None,
            reference: None,
            memo: "memo wtx_1".into(),
            created_ms: NOW + 1,
            created_by: "usr_a".into(),
        }
    );
    let e2 = applied(
        store
            .post(&a, "wal_a", None, &debit("wtx_2", 120))
            .await
            .unwrap(),
    );
    assert_eq!((e2.seq, e2.amount, e2.balance_after), (2, -120, 380));
    let e3 = applied(
        store
            .post(&a, "wal_a", Some(2), &credit("wtx_3", 20))
            .await
            .unwrap(),
    );
    assert_eq!((e3.seq, e3.balance_after), (3, 400));
    for i in 4..=6 {
        store
            .post(&a, "wal_a", None, &debit(&format!("wtx_{i}"), 10))
            .await
            .unwrap();
    }
    assert_balanced(&*store, "wal_a", 370, 6).await;
    let w = store.wallet(&a, "wal_a").await.unwrap().unwrap();
    assert_eq!(w.updated_ms, NOW + 1);

    let history = store.entries(&a, "wal_a", None, 100).await.unwrap();
    assert_eq!(
        history.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![6, 5, 4, 3, 2, 1],
        "newest first"
    );
    assert_eq!(history[3], e3);
    assert_eq!(history[4], e2);
    assert_eq!(history[5], e1);
    let page = store.entries(&a, "wal_a", Some(5), 2).await.unwrap();
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![4, 3]);
    let last = store.entries(&a, "wal_a", Some(3), 10).await.unwrap();
    assert_eq!(last.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2, 1]);
    assert!(
        store
            .entries(&a, "wal_a", Some(1), 10)
            .await
            .unwrap()
            .is_empty()
    );
    // The other wallet is untouched.
    assert_balanced(&*store, "wal_a_usd", 0, 0).await;
    // A non-positive amount is refused and writes nothing.
    assert!(
        store
            .post(&a, "wal_a", None, &credit("wtx_bad", 0))
            .await
            .is_err()
    );
    assert!(
        store
            .post(&a, "wal_a", None, &debit("wtx_bad", -5))
            .await
            .is_err()
    );
    assert_balanced(&*store, "wal_a", 370, 6).await;
    // Unknown wallets.
    assert!(matches!(
        store.post(&a, "wal_none", None, &credit("wtx_x", 1)).await,
        Err(StoreError::NotFound)
    ));
    assert!(store.wallet(&a, "wal_none").await.unwrap().is_none());
}

/// P5: a debit below zero is `Insufficient` and writes nothing; with a credit line the balance
/// may go down to `-credit_limit` and not one unit further.
pub async fn p5_debits_never_overdraw_without_a_credit_line<S: Store>(store: Arc<S>) {
    let a = wallet_org(&*store).await;
    store
        .post(&a, "wal_a", None, &credit("wtx_1", 100))
        .await
        .unwrap();
    assert_eq!(
        store
            .post(&a, "wal_a", None, &debit("wtx_2", 101))
            .await
            .unwrap(),
        Posted::Insufficient {
            balance: 100,
            credit_limit: 0
        }
    );
    assert_eq!(
        store
            .post(&a, "wal_a", Some(1), &debit("wtx_2", 101))
            .await
            .unwrap(),
        Posted::Insufficient {
            balance: 100,
            credit_limit: 0
        },
        "the optimistic path checks the floor too"
    );
    assert_balanced(&*store, "wal_a", 100, 1).await;

    assert!(
        store
            .set_credit_limit(&a, "wal_a", 50, NOW + 2)
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_credit_limit(&a, "wal_none", 50, NOW + 2)
            .await
            .unwrap()
    );
    let w = store.wallet(&a, "wal_a").await.unwrap().unwrap();
    assert_eq!((w.credit_limit, w.updated_ms), (50, NOW + 2));
    let e = applied(
        store
            .post(&a, "wal_a", Some(1), &debit("wtx_3", 140))
            .await
            .unwrap(),
    );
    assert_eq!(e.balance_after, -40);
    assert_eq!(
        store
            .post(&a, "wal_a", None, &debit("wtx_4", 11))
            .await
            .unwrap(),
        Posted::Insufficient {
            balance: -40,
            credit_limit: 50
        }
    );
    let e = applied(
        store
            .post(&a, "wal_a", None, &debit("wtx_5", 10))
            .await
            .unwrap(),
    );
    assert_eq!(e.balance_after, -50, "exactly down to the limit");
    assert!(matches!(
        store
            .post(&a, "wal_a", Some(3), &debit("wtx_6", 1))
            .await
            .unwrap(),
        Posted::Insufficient { .. }
    ));
    // The credit line cannot be cut below what is already drawn.
    assert!(
        store
            .set_credit_limit(&a, "wal_a", 10, NOW + 3)
            .await
            .is_err()
    );
    assert!(
        store
            .set_credit_limit(&a, "wal_a", -1, NOW + 3)
            .await
            .is_err()
    );
    assert_eq!(
        store
            .wallet(&a, "wal_a")
            .await
            .unwrap()
            .unwrap()
            .credit_limit,
        50
    );
    assert_balanced(&*store, "wal_a", -50, 3).await;
}

/// P5: a posting whose expected version has moved is `Conflict` and changes nothing; the
/// retry with the current version applies.
pub async fn p5_stale_version_is_a_conflict_and_writes_nothing<S: Store>(store: Arc<S>) {
    let a = wallet_org(&*store).await;
    store
        .post(&a, "wal_a", Some(0), &credit("wtx_1", 100))
        .await
        .unwrap();
    for stale in [0, 2, 7] {
        assert_eq!(
            store
                .post(&a, "wal_a", Some(stale), &debit("wtx_2", 30))
                .await
                .unwrap(),
            Posted::Conflict,
            "expected version {stale}"
        );
    }
    // A stale credit is a conflict too, and so is a stale reversal.
    assert_eq!(
        store
            .post(&a, "wal_a", Some(0), &credit("wtx_2", 30))
            .await
            .unwrap(),
        Posted::Conflict
    );
    assert_eq!(
        store
            .post(&a, "wal_a", Some(0), &reversal("wtx_2", "wtx_1"))
            .await
            .unwrap(),
        Posted::Conflict
    );
    assert_balanced(&*store, "wal_a", 100, 1).await;
    let e = applied(
        store
            .post(&a, "wal_a", Some(1), &debit("wtx_2", 30))
            .await
            .unwrap(),
    );
    assert_eq!((e.seq, e.balance_after), (2, 70));
    // Concurrent optimistic postings at the same version: exactly one wins.
    let mut tasks = Vec::new();
    for i in 0..10 {
        let s = store.clone();
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            s.post(&a, "wal_a", Some(2), &debit(&format!("wtx_c{i}"), 1))
                .await
                .unwrap()
        }));
    }
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Posted::Applied(_) => won += 1,
            Posted::Conflict => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(won, 1);
    assert_balanced(&*store, "wal_a", 69, 3).await;
}

/// P5: a reference posts once per wallet: the second post (even with another amount or kind,
/// even stale) is `Duplicate` with the first entry; 20 concurrent posts of one reference apply
/// once. The same reference on another wallet is another posting.
pub async fn p5_duplicate_reference_posts_once<S: Store>(store: Arc<S>) {
    let a = wallet_org(&*store).await;
    store
        .create_wallet(&a, &wallet_row("wal_b", Some("org_a"), None, "USD"))
        .await
        .unwrap();
    let first = applied(
        store
            .post(
                &a,
                "wal_a",
                Some(0),
                &movement("wtx_1", MovementKind::Credit, 100, Some("evt_1")),
            )
            .await
            .unwrap(),
    );
    assert_eq!(first.reference.as_deref(), Some("evt_1"));
    for (expected, m) in [
        (
            None,
            movement("wtx_2", MovementKind::Credit, 100, Some("evt_1")),
        ),
        (
            Some(0),
            movement("wtx_2", MovementKind::Credit, 100, Some("evt_1")),
        ),
        (
            Some(1),
            movement("wtx_2", MovementKind::Debit, 5, Some("evt_1")),
        ),
    ] {
        assert_eq!(
            store.post(&a, "wal_a", expected, &m).await.unwrap(),
            Posted::Duplicate(first.clone())
        );
    }
    assert_balanced(&*store, "wal_a", 100, 1).await;
    applied(
        store
            .post(
                &a,
                "wal_b",
                None,
                &movement("wtx_3", MovementKind::Credit, 7, Some("evt_1")),
            )
            .await
            .unwrap(),
    );

    // Concurrently, locked and optimistic: exactly one applies, the others see it.
    for (round, expected) in [(0, None), (1, Some(2))] {
        let reference = format!("evt_race_{round}");
        let mut tasks = Vec::new();
        for i in 0..20 {
            let s = store.clone();
            let a = a.clone();
            let m = movement(
                &format!("wtx_r{round}_{i}"),
                MovementKind::Credit,
                10,
                Some(&reference),
            );
            tasks.push(tokio::spawn(async move {
                s.post(&a, "wal_a", expected, &m).await.unwrap()
            }));
        }
        let mut winners = Vec::new();
        let mut dups = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Posted::Applied(e) => winners.push(e),
                Posted::Duplicate(e) => dups.push(e),
                other => panic!("round {round}: unexpected {other:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}");
        assert!(dups.iter().all(|d| *d == winners[0]));
    }
    assert_balanced(&*store, "wal_a", 120, 3).await;
}

/// P5: a reversal undoes a credit in full (whatever amount it names), once, and not below the
/// floor; reversing it again, reversing a debit, a reversal, another wallet's credit or nothing
/// is `NotReversible`.
pub async fn p5_reversal_undoes_a_credit_once<S: Store>(store: Arc<S>) {
    let a = wallet_org(&*store).await;
    store
        .create_wallet(&a, &wallet_row("wal_b", Some("org_a"), None, "USD"))
        .await
        .unwrap();
    store
        .post(&a, "wal_a", None, &credit("wtx_1", 300))
        .await
        .unwrap();
    store
        .post(&a, "wal_a", None, &debit("wtx_2", 50))
        .await
        .unwrap();
    store
        .post(&a, "wal_b", None, &credit("wtx_b1", 10))
        .await
        .unwrap();
    let mut rev = reversal("wtx_3", "wtx_1");
    rev.amount = 1;
    // 250 left: undoing the 300 would overdraw.
    assert_eq!(
        store.post(&a, "wal_a", Some(2), &rev).await.unwrap(),
        Posted::Insufficient {
            balance: 250,
            credit_limit: 0
        }
    );
    store
        .post(&a, "wal_a", None, &credit("wtx_4", 100))
        .await
        .unwrap();
    let e = applied(store.post(&a, "wal_a", Some(3), &rev).await.unwrap());
    assert_eq!(
        (e.kind, e.amount, e.balance_after, e.reverses.as_deref()),
        (MovementKind::Reversal, -300, 50, Some("wtx_1"))
    );
    assert_balanced(&*store, "wal_a", 50, 4).await;
    for (txn, target) in [
        ("wtx_5", "wtx_1"),  // already reversed
        ("wtx_6", "wtx_2"),  // a debit
        ("wtx_7", "wtx_3"),  // a reversal
        ("wtx_8", "wtx_b1"), // another wallet's credit
        ("wtx_9", "wtx_none"),
    ] {
        for expected in [None, Some(4)] {
            assert_eq!(
                store
                    .post(&a, "wal_a", expected, &reversal(txn, target))
                    .await
                    .unwrap(),
                Posted::NotReversible,
                "{target}"
            );
        }
    }
    let mut nothing = reversal("wtx_10", "x");
    nothing.reverses = None;
    assert_eq!(
        store.post(&a, "wal_a", None, &nothing).await.unwrap(),
        Posted::NotReversible
    );
    assert_balanced(&*store, "wal_a", 50, 4).await;
    // Racing reversals of one credit: one applies.
    store
        .post(&a, "wal_a", None, &credit("wtx_11", 5))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..10 {
        let s = store.clone();
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            let expected = if i % 2 == 0 { None } else { Some(5) };
            s.post(
                &a,
                "wal_a",
                expected,
                &reversal(&format!("wtx_r{i}"), "wtx_11"),
            )
            .await
            .unwrap()
        }));
    }
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Posted::Applied(_) => won += 1,
            Posted::NotReversible | Posted::Conflict => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(won, 1);
    assert_balanced(&*store, "wal_a", 50, 6).await;
}

/// P5: 200 concurrent locked debits of 1 against a balance of 50: exactly 50 apply, the balance
/// ends at 0 and the ledger agrees.
pub async fn p5_concurrent_locked_debits_never_overdraw<S: Store>(store: Arc<S>) {
    let a = wallet_org(&*store).await;
    store
        .post(&a, "wal_a", None, &credit("wtx_0", 50))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let s = store.clone();
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            s.post(&a, "wal_a", None, &debit(&format!("wtx_{}", i + 1), 1))
                .await
                .unwrap()
        }));
    }
    let mut seqs = Vec::new();
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            Posted::Applied(e) => seqs.push(e.seq),
            Posted::Insufficient { balance, .. } => {
                assert_eq!(balance, 0);
                refused += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (2..=51).collect::<Vec<_>>(), "each its own version");
    assert_eq!(refused, 150);
    assert_balanced(&*store, "wal_a", 0, 51).await;
}

/// P5: another org and other users see none of a wallet and post nothing to it; a user reads
/// and debits their own wallet but never credits it or changes its credit line (the payments
/// path does); in the org, level 20 reads nothing, level 40 reads but does not post, level 80
/// posts and manages.
pub async fn p5_wallets_are_visible_and_postable_only_within_their_owner<S: Store>(store: Arc<S>) {
    let a = wallet_org(&*store).await;
    org_with(
        &*store,
        "org_b",
        &[("usr_b", 100), ("usr_v", 20), ("usr_r", 40), ("usr_m", 80)],
    )
    .await;
    let b = in_org("usr_b", "org_b");
    store
        .post(&a, "wal_a", None, &credit("wtx_a1", 100))
        .await
        .unwrap();
    let sum_a = store.ledger_sums(&SYS, "wal_a").await.unwrap();

    // Another org, inside or naming org A, and anonymous: nothing.
    for scope in [
        b.clone(),
        in_org("usr_b", "org_a"),
        as_user("usr_b"),
        Scope::Anonymous,
    ] {
        assert!(
            store.wallet(&scope, "wal_a").await.unwrap().is_none(),
            "{scope:?}"
        );
        assert!(
            store
                .wallets_of(&scope, Some("org_a"), None)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .entries(&scope, "wal_a", None, 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(store.ledger_sums(&scope, "wal_a").await.is_err());
        for m in [credit("wtx_x", 1), debit("wtx_x", 1)] {
            assert!(
                matches!(
                    store.post(&scope, "wal_a", None, &m).await,
                    Err(StoreError::NotFound)
                ),
                "{scope:?} posted"
            );
        }
        assert!(
            !store
                .set_credit_limit(&scope, "wal_a", 1000, NOW)
                .await
                .unwrap_or(false)
        );
        assert!(
            store
                .create_wallet(&scope, &wallet_row("wal_x", Some("org_a"), None, "GBP"))
                .await
                .is_err()
        );
    }
    assert_eq!(store.ledger_sums(&SYS, "wal_a").await.unwrap(), sum_a);
    assert_eq!(
        store
            .wallets_of(&SYS, Some("org_a"), None)
            .await
            .unwrap()
            .len(),
        1
    );

    // Levels inside org B.
    let viewer = in_org("usr_v", "org_b");
    let reader = in_org("usr_r", "org_b");
    let manager = in_org("usr_m", "org_b");
    assert!(
        store
            .create_wallet(&viewer, &wallet_row("wal_b", Some("org_b"), None, "EUR"))
            .await
            .is_err()
    );
    assert!(
        store
            .create_wallet(&reader, &wallet_row("wal_b", Some("org_b"), None, "EUR"))
            .await
            .is_err()
    );
    store
        .create_wallet(&manager, &wallet_row("wal_b", Some("org_b"), None, "EUR"))
        .await
        .unwrap();
    applied(
        store
            .post(&manager, "wal_b", Some(0), &credit("wtx_b1", 100))
            .await
            .unwrap(),
    );
    assert!(store.wallet(&viewer, "wal_b").await.unwrap().is_none());
    assert!(
        store
            .entries(&viewer, "wal_b", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .wallet(&reader, "wal_b")
            .await
            .unwrap()
            .unwrap()
            .balance,
        100
    );
    assert_eq!(
        store
            .entries(&reader, "wal_b", None, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(store.ledger_sums(&reader, "wal_b").await.unwrap(), (100, 0));
    for scope in [&viewer, &reader] {
        for (expected, m) in [
            (None, debit("wtx_x", 1)),
            (Some(1), credit("wtx_x", 1)),
            (None, reversal("wtx_x", "wtx_b1")),
        ] {
            assert!(
                matches!(
                    store.post(scope, "wal_b", expected, &m).await,
                    Err(StoreError::NotFound)
                ),
                "{scope:?} posted"
            );
        }
        assert!(
            !store
                .set_credit_limit(scope, "wal_b", 10, NOW)
                .await
                .unwrap_or(false)
        );
    }
    applied(
        store
            .post(&manager, "wal_b", None, &debit("wtx_b2", 10))
            .await
            .unwrap(),
    );
    assert!(
        store
            .set_credit_limit(&manager, "wal_b", 10, NOW)
            .await
            .unwrap()
    );
    let undone = applied(
        store
            .post(&b, "wal_b", None, &reversal("wtx_b3", "wtx_b1"))
            .await
            .unwrap(),
    );
    assert_eq!(undone.balance_after, -10);
    assert_balanced(&*store, "wal_b", -10, 3).await;

    // A user's own wallet: created and credited by the payments path only.
    store
        .create_user(&SYS, &user_row("usr_u", "u@example.com"))
        .await
        .unwrap();
    let u = as_user("usr_u");
    assert!(
        store
            .create_wallet(&u, &wallet_row("wal_u", None, Some("usr_u"), "CREDITS"))
            .await
            .is_err()
    );
    assert!(
        store
            .create_wallet(
                &manager,
                &wallet_row("wal_u", None, Some("usr_u"), "CREDITS")
            )
            .await
            .is_err()
    );
    store
        .create_wallet(&PAY, &wallet_row("wal_u", None, Some("usr_u"), "CREDITS"))
        .await
        .unwrap();
    applied(
        store
            .post(&PAY, "wal_u", Some(0), &credit("wtx_u1", 40))
            .await
            .unwrap(),
    );
    for scope in [u.clone(), in_org("usr_u", "org_b")] {
        assert_eq!(
            store
                .wallet(&scope, "wal_u")
                .await
                .unwrap()
                .unwrap()
                .balance,
            40
        );
    }
    assert_eq!(
        store
            .wallets_of(&u, None, Some("usr_u"))
            .await
            .unwrap()
            .into_iter()
            .map(|w| w.id)
            .collect::<Vec<_>>(),
        vec!["wal_u"]
    );
    let spent = applied(
        store
            .post(&u, "wal_u", Some(1), &debit("wtx_u2", 15))
            .await
            .unwrap(),
    );
    assert_eq!(spent.balance_after, 25);
    for (expected, m) in [
        (None, credit("wtx_u3", 1000)),
        (Some(2), credit("wtx_u3", 1000)),
        (None, reversal("wtx_u3", "wtx_u1")),
    ] {
        assert!(
            matches!(
                store.post(&u, "wal_u", expected, &m).await,
                Err(StoreError::NotFound)
            ),
            "the owner credited their own wallet"
        );
    }
    assert!(
        !store
            .set_credit_limit(&u, "wal_u", 1000, NOW)
            .await
            .unwrap_or(false)
    );
    // Others: another user, and org admins in or out of their org.
    for scope in [as_user("usr_b"), manager.clone(), a.clone()] {
        assert!(store.wallet(&scope, "wal_u").await.unwrap().is_none());
        assert!(
            store
                .wallets_of(&scope, None, Some("usr_u"))
                .await
                .unwrap()
                .is_empty()
        );
        assert!(matches!(
            store.post(&scope, "wal_u", None, &debit("wtx_x", 1)).await,
            Err(StoreError::NotFound)
        ));
    }
    assert_balanced(&*store, "wal_u", 25, 2).await;
    assert!(
        store
            .set_credit_limit(&PAY, "wal_u", 15, NOW)
            .await
            .unwrap()
    );
    applied(
        store
            .post(&PAY, "wal_u", None, &reversal("wtx_u4", "wtx_u1"))
            .await
            .unwrap(),
    );
    assert_balanced(&*store, "wal_u", -15, 3).await;
}

/// P5: the ledger is append-only, yet deleting an org takes its wallets and entries along.
pub async fn p5_deleting_an_org_takes_its_wallets_and_ledger_along<S: Store>(store: Arc<S>) {
    let a = wallet_org(&*store).await;
    store
        .post(&a, "wal_a", None, &credit("wtx_1", 10))
        .await
        .unwrap();
    store
        .post(&a, "wal_a", None, &debit("wtx_2", 3))
        .await
        .unwrap();
    assert!(store.delete_org(&a, "org_a").await.unwrap());
    assert!(store.wallet(&SYS, "wal_a").await.unwrap().is_none());
    assert!(
        store
            .entries(&SYS, "wal_a", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // The org's id is free again, and so is the wallet's.
    org_with(&*store, "org_a", &[("usr_a", 100)]).await;
    store
        .create_wallet(&a, &wallet_row("wal_a", Some("org_a"), None, "EUR"))
        .await
        .unwrap();
    assert_balanced(&*store, "wal_a", 0, 0).await;
}
