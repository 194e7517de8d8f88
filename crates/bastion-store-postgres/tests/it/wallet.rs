//! wallet tests particular to this backend.

use bastion_store::conformance::{as_user, in_org, org_with, permission_rows, user_row};
use bastion_store::{
    AccountStore, Movement, MovementKind, OrgStore, Scope, WalletRow, WalletStore,
};
use bastion_store_postgres::PgStore;

use crate::{begin_as, fresh};

fn wallet(id: &str, org: Option<&str>, user: Option<&str>) -> WalletRow {
    WalletRow {
        id: id.into(),
        org_id: org.map(Into::into),
        user_id: user.map(Into::into),
        currency: "EUR".into(),
        balance: 0,
        credit_limit: 0,
        ledger_version: 0,
        created_ms: 1,
        updated_ms: 1,
    }
}

fn credit(txn: &str, amount: i64) -> Movement {
    Movement {
        txn_id: txn.into(),
        kind: MovementKind::Credit,
        amount,
        reverses: None,
        reference: Some(format!("ref_{txn}")),
        memo: String::new(),
        created_ms: 2,
        created_by: "test".into(),
    }
}

/// Org A with a credited wallet `wal_a`, org B with `wal_b`, and user `usr_u`'s own `wal_u`.
async fn wallets(store: &PgStore) {
    let sys = Scope::System("payments");
    store
        .sync_permissions(&sys, &permission_rows())
        .await
        .unwrap();
    org_with(store, "org_a", &[("usr_a", 100), ("usr_v", 20)]).await;
    org_with(store, "org_b", &[("usr_b", 100)]).await;
    store
        .create_user(&sys, &user_row("usr_u", "u@example.com"))
        .await
        .unwrap();
    let a = in_org("usr_a", "org_a");
    store
        .create_wallet(&a, &wallet("wal_a", Some("org_a"), None))
        .await
        .unwrap();
    store
        .post(&a, "wal_a", None, &credit("wtx_a", 10))
        .await
        .unwrap();
    let b = in_org("usr_b", "org_b");
    store
        .create_wallet(&b, &wallet("wal_b", Some("org_b"), None))
        .await
        .unwrap();
    store
        .post(&b, "wal_b", None, &credit("wtx_b", 20))
        .await
        .unwrap();
    store
        .create_wallet(&sys, &wallet("wal_u", None, Some("usr_u")))
        .await
        .unwrap();
    store
        .post(&sys, "wal_u", None, &credit("wtx_u", 30))
        .await
        .unwrap();
}

/// P5: no role rewrites or removes a ledger entry: the app and system roles have no grant, and
/// the owner (here a superuser) is stopped by the trigger. An org's deletion still takes its
/// ledger along.
#[tokio::test]
async fn p5_ledger_entries_cannot_be_updated_or_deleted_by_any_role() {
    let Some(f) = fresh().await else { return };
    wallets(&f.store).await;
    let pool = f.store.pool();
    let stmts = [
        "UPDATE wallet_entries SET amount = 1000 WHERE account = 'wallet'",
        "DELETE FROM wallet_entries",
    ];
    for scope in [
        in_org("usr_a", "org_a"),
        as_user("usr_u"),
        Scope::System("payments"),
    ] {
        let (role, ctx) = f.store.signed_context(&scope).unwrap();
        for stmt in stmts {
            let mut tx = begin_as(pool, role, Some(&ctx)).await;
            let err = sqlx::query(stmt).execute(&mut *tx).await.unwrap_err();
            assert!(
                err.to_string().contains("permission denied"),
                "{scope:?}: {stmt}: {err}"
            );
            tx.rollback().await.unwrap();
        }
    }
    for stmt in stmts.into_iter().chain(["TRUNCATE wallet_entries"]) {
        let err = sqlx::query(stmt).execute(pool).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{stmt}: {err}");
    }
    let sys = Scope::System("test");
    assert_eq!(f.store.ledger_sums(&sys, "wal_a").await.unwrap(), (10, 0));
    // The cascade from the org passes (the wallet goes first).
    assert!(
        f.store
            .delete_org(&in_org("usr_a", "org_a"), "org_a")
            .await
            .unwrap()
    );
    let left: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT wallet_id FROM wallet_entries ORDER BY 1")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(left, vec!["wal_b", "wal_u"]);
}

