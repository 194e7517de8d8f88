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
    // Every policy decides through the helpers (which verify the signed context): it must
    // depend on one of them (pg_depend, schema-exact), and each of its expressions must call
    // one. A policy with a bare `true`, or one that reads a setting itself, fails here.
    let helpers = [
        "current_user_id",
        "current_org_id",
        "is_system",
        "is_schema_owner",
    ];
    // (table, policy, depends on a helper, USING, WITH CHECK)
    type PolicyRow = (String, String, bool, Option<String>, Option<String>);
    let policies: Vec<PolicyRow> = sqlx::query_as(
        "SELECT c.relname::text, pol.polname::text,                 EXISTS (SELECT 1 FROM pg_depend d JOIN pg_proc p ON p.oid = d.refobjid                         JOIN pg_namespace pn ON pn.oid = p.pronamespace                         WHERE d.classid = 'pg_policy'::regclass AND d.objid = pol.oid                           AND d.refclassid = 'pg_proc'::regclass AND pn.nspname = 'bastion'                           AND p.proname = ANY($1)),                 pg_get_expr(pol.polqual, pol.polrelid), pg_get_expr(pol.polwithcheck, pol.polrelid)          FROM pg_policy pol JOIN pg_class c ON c.oid = pol.polrelid          JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'bastion'",
    )
    .bind(&helpers[..])
    .fetch_all(f.store.pool())
    .await
    .unwrap();
    assert!(policies.len() >= rows.len());
    for (table, policy, depends, using, check) in &policies {
        assert!(
            *depends,
            "policy {policy} on {table} calls no bastion helper"
        );
        for expr in [using, check].into_iter().flatten() {
            assert!(
                helpers.iter().any(|h| expr.contains(&format!("{h}()")))
                    && !expr.contains("current_setting"),
                "policy {policy} on {table} does not go through a helper: {expr}"
            );
        }
    }
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
    let store = &f.store;
    let count_as = |org: &'static str| async move {
        let scope = Scope::User {
            user_id: "usr_x".into(),
            org_id: Some(org.to_owned()).filter(|o| !o.is_empty()),
        };
        let (role, ctx) = store.signed_context(&scope).unwrap();
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("SELECT set_config('role', $1, true), set_config('bastion.ctx', $2, true)")
            .bind(role)
            .bind(ctx)
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

/// What a direct connection sees as `role` with the context `ctx` (`None`: no context):
/// rows counted per table, and rows an UPDATE and a DELETE would touch.
async fn attacker_view(
    pool: &sqlx::PgPool,
    role: &str,
    ctx: Option<&str>,
    tables: &[&str],
) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for t in tables {
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("SELECT set_config('role', $1, true)")
            .bind(role)
            .execute(&mut *tx)
            .await
            .unwrap();
        if let Some(ctx) = ctx {
            sqlx::query("SELECT set_config('bastion.ctx', $1, true)")
                .bind(ctx)
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        // The legacy plain settings must mean nothing either.
        sqlx::query("SELECT set_config('bastion.user_id', 'usr_a', true), set_config('bastion.org_id', 'org_a', true)")
            .execute(&mut *tx)
            .await
            .unwrap();
        let seen: Result<i64, _> = sqlx::query_scalar(&format!("SELECT count(*) FROM {t}"))
            .fetch_one(&mut *tx)
            .await;
        // No grant at all is as good as no rows.
        out.push((format!("{t} select"), seen.unwrap_or(0)));
        tx.rollback().await.unwrap();
    }
    out
}

