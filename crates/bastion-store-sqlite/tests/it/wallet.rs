//! wallet tests particular to this backend.

use bastion_store::conformance::{in_org, org_with, permission_rows};
use bastion_store::{Movement, MovementKind, OrgStore, Scope, WalletRow, WalletStore};

use crate::fresh;

/// P5: nothing rewrites or removes a ledger entry, not even a direct connection to the file;
/// only the deletion of its wallet's org takes it along.
#[tokio::test]
async fn p5_ledger_entries_refuse_update_and_delete() {
    let (store, _dir) = fresh().await;
    let sys = Scope::System("test");
    store
        .sync_permissions(&sys, &permission_rows())
        .await
        .unwrap();
    org_with(&*store, "org_a", &[("usr_a", 100)]).await;
    let a = in_org("usr_a", "org_a");
    let wallet = WalletRow {
        id: "wal_a".into(),
        org_id: Some("org_a".into()),
        user_id: None,
        currency: "EUR".into(),
        balance: 0,
        credit_limit: 0,
        ledger_version: 0,
        created_ms: 1,
        updated_ms: 1,
    };
    store.create_wallet(&a, &wallet).await.unwrap();
    let m = Movement {
        txn_id: "wtx_1".into(),
        kind: MovementKind::Credit,
        amount: 10,
        reverses: None,
        reference: Some("evt_1".into()),
        memo: String::new(),
        created_ms: 2,
        created_by: "usr_a".into(),
    };
    store.post(&a, "wal_a", None, &m).await.unwrap();
    for stmt in [
        "UPDATE wallet_entries SET amount = 1000 WHERE account = 'wallet'",
        "UPDATE wallet_entries SET reference = NULL",
        "DELETE FROM wallet_entries",
        "DELETE FROM wallet_entries WHERE account = 'funding'",
    ] {
        let err = sqlx::query(stmt).execute(store.pool()).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{stmt}: {err}");
    }
    assert_eq!(store.ledger_sums(&sys, "wal_a").await.unwrap(), (10, 0));
    // The org's deletion cascades through the wallet to its entries.
    assert!(store.delete_org(&a, "org_a").await.unwrap());
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM wallet_entries")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(left, 0);
}