/// P5: row-level security alone (a direct connection with a valid context, no store query
/// to help) shows each scope only its wallets and entries, and refuses what it may not write:
/// a credit to a user's own wallet, an entry filed under another owner, a new wallet of a
/// lower level or of a user.
#[tokio::test]
async fn p5_wallet_rows_follow_the_permission_map_under_rls() {
    let Some(f) = fresh().await else { return };
    wallets(&f.store).await;
    let pool = f.store.pool();
    let count = |scope: Scope, table: &'static str| {
        let store = f.store.clone();
        async move {
            let (role, ctx) = store.signed_context(&scope).unwrap();
            let mut tx = begin_as(store.pool(), role, Some(&ctx)).await;
            let rows: Vec<String> = sqlx::query_scalar(&format!(
                "SELECT DISTINCT {} FROM {table} ORDER BY 1",
                if table == "wallets" {
                    "id"
                } else {
                    "wallet_id"
                }
            ))
            .fetch_all(&mut *tx)
            .await
            .unwrap();
            tx.rollback().await.unwrap();
            rows
        }
    };
    for table in ["wallets", "wallet_entries"] {
        assert_eq!(count(in_org("usr_a", "org_a"), table).await, vec!["wal_a"]);
        assert_eq!(count(in_org("usr_b", "org_b"), table).await, vec!["wal_b"]);
        assert!(count(in_org("usr_b", "org_a"), table).await.is_empty());
        assert!(
            count(in_org("usr_v", "org_a"), table).await.is_empty(),
            "level 20"
        );
        assert_eq!(count(as_user("usr_u"), table).await, vec!["wal_u"]);
        assert!(count(Scope::Anonymous, table).await.is_empty());
        assert_eq!(
            count(Scope::System("payments"), table).await,
            vec!["wal_a", "wal_b", "wal_u"]
        );
    }
    // Writes RLS and the trigger refuse, each on its own transaction.
    let refused = [
        (
            as_user("usr_u"),
            "UPDATE wallets SET balance = balance + 100 WHERE id = 'wal_u'",
        ),
        (
            as_user("usr_u"),
            "UPDATE wallets SET credit_limit = 100 WHERE id = 'wal_u'",
        ),
        (
            as_user("usr_u"),
            "INSERT INTO wallet_entries (txn_id, wallet_id, user_id, account, seq, kind, amount, \
             balance_after, memo, created_ms, created_by) \
             VALUES ('wtx_x', 'wal_u', 'usr_u', 'wallet', 9, 'credit', 5, 35, '', 1, 'x')",
        ),
        (
            in_org("usr_a", "org_a"),
            "INSERT INTO wallet_entries (txn_id, wallet_id, org_id, account, seq, kind, amount, \
             balance_after, memo, created_ms, created_by) \
             VALUES ('wtx_x', 'wal_b', 'org_a', 'wallet', 9, 'credit', 5, 35, '', 1, 'x')",
        ),
        (
            in_org("usr_a", "org_a"),
            "INSERT INTO wallets (id, user_id, currency, balance, created_ms, updated_ms) \
             VALUES ('wal_x', 'usr_a', 'EUR', 0, 1, 1)",
        ),
        (
            in_org("usr_a", "org_a"),
            "INSERT INTO wallets (id, org_id, currency, balance, created_ms, updated_ms) \
             VALUES ('wal_x', 'org_a', 'USD', 1000, 1, 1)",
        ),
        (
            in_org("usr_v", "org_a"),
            "INSERT INTO wallets (id, org_id, currency, balance, created_ms, updated_ms) \
             VALUES ('wal_x', 'org_a', 'USD', 0, 1, 1)",
        ),
    ];
    for (scope, stmt) in refused {
        let (role, ctx) = f.store.signed_context(&scope).unwrap();
        let mut tx = begin_as(pool, role, Some(&ctx)).await;
        let done = sqlx::query(stmt).execute(&mut *tx).await;
        assert!(
            done.as_ref().map_or(true, |r| r.rows_affected() == 0),
            "{scope:?}: {stmt}: {done:?}"
        );
        tx.rollback().await.unwrap();
    }
    // Updates of other owners' wallets touch nothing.
    let (role, ctx) = f.store.signed_context(&in_org("usr_a", "org_a")).unwrap();
    let mut tx = begin_as(pool, role, Some(&ctx)).await;
    let done = sqlx::query("UPDATE wallets SET balance = balance + 1")
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(done.rows_affected(), 1, "its own org's wallet only");
    tx.rollback().await.unwrap();
}