#[tokio::test]
async fn r4_a_direct_connection_without_a_valid_context_sees_nothing_and_cannot_forge_one() {
    use bastion_store::{AccountStore, LockoutStore, SessionStore, ThrottleRule, UserRow};
    let Some(f) = fresh().await else { return };
    let sys = Scope::System("test");
    let user = UserRow {
        id: "usr_a".into(),
        email: "a@example.com".into(),
        email_verified_ms: None,
        password_hash: Some("$argon2id$stub".into()),
        super_admin: false,
        created_ms: 1,
        updated_ms: 1,
    };
    f.store.create_user(&sys, &user).await.unwrap();
    let rule = ThrottleRule {
        max_attempts: 3,
        window_ms: 1000,
        lockout_ms: 1000,
    };
    f.store
        .register_attempt(&sys, "acct:a", 1, &rule)
        .await
        .unwrap();
    f.store
        .append(&sys, &[ev("one")], &|_, seq, _| [seq as u8; 32])
        .await
        .unwrap();
    assert!(
        !f.store
            .sessions_of(&sys, "usr_a")
            .await
            .unwrap()
            .iter()
            .any(|_| true)
    );
    let pool = f.store.pool();
    let tables = [
        "users",
        "sessions",
        "refresh_tokens",
        "key_ring",
        "key_canary",
        "attempt_counters",
        "audit_events",
        "magic_links",
        "email_outbox",
        "scope_key",
    ];

    // Control: the store's own contexts do see rows, so zero below means refused.
    let (role, ctx) = f.store.signed_context(&sys).unwrap();
    let seen = attacker_view(
        pool,
        role,
        Some(&ctx),
        &["users", "audit_events", "attempt_counters"],
    )
    .await;
    assert!(seen.iter().all(|(_, n)| *n > 0), "{seen:?}");
    let me = Scope::User {
        user_id: "usr_a".into(),
        org_id: None,
    };
    let (role, ctx) = f.store.signed_context(&me).unwrap();
    assert_eq!(
        attacker_view(pool, role, Some(&ctx), &["users"]).await[0].1,
        1
    );

    // Forgeries: no context, a made-up MAC, a real MAC moved to another user, a system
    // context presented as the app role, a context that has expired.
    let (_, real_user_ctx) = f.store.signed_context(&me).unwrap();
    let (_, real_sys_ctx) = f.store.signed_context(&sys).unwrap();
    let moved = real_user_ctx.replacen("usr_a", "usr_b", 1);
    let expiry = real_sys_ctx.split('.').nth(4).unwrap().to_owned();
    // Correctly signed, but expired a second ago.
    let past = expiry.parse::<i64>().unwrap() - 61_000;
    let (_, stale) = f.store.signed_context_until(&sys, past).unwrap();
    let (_, stale_user) = f.store.signed_context_until(&me, past).unwrap();
    let made_up = format!("v1.sys...{expiry}.{}", "0".repeat(64));
    for role in ["bastion_app", "bastion_system"] {
        for ctx in [
            None,
            Some(made_up.as_str()),
            Some(moved.as_str()),
            Some(stale.as_str()),
            Some(stale_user.as_str()),
            Some("garbage"),
            Some("v1.app.usr_a...."),
        ] {
            for (what, n) in attacker_view(pool, role, ctx, &tables).await {
                assert_eq!(n, 0, "{role} with {ctx:?}: {what}");
            }
        }
    }
    // A system context is worthless under the app role and vice versa.
    for (what, n) in attacker_view(pool, "bastion_app", Some(&real_sys_ctx), &tables).await {
        assert_eq!(n, 0, "app role with a system context: {what}");
    }
    for (what, n) in attacker_view(pool, "bastion_system", Some(&real_user_ctx), &tables).await {
        assert_eq!(n, 0, "system role with a user context: {what}");
    }
    // And no write lands without a valid context.
    for role in ["bastion_app", "bastion_system"] {
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("SELECT set_config('role', $1, true), set_config('bastion.ctx', $2, true)")
            .bind(role)
            .bind(&made_up)
            .execute(&mut *tx)
            .await
            .unwrap();
        let done = sqlx::query("UPDATE users SET email = 'owned@evil.example'")
            .execute(&mut *tx)
            .await
            .map(|r| r.rows_affected())
            .unwrap_or(0);
        assert_eq!(done, 0, "{role}");
        let done = sqlx::query("DELETE FROM attempt_counters")
            .execute(&mut *tx)
            .await
            .map(|r| r.rows_affected())
            .unwrap_or(0);
        assert_eq!(done, 0, "{role}");
        tx.rollback().await.unwrap();
    }
}

