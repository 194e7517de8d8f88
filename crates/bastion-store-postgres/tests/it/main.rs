#![allow(clippy::unwrap_used, clippy::expect_used)]
//! PostgreSQL backend: the shared conformance suite, the RLS catalog check and append-only audit.

use std::sync::Arc;

use bastion_store::{AuditStore, NewAuditEvent, Scope, Store};
use bastion_store_postgres::PgStore;
use bastion_testkit::pg::PgTestDb;

/// A fresh store on its own database; the database lives as long as the returned guard.
struct Fresh {
    store: Arc<PgStore>,
    _db: PgTestDb,
}

async fn fresh() -> Option<Fresh> {
    let db = PgTestDb::create().await?;
    let store = PgStore::connect(&db.url, 8).await.unwrap();
    Some(Fresh {
        store: Arc::new(store),
        _db: db,
    })
}

bastion_store::conformance_tests!(fresh().await.map(|f| (f.store, f._db)));

fn ev(action: &str) -> NewAuditEvent {
    NewAuditEvent {
        ts_ms: 1,
        actor: None,
        org_id: Some("org_a".into()),
        category: "admin".into(),
        action: action.into(),
        outcome: "success".into(),
        details: "{}".into(),
    }
}

#[tokio::test]
async fn r4_every_table_has_row_level_security_enabled_and_forced() {
    let Some(f) = fresh().await else { return };
    let rows: Vec<(String, bool, bool)> = sqlx::query_as(
        "SELECT c.relname::text, c.relrowsecurity, c.relforcerowsecurity FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'bastion' AND c.relkind IN ('r', 'p') AND c.relname <> '_sqlx_migrations'",
    )
    .fetch_all(f.store.pool())
    .await
    .unwrap();
    assert!(rows.len() >= 5, "expected Bastion's tables, found {rows:?}");
    let missing: Vec<_> = rows
        .iter()
        .filter(|(_, en, force)| !(*en && *force))
        .map(|r| r.0.clone())
        .collect();
    assert!(
        missing.is_empty(),
        "tables without RLS enabled and forced: {missing:?}"
    );
    // Every table also has at least one policy (forced RLS with none would just hide everything).
    let without_policy: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'bastion' AND c.relkind = 'r' AND c.relname <> '_sqlx_migrations' \
         AND NOT EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid)",
    )
    .fetch_all(f.store.pool())
    .await
    .unwrap();
    assert!(
        without_policy.is_empty(),
        "tables without a policy: {without_policy:?}"
    );
}

#[tokio::test]
async fn u2_audit_rows_cannot_be_updated_or_deleted_by_any_role() {
    let Some(f) = fresh().await else { return };
    let sys = Scope::System("test");
    f.store
        .append(&sys, &[ev("a"), ev("b")], &|_, seq, _| [seq as u8; 32])
        .await
        .unwrap();
    let pool = f.store.pool();
    for role in ["bastion_system", "bastion_app"] {
        for stmt in [
            "UPDATE audit_events SET action = 'x'",
            "DELETE FROM audit_events",
        ] {
            let mut tx = pool.begin().await.unwrap();
            sqlx::query("SELECT set_config('role', $1, true)")
                .bind(role)
                .execute(&mut *tx)
                .await
                .unwrap();
            let err = sqlx::query(stmt).execute(&mut *tx).await.unwrap_err();
            assert!(
                err.to_string().contains("permission denied"),
                "{role}: {stmt}: {err}"
            );
            tx.rollback().await.unwrap();
        }
    }
    // Even the owner (here a superuser) is stopped by the trigger.
    for stmt in [
        "UPDATE audit_events SET action = 'x'",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
    ] {
        let err = sqlx::query(stmt).execute(pool).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{stmt}: {err}");
    }
    assert_eq!(f.store.head(&sys).await.unwrap().seq, 2);
}

#[tokio::test]
async fn r4_app_role_reads_only_its_orgs_audit_events() {
    let Some(f) = fresh().await else { return };
    let sys = Scope::System("test");
    let mut other = ev("other-org");
    other.org_id = Some("org_b".into());
    f.store
        .append(&sys, &[ev("mine"), other], &|_, seq, _| [seq as u8; 32])
        .await
        .unwrap();
    let pool = f.store.pool();
    let count_as = |org: &'static str| async move {
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("SELECT set_config('role', 'bastion_app', true), set_config('bastion.org_id', $1, true)")
            .bind(org)
            .execute(&mut *tx)
            .await
            .unwrap();
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        tx.rollback().await.unwrap();
        n
    };
    assert_eq!(count_as("org_a").await, 1);
    assert_eq!(count_as("org_b").await, 1);
    assert_eq!(count_as("").await, 0, "no scope, no rows");
    assert!(f.store.ping().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a8_x3_lockout_holds_across_two_nodes_sharing_the_database() {
    use bastion_store::{AttemptDecision, LockoutStore, ThrottleRule};
    let Some(f) = fresh().await else { return };
    // A second node: its own pool, same database.
    let other = Arc::new(PgStore::connect(&f._db.url, 8).await.unwrap());
    let rule = ThrottleRule {
        max_attempts: 10,
        window_ms: 900_000,
        lockout_ms: 900_000,
    };
    let now = 1_700_000_000_000;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let node = if i % 2 == 0 {
            f.store.clone()
        } else {
            other.clone()
        };
        tasks.push(tokio::spawn(async move {
            node.register_attempt(&Scope::System("login"), "acct:shared", now, &rule)
                .await
                .unwrap()
        }));
    }
    let mut allowed = 0;
    for t in tasks {
        if matches!(t.await.unwrap(), AttemptDecision::Allowed { .. }) {
            allowed += 1;
        }
    }
    assert_eq!(
        allowed, 10,
        "both nodes together let exactly the limit through"
    );
}
