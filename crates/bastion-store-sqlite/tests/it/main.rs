#![allow(clippy::unwrap_used, clippy::expect_used)]
//! SQLite backend: the shared conformance suite plus SQLite-specific guarantees.

use std::sync::Arc;

use bastion_store::conformance_tests;
use bastion_store_sqlite::SqliteStore;

/// A fresh migrated database in its own temporary directory, removed with the guard.
async fn fresh() -> (Arc<SqliteStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_in_dir(dir.path()).await.unwrap();
    store.migrate().await.unwrap();
    (Arc::new(store), dir)
}

conformance_tests!(Some(fresh().await));

#[tokio::test]
async fn u2_audit_rows_refuse_update_and_delete() {
    let (store, _dir) = fresh().await;
    let sys = bastion_store::Scope::System("test");
    let ev = bastion_store::NewAuditEvent {
        ts_ms: 1,
        actor: None,
        org_id: None,
        category: "admin".into(),
        action: "a".into(),
        outcome: "success".into(),
        details: "{}".into(),
    };
    use bastion_store::AuditStore;
    store.append(&sys, &[ev], &|_, _, _| [7; 32]).await.unwrap();
    let upd = sqlx::query("UPDATE audit_events SET action = 'x'")
        .execute(store.pool())
        .await;
    assert!(upd.unwrap_err().to_string().contains("append-only"));
    let del = sqlx::query("DELETE FROM audit_events")
        .execute(store.pool())
        .await;
    assert!(del.unwrap_err().to_string().contains("append-only"));
}