/// The URL of `db` for the login role `role` (local trust authentication).
fn as_login(url: &str, role: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let host = rest.split_once('@').map_or(rest, |(_, h)| h);
    format!("{scheme}://{role}@{host}")
}

#[tokio::test]
async fn r4_a_runtime_login_role_serves_through_the_owners_key_and_alone_sees_nothing() {
    use bastion_store::{AccountStore, UserRow};
    let Some(f) = fresh().await else { return };
    let owner = f.store.pool();
    // What an operator runs once per cluster (docs/tenancy.md). Roles are cluster-wide, and
    // tests run in parallel: create it only if missing.
    sqlx::query(
        "DO $$ BEGIN \
           IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bastion_test_runtime') THEN \
             CREATE ROLE bastion_test_runtime LOGIN; \
           END IF; \
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$",
    )
    .execute(owner)
    .await
    .unwrap();
    sqlx::query("GRANT bastion_app, bastion_system TO bastion_test_runtime")
        .execute(owner)
        .await
        .unwrap();
    let url = as_login(&f._db.url, "bastion_test_runtime");

    // The server's way: a runtime pool that adopts the owner's key.
    let runtime = PgStore::connect(&url, 4).await.unwrap();
    assert!(!runtime.is_owner_connection() && f.store.is_owner_connection());
    let sys = Scope::System("test");
    let user = UserRow {
        id: "usr_rt".into(),
        email: "rt@example.com".into(),
        email_verified_ms: None,
        password_hash: None,
        super_admin: false,
        created_ms: 1,
        updated_ms: 1,
    };
    assert!(
        runtime.create_user(&sys, &user).await.is_err(),
        "without the key nothing is signed: fail closed"
    );
    runtime.adopt_scope_key(&f.store).unwrap();
    runtime.create_user(&sys, &user).await.unwrap();
    let me = Scope::User {
        user_id: "usr_rt".into(),
        org_id: None,
    };
    assert!(runtime.user_by_id(&me, "usr_rt").await.unwrap().is_some());

    // The attacker's way: the same credentials, by hand.
    let pool = sqlx::PgPool::connect(&format!("{url}?options=-csearch_path%3Dbastion"))
        .await
        .unwrap();
    let denied = |r: Result<i64, sqlx::Error>| r.map_or(true, |n| n == 0);
    let scalar = |sql: &'static str| {
        let pool = pool.clone();
        async move { sqlx::query_scalar::<_, i64>(sql).fetch_one(&pool).await }
    };
    assert!(
        denied(scalar("SELECT count(*) FROM bastion.scope_key").await),
        "the key is unreadable"
    );
    assert!(
        denied(scalar("SELECT count(*) FROM bastion.users").await),
        "as itself: nothing"
    );
    for stmt in [
        "ALTER TABLE bastion.users DISABLE ROW LEVEL SECURITY",
        "ALTER TABLE bastion.users NO FORCE ROW LEVEL SECURITY",
        "DROP POLICY own_account ON bastion.users",
        "SET ROLE postgres",
        "CREATE FUNCTION bastion.steal() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    ] {
        assert!(sqlx::query(stmt).execute(&pool).await.is_err(), "{stmt}");
    }
    for role in ["bastion_app", "bastion_system"] {
        let mut tx = pool.begin().await.unwrap();
        sqlx::query(&format!("SET LOCAL ROLE {role}"))
            .execute(&mut *tx)
            .await
            .unwrap();
        let n: Result<i64, _> = sqlx::query_scalar("SELECT count(*) FROM bastion.users")
            .fetch_one(&mut *tx)
            .await;
        assert!(denied(n), "{role} without a context");
        tx.rollback().await.unwrap();
    }
    pool.close().await;
}
