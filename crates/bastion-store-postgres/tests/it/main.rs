#![allow(clippy::unwrap_used, clippy::expect_used)]
//! PostgreSQL backend: the shared conformance suite, the RLS catalog check and append-only audit.

mod idempotency;
mod wallet;
mod webhooks;

use std::sync::Arc;

use bastion_store::conformance::{
    as_user, in_org, invitation_row, key_row, key_scope, org_with, permission_rows, project_row,
    secret_row, user_row,
};
use bastion_store::{
    AuditStore, KeyKind, NewAuditEvent, OrgStore, Scope, SecretStore, Store, VaultStore,
};
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
        "current_level",
        "has_permission",
        "visible_org_ids",
        "is_new_org_creator",
        "scope_tokens",
    ];
    // Each helper is STABLE with a fixed search_path, and all but is_schema_owner (which must
    // see its caller) run as the owner: SECURITY DEFINER.
    let procs: Vec<(String, String, bool, Option<Vec<String>>)> = sqlx::query_as(
        "SELECT p.proname::text, p.provolatile::text, p.prosecdef, p.proconfig::text[] \
         FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
         WHERE n.nspname = 'bastion' AND p.proname = ANY($1)",
    )
    .bind(&helpers[..])
    .fetch_all(f.store.pool())
    .await
    .unwrap();
    let mut found: Vec<&str> = procs.iter().map(|p| p.0.as_str()).collect();
    found.sort_unstable();
    let mut expected = helpers.to_vec();
    expected.sort_unstable();
    assert_eq!(found, expected, "each helper exists exactly once");
    for (name, volatility, definer, config) in &procs {
        assert_eq!(volatility, "s", "{name} is not STABLE");
        assert_eq!(
            *definer,
            name != "is_schema_owner",
            "{name}: SECURITY DEFINER"
        );
        assert_eq!(
            config.as_deref(),
            Some(&["search_path=pg_catalog".to_owned()][..]),
            "{name}: search_path"
        );
    }
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
                helpers.iter().any(|h| expr.contains(&format!("{h}(")))
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

/// Whether `e` is the database refusing the statement (SQLSTATE 42501: no grant, or a
/// row-level security check; P0001: a policy trigger raising; class 23: an integrity rule, such
/// as the composite keys that tie a row's org to its parent's, or the last-Super-Admin trigger).
/// Anything else (an undefined column or table, a syntax or type error) is the test's own
/// mistake and must not pass as a refusal.
fn refusal(e: &sqlx::Error, what: &str) -> bool {
    let code = e
        .as_database_error()
        .and_then(|d| d.code().map(|c| c.into_owned()))
        .unwrap_or_default();
    if code == "42501" || code == "P0001" || code.starts_with("23") {
        return true;
    }
    panic!("{what}: not a refusal but an error in the statement itself ({code}): {e}")
}

/// `sql`'s single count, run by a direct connection as `role` with the context `ctx`; a
/// refusal (no grant) counts as zero rows, any other error fails the test.
async fn count_with(pool: &sqlx::PgPool, role: &str, ctx: &str, sql: &str) -> i64 {
    let mut tx = begin_as(pool, role, Some(ctx)).await;
    let n = match sqlx::query_scalar(sql).fetch_one(&mut *tx).await {
        Ok(n) => n,
        Err(e) => {
            assert!(refusal(&e, sql));
            0
        }
    };
    tx.rollback().await.unwrap();
    n
}

#[tokio::test]
async fn r4_app_role_reads_only_its_orgs_audit_events() {
    let Some(f) = fresh().await else { return };
    let sys = Scope::System("test");
    f.store
        .sync_permissions(&sys, &permission_rows())
        .await
        .unwrap();
    org_with(&*f.store, "org_a", &[("usr_x", 100), ("usr_v", 40)]).await;
    org_with(&*f.store, "org_b", &[("usr_y", 100), ("usr_x", 80)]).await;
    for (id, kind, hash) in [
        ("key_s", KeyKind::Service, 1),
        ("key_p", KeyKind::Publishable, 2),
    ] {
        f.store
            .create_api_key(
                &in_org("usr_x", "org_a"),
                &key_row(id, "org_a", kind, hash, 1),
            )
            .await
            .unwrap();
    }
    let mut other = ev("other-org");
    other.org_id = Some("org_b".into());
    f.store
        .append(&sys, &[ev("mine"), other], &|_, seq, _| [seq as u8; 32])
        .await
        .unwrap();
    let count_as = |scope: Scope| {
        let store = f.store.clone();
        async move {
            let (role, ctx) = store.signed_context(&scope).unwrap();
            count_with(
                store.pool(),
                role,
                &ctx,
                "SELECT count(*) FROM audit_events",
            )
            .await
        }
    };
    assert_eq!(count_as(in_org("usr_x", "org_a")).await, 1);
    assert_eq!(
        count_as(in_org("usr_x", "org_b")).await,
        1,
        "an Admin there too"
    );
    assert_eq!(count_as(as_user("usr_x")).await, 0, "no org, no rows");
    assert_eq!(
        count_as(in_org("usr_v", "org_a")).await,
        0,
        "a User lacks audit.read"
    );
    assert_eq!(count_as(in_org("usr_v", "org_b")).await, 0, "not a member");
    assert_eq!(
        count_as(key_scope("key_s", "org_a", KeyKind::Service)).await,
        1
    );
    assert_eq!(
        count_as(key_scope("key_p", "org_a", KeyKind::Publishable)).await,
        0
    );
    assert!(f.store.ping().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a8_x3_lockout_holds_across_two_nodes_sharing_the_database() {
    use bastion_store::{LockoutStore, Reservation, ThrottleRule};
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
            node.reserve_attempts(&Scope::System("login"), &[("acct:shared", rule)], now)
                .await
                .unwrap()
        }));
    }
    let mut allowed = 0;
    for t in tasks {
        if t.await.unwrap() == Reservation::Granted {
            allowed += 1;
        }
    }
    assert_eq!(
        allowed, 10,
        "both nodes together let exactly the limit through"
    );
}

/// A transaction of a direct connection as `role` with the context `ctx` (`None`: none), the
/// legacy plain settings set too (they must mean nothing).
async fn begin_as(
    pool: &sqlx::PgPool,
    role: &str,
    ctx: Option<&str>,
) -> sqlx::Transaction<'static, sqlx::Postgres> {
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
    sqlx::query("SELECT set_config('bastion.user_id', 'usr_a', true), set_config('bastion.org_id', 'org_a', true)")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx
}

/// What a direct connection sees as `role` with the context `ctx` (`None`: no context):
/// rows counted per table, and rows a DELETE would touch (rolled back).
async fn attacker_view(
    pool: &sqlx::PgPool,
    role: &str,
    ctx: Option<&str>,
    tables: &[&str],
) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for t in tables {
        let mut tx = begin_as(pool, role, ctx).await;
        let select = format!("SELECT count(*) FROM {t}");
        let seen: Result<i64, _> = sqlx::query_scalar(&select).fetch_one(&mut *tx).await;
        // No grant at all is as good as no rows; any other error is the test's.
        let seen = seen.unwrap_or_else(|e| {
            assert!(refusal(&e, &select));
            0
        });
        out.push((format!("{t} select"), seen));
        tx.rollback().await.unwrap();
        let mut tx = begin_as(pool, role, ctx).await;
        let delete = format!("DELETE FROM {t}");
        let gone = sqlx::query(&delete).execute(&mut *tx).await.map_or_else(
            |e| {
                assert!(refusal(&e, &delete));
                0
            },
            |r| i64::try_from(r.rows_affected()).unwrap(),
        );
        out.push((format!("{t} delete"), gone));
        tx.rollback().await.unwrap();
    }
    out
}

/// Rows a direct connection as `role` with `ctx` changes by each of `stmts` (rolled back; an
/// error changes nothing).
async fn attacker_writes(
    pool: &sqlx::PgPool,
    role: &str,
    ctx: Option<&str>,
    stmts: &[&str],
) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for stmt in stmts {
        let mut tx = begin_as(pool, role, ctx).await;
        let done = sqlx::query(stmt).execute(&mut *tx).await.map_or_else(
            |e| {
                assert!(refusal(&e, stmt));
                0
            },
            |r| r.rows_affected(),
        );
        out.push(((*stmt).to_owned(), done));
        tx.rollback().await.unwrap();
    }
    out
}

/// Only the selects of an attacker view (a valid context may still lack a DELETE grant).
fn selects(view: Vec<(String, i64)>) -> Vec<(String, i64)> {
    view.into_iter()
        .filter(|(what, _)| what.ends_with(" select"))
        .collect()
}

/// Direct-connection writes that no invalid context may land, one per table and kind.
const FORGED_WRITES: &[&str] = &[
    "UPDATE users SET email = 'owned@evil.example'",
    "UPDATE orgs SET name = 'Owned'",
    "UPDATE memberships SET level = 100",
    "UPDATE invitations SET level = 100, expires_ms = 9000000000000",
    "UPDATE api_keys SET revoked_ms = NULL, org_id = org_id",
    "UPDATE activity_events SET data = 'owned'",
    "INSERT INTO orgs (id, name, created_by, created_ms, updated_ms) VALUES ('org_evil', 'Evil', 'usr_a', 1, 1)",
    "INSERT INTO memberships (org_id, user_id, email, level, created_ms, updated_ms) \
     VALUES ('org_a', 'usr_c', 'c@example.com', 100, 1, 1)",
    "INSERT INTO invitations (id, org_id, email, level, invited_by, created_ms, expires_ms) \
     VALUES ('inv_evil', 'org_a', 'evil@example.com', 100, 'usr_a', 1, 9000000000000)",
    "INSERT INTO api_keys (id, org_id, kind, name, hint, key_hash, created_by, created_ms) \
     VALUES ('key_evil', 'org_a', 'service', 'evil', 'bst_sk_', decode(repeat('ee', 32), 'hex'), 'usr_a', 1)",
    "INSERT INTO level_permissions (level, permission) VALUES (20, 'org.delete')",
    "INSERT INTO activity_events (id, user_id, org_id, ts_ms, kind, data) VALUES ('act_evil', 'usr_b', 'org_a', 1, 'x', 'y')",
    "UPDATE secrets SET value = 'owned'::bytea, value_key = 'secrets-v9'",
    "UPDATE key_encryptions SET reserved = 0",
    "UPDATE key_canary SET canary = 'owned'::bytea",
    "UPDATE key_ring SET retired = true",
    "INSERT INTO secret_projects (id, org_id, name, created_by, created_ms) VALUES ('prj_evil', 'org_a', 'evil', 'usr_a', 1)",
    "INSERT INTO secrets (id, org_id, project_id, name, value_key, value, version, created_ms, updated_ms, updated_by) \
     VALUES ('sec_evil', 'org_a', 'prj_a', 'EVIL', 'secrets-v1', 'x'::bytea, 1, 1, 1, 'usr_a')",
    "INSERT INTO key_encryptions (key_id, reserved) VALUES ('secrets-v9', 0)",
    "UPDATE licenses SET revoked_ms = 1, frozen_ms = 1, failures = 99",
    "UPDATE license_machines SET last_seen_ms = 1, name = 'owned'",
    "INSERT INTO products (id, org_id, name, created_ms) VALUES ('prd_evil', 'org_a', 'evil', 1)",
    "INSERT INTO license_policies (id, org_id, product_id, name, max_machines, entitlements, lease_ms, created_ms) \
     VALUES ('pol_evil', 'org_a', 'prd_org_a', 'evil', 99, '{all}', 1, 1)",
    "INSERT INTO licenses (id, org_id, product_id, policy_id, key_hash, email, entitlements, max_machines, \
     lease_ms, created_ms, created_by) VALUES ('lic_evil', 'org_a', 'prd_org_a', 'pol_org_a', \
     decode(repeat('ee', 32), 'hex'), 'evil@example.com', '{all}', 99, 1, 1, 'usr_a')",
    "INSERT INTO license_machines (id, org_id, license_id, machine_hash, name, activated_ms, last_seen_ms) \
     VALUES ('mch_evil', 'org_a', 'lic_org_a', decode(repeat('ee', 32), 'hex'), 'evil', 1, 1)",
];

#[tokio::test]
async fn r4_a_direct_connection_without_a_valid_context_sees_nothing_and_cannot_forge_one() {
    use bastion_store::{AccountStore, ActivityRow, LockoutStore, SessionStore, ThrottleRule};
    let Some(f) = fresh().await else { return };
    let sys = Scope::System("test");
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
    // A row in every org table: the map, an org with two members, a pending invitation, a
    // live and a revoked key, and private activity.
    f.store
        .sync_permissions(&sys, &permission_rows())
        .await
        .unwrap();
    org_with(&*f.store, "org_a", &[("usr_a", 100), ("usr_b", 40)]).await;
    f.store
        .create_user(&sys, &user_row("usr_c", "c@example.com"))
        .await
        .unwrap();
    let admin = in_org("usr_a", "org_a");
    f.store
        .create_invitation(
            &admin,
            &invitation_row("inv_p", "org_a", "p@example.com", 20, 1),
        )
        .await
        .unwrap();
    for (id, hash) in [("key_s", 1), ("key_r", 2)] {
        f.store
            .create_api_key(&admin, &key_row(id, "org_a", KeyKind::Service, hash, 1))
            .await
            .unwrap();
    }
    assert!(
        f.store
            .revoke_api_key(&admin, "org_a", "key_r", 2)
            .await
            .unwrap()
    );
    f.store
        .add_activity(
            &as_user("usr_a"),
            &ActivityRow {
                id: "act_1".into(),
                user_id: "usr_a".into(),
                org_id: Some("org_a".into()),
                ts_ms: 1,
                kind: "app.focus".into(),
                data: "{}".into(),
            },
        )
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
    // And the vault: a project with a secret, and an encryption budget.
    f.store
        .create_project(&admin, &project_row("prj_a", "org_a", "api"))
        .await
        .unwrap();
    f.store
        .insert_secret(
            &admin,
            &secret_row("sec_a", "org_a", "prj_a", "DB_URL", "secrets-v1"),
        )
        .await
        .unwrap();
    f.store
        .reserve_encryptions(&sys, "secrets-v1", 1)
        .await
        .unwrap();
    // And licensing: a product, a policy, a license and its machine.
    licensed(&f.store, &admin, "org_a", 1).await;
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
        "orgs",
        "memberships",
        "invitations",
        "api_keys",
        "level_permissions",
        "activity_events",
        "secret_projects",
        "secrets",
        "key_encryptions",
        "products",
        "license_policies",
        "licenses",
        "license_machines",
    ];

    // Control: the store's own contexts do see rows, so zero below means refused.
    let (role, ctx) = f.store.signed_context(&sys).unwrap();
    let seen = selects(
        attacker_view(
            pool,
            role,
            Some(&ctx),
            &[
                "users",
                "audit_events",
                "attempt_counters",
                "orgs",
                "memberships",
                "invitations",
                "api_keys",
                "level_permissions",
                "activity_events",
                "secret_projects",
                "secrets",
                "key_encryptions",
                "products",
                "license_policies",
                "licenses",
                "license_machines",
            ],
        )
        .await,
    );
    assert!(seen.iter().all(|(_, n)| *n > 0), "{seen:?}");
    let (role, ctx) = f.store.signed_context(&admin).unwrap();
    let seen = selects(
        attacker_view(
            pool,
            role,
            Some(&ctx),
            &[
                "secret_projects",
                "secrets",
                "products",
                "license_policies",
                "licenses",
                "license_machines",
            ],
        )
        .await,
    );
    assert!(seen.iter().all(|(_, n)| *n > 0), "{seen:?}");
    let me = as_user("usr_a");
    let (role, ctx) = f.store.signed_context(&me).unwrap();
    let seen = selects(
        attacker_view(
            pool,
            role,
            Some(&ctx),
            &["users", "orgs", "memberships", "activity_events"],
        )
        .await,
    );
    assert!(seen.iter().all(|(_, n)| *n > 0), "{seen:?}");
    let key = key_scope("key_s", "org_a", KeyKind::Service);
    let (role, ctx) = f.store.signed_context(&key).unwrap();
    let seen = selects(
        attacker_view(
            pool,
            role,
            Some(&ctx),
            &[
                "orgs",
                "memberships",
                "api_keys",
                "secret_projects",
                "secrets",
                "products",
                "license_policies",
                "licenses",
                "license_machines",
            ],
        )
        .await,
    );
    assert!(seen.iter().all(|(_, n)| *n > 0), "{seen:?}");

    // Forgeries: no context, a made-up MAC, a real MAC moved to another user, org or kind, a
    // system context presented as the app role, contexts that have expired, and the genuine
    // context of a revoked key.
    // A key ring and its canary, so the forged writes against them have rows to aim at.
    {
        use bastion_store::KeyRingStore;
        f.store.init_canary(&sys, b"canary", 1).await.unwrap();
        let key = bastion_store::StoredKey {
            purpose: "audit".into(),
            version: 1,
            key_id: "audit-v1-0011".into(),
            algorithm: "Ed25519".into(),
            wrapped: vec![1, 2, 3],
            public_key: Some(vec![4; 32]),
            created_ms: 42,
            retired: false,
        };
        f.store.insert_key(&sys, &key).await.unwrap();
    }
    // The rows the forged writes aim at, as the owner reads them, to compare afterwards.
    let owner_view = |sql: &'static str| {
        let url = f._db.url.clone();
        async move {
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            let rows: Vec<String> = sqlx::query_scalar(sql).fetch_all(&pool).await.unwrap();
            pool.close().await;
            rows
        }
    };
    let after_state_sql: [&'static str; 4] = [
        "SELECT id || ':' || email FROM bastion.users ORDER BY id",
        "SELECT id || ':' || data FROM bastion.activity_events ORDER BY id",
        "SELECT key_id || ':' || retired::text FROM bastion.key_ring ORDER BY key_id",
        "SELECT encode(canary, 'hex') FROM bastion.key_canary",
    ];
    let mut before_state = Vec::new();
    for sql in after_state_sql {
        before_state.push(owner_view(sql).await);
    }
    assert!(
        before_state.iter().all(|rows| !rows.is_empty()),
        "the control rows exist: {before_state:?}"
    );
    let (_, real_user_ctx) = f.store.signed_context(&me).unwrap();
    let (_, real_sys_ctx) = f.store.signed_context(&sys).unwrap();
    let (_, real_member_ctx) = f.store.signed_context(&in_org("usr_b", "org_a")).unwrap();
    let (_, real_key_ctx) = f.store.signed_context(&key).unwrap();
    let (_, revoked_key_ctx) = f
        .store
        .signed_context(&key_scope("key_r", "org_a", KeyKind::Service))
        .unwrap();
    let moved = real_user_ctx.replacen("usr_a", "usr_b", 1);
    let moved_org = real_member_ctx.replacen(".usr_b.org_a.", ".usr_b.org_b.", 1);
    let promoted = real_member_ctx.replacen(".usr_b.", ".usr_a.", 1);
    let as_user_kind = real_key_ctx.replacen("v1.svc.", "v1.app.", 1);
    let expiry = real_sys_ctx.split('.').nth(4).unwrap().to_owned();
    // Correctly signed, but expired a second ago.
    let past = expiry.parse::<i64>().unwrap() - 61_000;
    let (_, stale) = f.store.signed_context_until(&sys, past).unwrap();
    let (_, stale_user) = f.store.signed_context_until(&me, past).unwrap();
    let (_, stale_key) = f.store.signed_context_until(&key, past).unwrap();
    let made_up = format!("v1.sys...{expiry}.{}", "0".repeat(64));
    let made_up_key = format!("v1.svc.key_s.org_a.{expiry}.{}", "0".repeat(64));
    let forged = [
        None,
        Some(made_up.as_str()),
        Some(made_up_key.as_str()),
        Some(moved.as_str()),
        Some(moved_org.as_str()),
        Some(promoted.as_str()),
        Some(as_user_kind.as_str()),
        Some(stale.as_str()),
        Some(stale_user.as_str()),
        Some(stale_key.as_str()),
        Some(revoked_key_ctx.as_str()),
        Some("garbage"),
        Some("v1.app.usr_a...."),
    ];
    for role in ["bastion_app", "bastion_system"] {
        for ctx in forged {
            for (what, n) in attacker_view(pool, role, ctx, &tables).await {
                assert_eq!(n, 0, "{role} with {ctx:?}: {what}");
            }
            // And no write lands without a valid context.
            for (stmt, n) in attacker_writes(pool, role, ctx, FORGED_WRITES).await {
                assert_eq!(n, 0, "{role} with {ctx:?}: {stmt}");
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
    for (what, n) in attacker_view(pool, "bastion_system", Some(&real_key_ctx), &tables).await {
        assert_eq!(n, 0, "system role with a key context: {what}");
    }
    // Nothing changed underneath.
    for (sql, before) in after_state_sql.iter().zip(&before_state) {
        assert_eq!(&owner_view(sql).await, before, "{sql}");
    }
    assert_eq!(
        f.store.org(&sys, "org_a").await.unwrap().unwrap().name,
        "Org org_a"
    );
    assert_eq!(f.store.members(&sys, "org_a").await.unwrap().len(), 2);
    assert_eq!(f.store.invitations(&sys, "org_a").await.unwrap().len(), 2);
    assert_eq!(f.store.api_keys(&sys, "org_a").await.unwrap().len(), 2);
    assert_eq!(
        f.store
            .secret(&sys, "org_a", "prj_a", "DB_URL")
            .await
            .unwrap(),
        Some(secret_row(
            "sec_a",
            "org_a",
            "prj_a",
            "DB_URL",
            "secrets-v1"
        ))
    );
    assert_eq!(
        f.store.projects(&sys, "org_a").await.unwrap(),
        [project_row("prj_a", "org_a", "api")]
    );
    assert_eq!(
        f.store.encryptions(&sys).await.unwrap(),
        [("secrets-v1".to_owned(), 1)]
    );
    {
        use bastion_store::LicenseStore;
        let lic = f.store.license(&sys, "lic_org_a").await.unwrap().unwrap();
        assert_eq!(
            (lic.failures, lic.frozen_ms, lic.revoked_ms),
            (0, None, None)
        );
        assert_eq!(f.store.products(&sys, "org_a").await.unwrap().len(), 1);
        assert_eq!(f.store.policies(&sys, "prd_org_a").await.unwrap().len(), 1);
        assert_eq!(
            f.store
                .licenses(&sys, "org_a", None, 10)
                .await
                .unwrap()
                .len(),
            1
        );
        let machines = f.store.machines(&sys, "lic_org_a").await.unwrap();
        assert_eq!(machines.len(), 1);
        assert_eq!(machines[0].name, "machine mch_org_a");
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

    // Tenant rows in every org table, so the counts below have something to hide.
    f.store
        .sync_permissions(&sys, &permission_rows())
        .await
        .unwrap();
    org_with(
        &*f.store,
        "org_rt",
        &[("usr_owner", 100), ("usr_member", 40)],
    )
    .await;
    let owner = in_org("usr_owner", "org_rt");
    f.store
        .create_invitation(
            &owner,
            &invitation_row("inv_rt", "org_rt", "x@example.com", 20, 1),
        )
        .await
        .unwrap();
    f.store
        .create_api_key(&owner, &key_row("key_rt", "org_rt", KeyKind::Service, 7, 1))
        .await
        .unwrap();
    f.store
        .add_activity(
            &as_user("usr_member"),
            &bastion_store::ActivityRow {
                id: "act_rt".into(),
                user_id: "usr_member".into(),
                org_id: Some("org_rt".into()),
                ts_ms: 1,
                kind: "k".into(),
                data: "{}".into(),
            },
        )
        .await
        .unwrap();
    f.store
        .create_project(&owner, &project_row("prj_rt", "org_rt", "api"))
        .await
        .unwrap();
    f.store
        .insert_secret(
            &owner,
            &secret_row("sec_rt", "org_rt", "prj_rt", "DB_URL", "secrets-v1"),
        )
        .await
        .unwrap();
    f.store
        .reserve_encryptions(&sys, "secrets-v1", 1)
        .await
        .unwrap();
    licensed(&f.store, &owner, "org_rt", 7).await;
    let tenant_tables = [
        "users",
        "orgs",
        "memberships",
        "invitations",
        "api_keys",
        "activity_events",
        "level_permissions",
        "secret_projects",
        "secrets",
        "key_encryptions",
        "products",
        "license_policies",
        "licenses",
        "license_machines",
    ];

    // The attacker's way: the same credentials, by hand.
    let pool = sqlx::PgPool::connect(&format!("{url}?options=-csearch_path%3Dbastion"))
        .await
        .unwrap();
    // Zero rows, or the database's refusal; any other error fails (see `refusal`).
    let denied = |r: Result<i64, sqlx::Error>| match r {
        Ok(n) => n == 0,
        Err(e) => refusal(&e, "a direct read"),
    };
    let scalar = |sql: &'static str| {
        let pool = pool.clone();
        async move { sqlx::query_scalar::<_, i64>(sql).fetch_one(&pool).await }
    };
    assert!(
        denied(scalar("SELECT count(*) FROM bastion.scope_key").await),
        "the key is unreadable"
    );
    for t in tenant_tables {
        let n = sqlx::query_scalar::<_, i64>(&format!("SELECT count(*) FROM bastion.{t}"))
            .fetch_one(&pool)
            .await;
        assert!(denied(n), "as itself: nothing in {t}");
    }
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
        for t in tenant_tables {
            // A refused statement aborts the transaction: each count in its own savepoint.
            sqlx::query("SAVEPOINT probe")
                .execute(&mut *tx)
                .await
                .unwrap();
            let n = sqlx::query_scalar::<_, i64>(&format!("SELECT count(*) FROM bastion.{t}"))
                .fetch_one(&mut *tx)
                .await;
            assert!(denied(n), "{role} without a context: nothing in {t}");
            sqlx::query("ROLLBACK TO SAVEPOINT probe")
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        tx.rollback().await.unwrap();
    }
    pool.close().await;
}

/// A member's level in org_a, read by the system.
async fn level_in_a(store: &PgStore, user: &str) -> Option<i32> {
    store
        .membership(&Scope::System("test"), "org_a", user)
        .await
        .unwrap()
        .map(|m| m.level)
}

#[tokio::test]
async fn r3_the_database_enforces_permissions_and_level_rules() {
    use bastion_store::{MemberChange, StoreError};
    let Some(f) = fresh().await else { return };
    let store = &*f.store;
    let sys = Scope::System("test");
    store
        .sync_permissions(&sys, &permission_rows())
        .await
        .unwrap();
    org_with(
        store,
        "org_a",
        &[
            ("usr_super", 100),
            ("usr_super2", 100),
            ("usr_admin", 80),
            ("usr_admin2", 80),
            ("usr_mgr", 60),
            ("usr_user", 40),
            ("usr_learner", 30),
            ("usr_viewer", 20),
        ],
    )
    .await;
    let owner = in_org("usr_super", "org_a");
    for (id, kind, hash) in [
        ("key_s", KeyKind::Service, 1),
        ("key_p", KeyKind::Publishable, 2),
        ("key_r", KeyKind::Service, 3),
    ] {
        store
            .create_api_key(&owner, &key_row(id, "org_a", kind, hash, 1))
            .await
            .unwrap();
    }
    assert!(
        store
            .revoke_api_key(&owner, "org_a", "key_r", 2)
            .await
            .unwrap()
    );
    store
        .append(&sys, &[ev("a.1")], &|_, seq, _| [seq as u8; 32])
        .await
        .unwrap();
    let forbidden = |r: Result<(), StoreError>| matches!(r, Err(StoreError::Forbidden));
    let invite =
        |id: &str, level: i32| invitation_row(id, "org_a", &format!("{id}@example.com"), level, 10);

    // Viewer, Learner, User, Manager: they read the org and its members, and change nothing.
    for u in ["usr_viewer", "usr_learner", "usr_user", "usr_mgr"] {
        let s = in_org(u, "org_a");
        assert!(store.org(&s, "org_a").await.unwrap().is_some(), "{u}");
        assert_eq!(store.members(&s, "org_a").await.unwrap().len(), 8, "{u}");
        assert!(
            !store.rename_org(&s, "org_a", "Mine", 5).await.unwrap(),
            "{u}"
        );
        assert!(!store.delete_org(&s, "org_a").await.unwrap(), "{u}");
        for (target, expected, to) in [
            ("usr_viewer", 20, Some(30)),
            ("usr_learner", 30, Some(20)),
            ("usr_learner", 30, None),
            ("usr_user", 40, Some(20)),
            ("usr_user", 40, None),
            ("usr_admin", 80, Some(20)),
        ] {
            if target != u {
                assert_eq!(
                    store
                        .change_member(&s, "org_a", target, expected, to, 5)
                        .await
                        .unwrap(),
                    MemberChange::NotFound,
                    "{u} changed {target} to {to:?}"
                );
            }
        }
        assert!(store.api_keys(&s, "org_a").await.unwrap().is_empty(), "{u}");
        assert!(
            store
                .org_events(&s, "org_a", None, 10)
                .await
                .unwrap()
                .is_empty(),
            "{u}"
        );
        assert!(
            forbidden(
                store
                    .create_api_key(&s, &key_row("key_x", "org_a", KeyKind::Service, 9, 5))
                    .await
            ),
            "{u}"
        );
        assert!(
            !store.revoke_api_key(&s, "org_a", "key_s", 5).await.unwrap(),
            "{u}"
        );
    }
    for u in ["usr_viewer", "usr_learner", "usr_user"] {
        let s = in_org(u, "org_a");
        assert!(
            forbidden(store.create_invitation(&s, &invite("inv_low", 20)).await),
            "{u} invited"
        );
        assert!(store.invitations(&s, "org_a").await.unwrap().is_empty());
    }
    // A Manager invites, below their own level only.
    let mgr = in_org("usr_mgr", "org_a");
    for level in [60, 80, 100] {
        assert!(
            forbidden(store.create_invitation(&mgr, &invite("inv_m", level)).await),
            "{level}"
        );
    }
    store
        .create_invitation(&mgr, &invite("inv_m", 40))
        .await
        .unwrap();
    assert!(
        store
            .invitations(&mgr, "org_a")
            .await
            .unwrap()
            .iter()
            .any(|i| i.id == "inv_m")
    );
    assert_eq!(
        level_in_a(store, "usr_user").await,
        Some(40),
        "nothing changed"
    );

    // An Admin changes members below 80 only, never to 80 or above, never themself.
    let admin = in_org("usr_admin", "org_a");
    for to in [80, 100] {
        assert!(
            matches!(
                store
                    .change_member(&admin, "org_a", "usr_user", 40, Some(to), 6)
                    .await,
                Err(StoreError::Forbidden)
            ),
            "promoted to {to}"
        );
    }
    assert_eq!(level_in_a(store, "usr_user").await, Some(40));
    for (target, expected, to) in [
        ("usr_admin", 80, Some(60)),
        ("usr_admin", 80, Some(100)),
        ("usr_admin2", 80, Some(60)),
        ("usr_admin2", 80, None),
        ("usr_super", 100, Some(80)),
        ("usr_super", 100, None),
    ] {
        assert_eq!(
            store
                .change_member(&admin, "org_a", target, expected, to, 6)
                .await
                .unwrap(),
            MemberChange::NotFound,
            "admin changed {target} to {to:?}"
        );
    }
    assert_eq!(level_in_a(store, "usr_admin").await, Some(80));
    assert_eq!(level_in_a(store, "usr_super").await, Some(100));
    assert_eq!(
        store
            .change_member(&admin, "org_a", "usr_user", 40, Some(20), 7)
            .await
            .unwrap(),
        MemberChange::Changed
    );
    assert_eq!(
        store
            .change_member(&admin, "org_a", "usr_viewer", 20, Some(60), 7)
            .await
            .unwrap(),
        MemberChange::Changed
    );
    assert_eq!(
        store
            .change_member(&admin, "org_a", "usr_learner", 30, None, 7)
            .await
            .unwrap(),
        MemberChange::Changed
    );
    assert!(forbidden(
        store.create_invitation(&admin, &invite("inv_a", 80)).await
    ));
    store
        .create_invitation(&admin, &invite("inv_a", 60))
        .await
        .unwrap();
    assert!(
        store
            .rename_org(&admin, "org_a", "By admin", 8)
            .await
            .unwrap()
    );
    assert!(!store.delete_org(&admin, "org_a").await.unwrap());
    assert_eq!(
        store
            .org_events(&admin, "org_a", None, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    // Leaving is the one change of one's own row.
    let admin2 = in_org("usr_admin2", "org_a");
    assert_eq!(
        store
            .change_member(&admin2, "org_a", "usr_admin2", 80, None, 8)
            .await
            .unwrap(),
        MemberChange::Changed
    );

    // A publishable key reads its org and nothing else, and writes nothing.
    let publ = key_scope("key_p", "org_a", KeyKind::Publishable);
    assert_eq!(
        store.org(&publ, "org_a").await.unwrap().unwrap().name,
        "By admin"
    );
    assert!(store.members(&publ, "org_a").await.unwrap().is_empty());
    assert!(store.api_keys(&publ, "org_a").await.unwrap().is_empty());
    assert!(store.invitations(&publ, "org_a").await.unwrap().is_empty());
    assert!(
        store
            .org_events(&publ, "org_a", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(forbidden(
        store
            .create_api_key(&publ, &key_row("key_x", "org_a", KeyKind::Service, 9, 9))
            .await
    ));
    assert!(forbidden(
        store.create_invitation(&publ, &invite("inv_p", 20)).await
    ));
    assert!(!store.rename_org(&publ, "org_a", "By key", 9).await.unwrap());
    assert!(!store.delete_org(&publ, "org_a").await.unwrap());
    assert!(
        !store
            .revoke_api_key(&publ, "org_a", "key_s", 9)
            .await
            .unwrap()
    );
    assert!(
        !store
            .revoke_invitation(&publ, "org_a", "inv_a")
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .change_member(&publ, "org_a", "usr_user", 20, Some(30), 9)
            .await
            .unwrap(),
        MemberChange::NotFound
    );

    // A service key acts as an Admin: it renames and manages keys, but cannot delete the org
    // nor raise anyone to 80.
    let svc = key_scope("key_s", "org_a", KeyKind::Service);
    assert!(
        store
            .rename_org(&svc, "org_a", "By service", 10)
            .await
            .unwrap()
    );
    assert_eq!(store.api_keys(&svc, "org_a").await.unwrap().len(), 3);
    store
        .create_api_key(
            &svc,
            &key_row("key_n", "org_a", KeyKind::Publishable, 4, 10),
        )
        .await
        .unwrap();
    assert!(!store.delete_org(&svc, "org_a").await.unwrap());
    assert!(matches!(
        store
            .change_member(&svc, "org_a", "usr_user", 20, Some(80), 10)
            .await,
        Err(StoreError::Forbidden)
    ));
    assert_eq!(
        store
            .change_member(&svc, "org_a", "usr_super", 100, Some(80), 10)
            .await
            .unwrap(),
        MemberChange::NotFound
    );
    assert_eq!(
        store
            .change_member(&svc, "org_a", "usr_user", 20, Some(40), 10)
            .await
            .unwrap(),
        MemberChange::Changed
    );

    // A revoked key's genuine scope reaches nothing.
    let revoked = key_scope("key_r", "org_a", KeyKind::Service);
    assert_eq!(store.org(&revoked, "org_a").await.unwrap(), None);
    assert!(store.members(&revoked, "org_a").await.unwrap().is_empty());
    assert!(store.api_keys(&revoked, "org_a").await.unwrap().is_empty());
    assert!(
        store
            .org_events(&revoked, "org_a", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        !store
            .rename_org(&revoked, "org_a", "Revoked", 11)
            .await
            .unwrap()
    );
    assert!(forbidden(
        store
            .create_api_key(
                &revoked,
                &key_row("key_y", "org_a", KeyKind::Service, 8, 11)
            )
            .await
    ));
    assert!(forbidden(
        store
            .create_invitation(&revoked, &invite("inv_r", 20))
            .await
    ));

    // Super Admins: anything, including other Super Admins and the org itself.
    assert_eq!(
        store
            .change_member(&owner, "org_a", "usr_admin", 80, Some(100), 12)
            .await
            .unwrap(),
        MemberChange::Changed
    );
    assert_eq!(
        store
            .change_member(&owner, "org_a", "usr_super2", 100, Some(80), 12)
            .await
            .unwrap(),
        MemberChange::Changed
    );
    assert_eq!(
        store.org(&sys, "org_a").await.unwrap().unwrap().name,
        "By service"
    );
    assert!(store.delete_org(&owner, "org_a").await.unwrap());
    assert!(store.members(&sys, "org_a").await.unwrap().is_empty());
    assert!(store.api_keys(&sys, "org_a").await.unwrap().is_empty());
}

#[tokio::test]
async fn r4_a_valid_context_of_org_a_naming_org_b_sees_none_of_org_b() {
    use bastion_store::ActivityRow;
    let Some(f) = fresh().await else { return };
    let store = &*f.store;
    let sys = Scope::System("test");
    store
        .sync_permissions(&sys, &permission_rows())
        .await
        .unwrap();
    org_with(store, "org_a", &[("usr_a", 100)]).await;
    org_with(store, "org_b", &[("usr_b", 100), ("usr_b2", 40)]).await;
    let owner_b = in_org("usr_b", "org_b");
    store
        .create_invitation(
            &owner_b,
            &invitation_row("inv_b", "org_b", "new@example.com", 20, 1),
        )
        .await
        .unwrap();
    store
        .create_api_key(&owner_b, &key_row("key_b", "org_b", KeyKind::Service, 1, 1))
        .await
        .unwrap();
    store
        .add_activity(
            &owner_b,
            &ActivityRow {
                id: "act_b".into(),
                user_id: "usr_b".into(),
                org_id: Some("org_b".into()),
                ts_ms: 1,
                kind: "app.focus".into(),
                data: "{}".into(),
            },
        )
        .await
        .unwrap();
    store
        .create_project(&owner_b, &project_row("prj_b", "org_b", "api"))
        .await
        .unwrap();
    let b_secret = secret_row("sec_b", "org_b", "prj_b", "DB_URL", "secrets-v1");
    store.insert_secret(&owner_b, &b_secret).await.unwrap();
    licensed(store, &owner_b, "org_b", 2).await;
    let mut b_event = ev("b.1");
    b_event.org_id = Some("org_b".into());
    store
        .append(&sys, &[b_event], &|_, seq, _| [seq as u8; 32])
        .await
        .unwrap();
    let reads = [
        "SELECT count(*) FROM orgs WHERE id = 'org_b'",
        "SELECT count(*) FROM memberships WHERE org_id = 'org_b'",
        "SELECT count(*) FROM invitations WHERE org_id = 'org_b'",
        "SELECT count(*) FROM api_keys WHERE org_id = 'org_b'",
        "SELECT count(*) FROM activity_events WHERE org_id = 'org_b'",
        "SELECT count(*) FROM audit_events WHERE org_id = 'org_b'",
        "SELECT count(*) FROM secret_projects WHERE org_id = 'org_b'",
        "SELECT count(*) FROM secrets WHERE org_id = 'org_b'",
        "SELECT count(*) FROM secrets WHERE project_id = 'prj_b'",
        "SELECT count(*) FROM products WHERE org_id = 'org_b'",
        "SELECT count(*) FROM license_policies WHERE product_id = 'prd_org_b'",
        "SELECT count(*) FROM licenses WHERE org_id = 'org_b'",
        "SELECT count(*) FROM licenses WHERE key_hash = decode(repeat('02', 32), 'hex')",
        "SELECT count(*) FROM license_machines WHERE license_id = 'lic_org_b'",
        "SELECT count(*) FROM level_permissions",
    ];
    let pool = store.pool();
    // Control: org B's Super Admin, through the same kind of connection, sees B's rows (the
    // map excepted: only the system reads it).
    let (role, ctx) = store.signed_context(&owner_b).unwrap();
    for sql in &reads[..reads.len() - 1] {
        assert!(count_with(pool, role, &ctx, sql).await > 0, "{sql}");
    }
    let writes = [
        "UPDATE orgs SET name = 'Owned' WHERE id = 'org_b'",
        "DELETE FROM orgs WHERE id = 'org_b'",
        "UPDATE memberships SET level = 20 WHERE org_id = 'org_b'",
        "DELETE FROM memberships WHERE org_id = 'org_b'",
        "INSERT INTO memberships (org_id, user_id, email, level, created_ms, updated_ms) \
         VALUES ('org_b', 'usr_a', 'usr_a@example.com', 100, 1, 1)",
        "INSERT INTO invitations (id, org_id, email, level, invited_by, created_ms, expires_ms) \
         VALUES ('inv_evil', 'org_b', 'usr_a@example.com', 20, 'usr_a', 1, 9000000000000)",
        "UPDATE invitations SET level = 100 WHERE org_id = 'org_b'",
        "DELETE FROM invitations WHERE org_id = 'org_b'",
        "UPDATE api_keys SET revoked_ms = 1 WHERE org_id = 'org_b'",
        "INSERT INTO api_keys (id, org_id, kind, name, hint, key_hash, created_by, created_ms) \
         VALUES ('key_evil', 'org_b', 'service', 'evil', 'bst_sk_', decode(repeat('ee', 32), 'hex'), 'usr_a', 1)",
        "UPDATE activity_events SET data = 'owned' WHERE org_id = 'org_b'",
        "DELETE FROM activity_events WHERE org_id = 'org_b'",
        "UPDATE secrets SET value = 'owned'::bytea, value_key = 'secrets-v9' WHERE org_id = 'org_b'",
        "DELETE FROM secrets WHERE org_id = 'org_b'",
        "DELETE FROM secret_projects WHERE org_id = 'org_b'",
        "INSERT INTO secret_projects (id, org_id, name, created_by, created_ms) \
         VALUES ('prj_evil', 'org_b', 'evil', 'usr_a', 1)",
        "INSERT INTO secrets (id, org_id, project_id, name, value_key, value, version, created_ms, updated_ms, updated_by) \
         VALUES ('sec_evil', 'org_b', 'prj_b', 'EVIL', 'secrets-v1', 'x'::bytea, 1, 1, 1, 'usr_a')",
        // Filed under one's own org, into B's project: the composite key refuses it.
        "INSERT INTO secrets (id, org_id, project_id, name, value_key, value, version, created_ms, updated_ms, updated_by) \
         VALUES ('sec_evil', 'org_a', 'prj_b', 'EVIL', 'secrets-v1', 'x'::bytea, 1, 1, 1, 'usr_a')",
        "UPDATE licenses SET revoked_ms = 1 WHERE org_id = 'org_b'",
        "UPDATE licenses SET frozen_ms = 1, failures = 99 WHERE org_id = 'org_b'",
        "UPDATE license_machines SET last_seen_ms = 1, name = 'owned' WHERE org_id = 'org_b'",
        "DELETE FROM license_machines WHERE org_id = 'org_b'",
        "INSERT INTO products (id, org_id, name, created_ms) VALUES ('prd_evil', 'org_b', 'evil', 1)",
        "INSERT INTO license_policies (id, org_id, product_id, name, max_machines, entitlements, lease_ms, created_ms) \
         VALUES ('pol_evil', 'org_b', 'prd_org_b', 'evil', 99, '{all}', 1, 1)",
        "INSERT INTO licenses (id, org_id, product_id, policy_id, key_hash, email, entitlements, max_machines, \
         lease_ms, created_ms, created_by) VALUES ('lic_evil', 'org_b', 'prd_org_b', 'pol_org_b', \
         decode(repeat('ee', 32), 'hex'), 'evil@example.com', '{all}', 99, 1, 1, 'usr_a')",
        "INSERT INTO license_machines (id, org_id, license_id, machine_hash, name, activated_ms, last_seen_ms) \
         VALUES ('mch_evil', 'org_b', 'lic_org_b', decode(repeat('ee', 32), 'hex'), 'evil', 1, 1)",
        // Filed under one's own org, onto B's product, policy or license: the composite keys
        // refuse them.
        "INSERT INTO license_policies (id, org_id, product_id, name, max_machines, entitlements, lease_ms, created_ms) \
         VALUES ('pol_evil', 'org_a', 'prd_org_b', 'evil', 99, '{all}', 1, 1)",
        "INSERT INTO licenses (id, org_id, product_id, policy_id, key_hash, email, entitlements, max_machines, \
         lease_ms, created_ms, created_by) VALUES ('lic_evil', 'org_a', 'prd_org_b', 'pol_org_b', \
         decode(repeat('ee', 32), 'hex'), 'evil@example.com', '{all}', 99, 1, 1, 'usr_a')",
        "INSERT INTO license_machines (id, org_id, license_id, machine_hash, name, activated_ms, last_seen_ms) \
         VALUES ('mch_evil', 'org_a', 'lic_org_b', decode(repeat('ee', 32), 'hex'), 'evil', 1, 1)",
    ];
    for scope in [
        in_org("usr_a", "org_b"),
        in_org("usr_a", "org_a"),
        as_user("usr_a"),
    ] {
        let (role, ctx) = store.signed_context(&scope).unwrap();
        for sql in reads {
            assert_eq!(
                count_with(pool, role, &ctx, sql).await,
                0,
                "{scope:?}: {sql}"
            );
        }
        for (stmt, n) in attacker_writes(pool, role, Some(&ctx), &writes).await {
            assert_eq!(n, 0, "{scope:?}: {stmt}");
        }
    }
    assert_eq!(
        store.org(&sys, "org_b").await.unwrap().unwrap().name,
        "Org org_b"
    );
    assert_eq!(store.members(&sys, "org_b").await.unwrap().len(), 2);
    assert_eq!(store.invitations(&sys, "org_b").await.unwrap().len(), 2);
    assert_eq!(
        store.api_keys(&sys, "org_b").await.unwrap()[0].revoked_ms,
        None
    );
    assert_eq!(
        store
            .secret(&sys, "org_b", "prj_b", "DB_URL")
            .await
            .unwrap(),
        Some(b_secret)
    );
    assert_eq!(store.projects(&sys, "org_b").await.unwrap().len(), 1);
    {
        use bastion_store::LicenseStore;
        let lic = store.license(&sys, "lic_org_b").await.unwrap().unwrap();
        assert_eq!(
            (lic.failures, lic.frozen_ms, lic.revoked_ms),
            (0, None, None)
        );
        assert_eq!(store.products(&sys, "org_b").await.unwrap().len(), 1);
        assert_eq!(store.policies(&sys, "prd_org_b").await.unwrap().len(), 1);
        let machines = store.machines(&sys, "lic_org_b").await.unwrap();
        assert_eq!(machines.len(), 1);
        assert_eq!(machines[0].last_seen_ms, 2);
    }
}

#[tokio::test]
async fn r4_request_work_changes_only_the_columns_its_actions_need() {
    let Some(f) = fresh().await else { return };
    let store = &*f.store;
    let sys = Scope::System("test");
    store
        .sync_permissions(&sys, &permission_rows())
        .await
        .unwrap();
    org_with(store, "org_a", &[("usr_super", 100), ("usr_user", 40)]).await;
    let owner = in_org("usr_super", "org_a");
    store
        .create_api_key(&owner, &key_row("key_s", "org_a", KeyKind::Service, 1, 1))
        .await
        .unwrap();
    org_with(store, "org_b", &[("usr_b", 100)]).await;
    for (org, project) in [("org_a", "prj_a"), ("org_b", "prj_b")] {
        let s = in_org(if org == "org_a" { "usr_super" } else { "usr_b" }, org);
        store
            .create_project(&s, &project_row(project, org, "api"))
            .await
            .unwrap();
    }
    store
        .insert_secret(
            &owner,
            &secret_row("sec_a", "org_a", "prj_a", "DB_URL", "secrets-v1"),
        )
        .await
        .unwrap();
    licensed(store, &owner, "org_a", 1).await;
    licensed(store, &in_org("usr_b", "org_b"), "org_b", 2).await;
    // A Super Admin's genuine context: the policies let it update these rows, the column
    // grants do not let it move a membership to another user, re-key a key or re-own an org.
    let (role, ctx) = store.signed_context(&owner).unwrap();
    for sql in [
        "UPDATE memberships SET user_id = 'usr_super' WHERE user_id = 'usr_user'",
        "UPDATE memberships SET org_id = 'org_b'",
        "UPDATE api_keys SET key_hash = decode(repeat('00', 32), 'hex')",
        "UPDATE api_keys SET kind = 'publishable'",
        "UPDATE orgs SET created_by = 'usr_user'",
        "UPDATE activity_events SET user_id = 'usr_super'",
        "UPDATE secrets SET org_id = 'org_b', project_id = 'prj_b'",
        "UPDATE secrets SET name = 'OTHER'",
        "UPDATE secrets SET id = 'sec_other'",
        "UPDATE secrets SET created_ms = 0",
        "UPDATE secret_projects SET name = 'renamed'",
        "UPDATE secret_projects SET org_id = 'org_b'",
        // The encryption budget is the system's alone: no grant at all.
        "SELECT count(*) FROM key_encryptions",
        "UPDATE key_encryptions SET reserved = 0",
        // A license changes only in its state; a machine in its name and last-seen time.
        "UPDATE licenses SET org_id = 'org_b', product_id = 'prd_org_b', policy_id = 'pol_org_b'",
        "UPDATE licenses SET key_hash = decode(repeat('00', 32), 'hex')",
        "UPDATE licenses SET email = 'evil@example.com'",
        "UPDATE licenses SET max_machines = 99",
        "UPDATE licenses SET entitlements = '{all}'",
        "UPDATE licenses SET expires_ms = NULL",
        "UPDATE license_machines SET license_id = 'lic_org_b', org_id = 'org_b'",
        "UPDATE license_machines SET machine_hash = decode(repeat('00', 32), 'hex')",
        // Machines are added and refreshed by the licensing system path only.
        "UPDATE license_machines SET last_seen_ms = 1, name = 'renamed'",
        "INSERT INTO license_machines (id, org_id, license_id, machine_hash, name, activated_ms, last_seen_ms) \
         VALUES ('mch_byhand', 'org_a', 'lic_org_a', decode(repeat('ab', 32), 'hex'), 'x', 1, 1)",
        "UPDATE products SET name = 'renamed'",
        "UPDATE license_policies SET max_machines = 99",
        "DELETE FROM licenses",
        "DELETE FROM license_policies",
        "DELETE FROM products",
        // Issued live: a frozen or revoked license would skip those permissions.
        "INSERT INTO licenses (id, org_id, product_id, policy_id, key_hash, email, entitlements, max_machines, \
         lease_ms, created_ms, created_by, revoked_ms) VALUES ('lic_x', 'org_a', 'prd_org_a', 'pol_org_a', \
         decode(repeat('ee', 32), 'hex'), 'x@example.com', '{}', 1, 1, 1, 'usr_super', 1)",
        // The outbox is the system's: licensing mail goes through its path.
        "INSERT INTO email_outbox (id, recipient, template, sealed, created_ms, next_attempt_ms) \
         VALUES ('mail_x', 'x@example.com', 't', 'x'::bytea, 1, 1)",
    ] {
        let mut tx = store.pool().begin().await.unwrap();
        sqlx::query("SELECT set_config('role', $1, true), set_config('bastion.ctx', $2, true)")
            .bind(role)
            .bind(&ctx)
            .execute(&mut *tx)
            .await
            .unwrap();
        let err = sqlx::query(sql).execute(&mut *tx).await.unwrap_err();
        let code = err
            .as_database_error()
            .and_then(|d| d.code())
            .map(|c| c.into_owned());
        assert_eq!(code.as_deref(), Some("42501"), "{sql}: {err}");
        tx.rollback().await.unwrap();
    }
    // The columns the actions need stay writable (control).
    assert!(
        store
            .rename_org(&owner, "org_a", "Renamed", 5)
            .await
            .unwrap()
    );
    assert!(
        store
            .revoke_api_key(&owner, "org_a", "key_s", 6)
            .await
            .unwrap()
    );
    {
        use bastion_store::LicenseStore;
        assert!(
            store
                .set_frozen(&owner, "lic_org_a", Some(6))
                .await
                .unwrap()
        );
        assert!(store.revoke_license(&owner, "lic_org_a", 6).await.unwrap());
    }
    assert_eq!(
        store
            .update_secret(
                &owner,
                "org_a",
                "sec_a",
                &bastion_store::SecretUpdate {
                    value_key: "secrets-v2".into(),
                    value: b"new".to_vec(),
                    updated_ms: 7,
                    updated_by: "usr_super".into(),
                },
            )
            .await
            .unwrap(),
        Some(2)
    );
}

/// S1 on PostgreSQL: the policies decide projects and secrets by the permission map: Viewers
/// and Learners see projects only, Users also read secrets, Managers and up (and service keys)
/// write; a publishable or revoked key reaches nothing.
#[tokio::test]
async fn s1_vault_policies_follow_the_permission_map() {
    use bastion_store::{SecretUpdate, StoreError};
    let Some(f) = fresh().await else { return };
    let store = &*f.store;
    let sys = Scope::System("test");
    store
        .sync_permissions(&sys, &permission_rows())
        .await
        .unwrap();
    org_with(
        store,
        "org_a",
        &[
            ("usr_super", 100),
            ("usr_admin", 80),
            ("usr_mgr", 60),
            ("usr_user", 40),
            ("usr_learner", 30),
            ("usr_viewer", 20),
        ],
    )
    .await;
    let owner = in_org("usr_super", "org_a");
    for (id, kind, hash) in [
        ("key_s", KeyKind::Service, 1),
        ("key_p", KeyKind::Publishable, 2),
        ("key_r", KeyKind::Service, 3),
    ] {
        store
            .create_api_key(&owner, &key_row(id, "org_a", kind, hash, 1))
            .await
            .unwrap();
    }
    assert!(
        store
            .revoke_api_key(&owner, "org_a", "key_r", 2)
            .await
            .unwrap()
    );
    let mgr = in_org("usr_mgr", "org_a");
    store
        .create_project(&mgr, &project_row("prj_1", "org_a", "api"))
        .await
        .unwrap();
    let secret = secret_row("sec_1", "org_a", "prj_1", "DB_URL", "secrets-v1");
    store.insert_secret(&mgr, &secret).await.unwrap();
    let update = SecretUpdate {
        value_key: "secrets-v2".into(),
        value: b"evil".to_vec(),
        updated_ms: 9,
        updated_by: "x".into(),
    };
    let forbidden = |r: Result<(), StoreError>| matches!(r, Err(StoreError::Forbidden));

    // (scope, sees projects, reads secrets)
    let readers = [
        (in_org("usr_viewer", "org_a"), true, false),
        (in_org("usr_learner", "org_a"), true, false),
        (in_org("usr_user", "org_a"), true, true),
        (
            key_scope("key_p", "org_a", KeyKind::Publishable),
            false,
            false,
        ),
        (key_scope("key_r", "org_a", KeyKind::Service), false, false),
    ];
    for (scope, projects, secrets) in readers {
        let at = format!("{scope:?}");
        assert_eq!(
            store.projects(&scope, "org_a").await.unwrap().len(),
            usize::from(projects),
            "{at}"
        );
        assert_eq!(
            store
                .project(&scope, "org_a", "prj_1")
                .await
                .unwrap()
                .is_some(),
            projects,
            "{at}"
        );
        assert_eq!(
            store.secrets(&scope, "org_a", "prj_1").await.unwrap().len(),
            usize::from(secrets),
            "{at}"
        );
        assert_eq!(
            store
                .secret(&scope, "org_a", "prj_1", "DB_URL")
                .await
                .unwrap()
                .is_some(),
            secrets,
            "{at}"
        );
        // And no writes at all.
        assert!(
            forbidden(
                store
                    .create_project(&scope, &project_row("prj_x", "org_a", "x"))
                    .await
            ),
            "{at}"
        );
        assert!(
            forbidden(
                store
                    .insert_secret(
                        &scope,
                        &secret_row("sec_x", "org_a", "prj_1", "X", "secrets-v1")
                    )
                    .await
            ),
            "{at}"
        );
        assert_eq!(
            store
                .update_secret(&scope, "org_a", "sec_1", &update)
                .await
                .unwrap(),
            None,
            "{at}"
        );
        assert!(
            !store
                .delete_secret(&scope, "org_a", "prj_1", "DB_URL")
                .await
                .unwrap(),
            "{at}"
        );
        assert!(
            !store
                .delete_project(&scope, "org_a", "prj_1")
                .await
                .unwrap(),
            "{at}"
        );
    }
    assert_eq!(
        store
            .secret(&sys, "org_a", "prj_1", "DB_URL")
            .await
            .unwrap(),
        Some(secret.clone()),
        "nothing changed"
    );

    // Managers, Admins, Super Admins and service keys write.
    for (i, scope) in [
        mgr.clone(),
        in_org("usr_admin", "org_a"),
        owner.clone(),
        key_scope("key_s", "org_a", KeyKind::Service),
    ]
    .into_iter()
    .enumerate()
    {
        let at = format!("{scope:?}");
        let (project, id) = (format!("prj_w{i}"), format!("sec_w{i}"));
        store
            .create_project(&scope, &project_row(&project, "org_a", &project))
            .await
            .unwrap();
        store
            .insert_secret(
                &scope,
                &secret_row(&id, "org_a", &project, "TOKEN", "secrets-v1"),
            )
            .await
            .unwrap();
        assert_eq!(
            store
                .update_secret(&scope, "org_a", &id, &update)
                .await
                .unwrap(),
            Some(2),
            "{at}"
        );
        assert_eq!(
            store
                .secrets(&scope, "org_a", &project)
                .await
                .unwrap()
                .len(),
            1
        );
        assert!(
            store
                .delete_secret(&scope, "org_a", &project, "TOKEN")
                .await
                .unwrap(),
            "{at}"
        );
        assert!(
            store
                .delete_project(&scope, "org_a", &project)
                .await
                .unwrap(),
            "{at}"
        );
    }

    // The cascade from a project to its secrets runs past row security: a map whose Managers
    // may delete projects but hold no right on secrets still leaves none behind.
    let map: Vec<(i32, String)> = permission_rows()
        .into_iter()
        .filter(|(_, p)| !p.starts_with("secrets."))
        .collect();
    assert!(map.contains(&(60, "projects.write".to_owned())));
    store.sync_permissions(&sys, &map).await.unwrap();
    assert!(
        store
            .secrets(&mgr, "org_a", "prj_1")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.delete_project(&mgr, "org_a", "prj_1").await.unwrap());
    assert_eq!(
        store
            .secret(&sys, "org_a", "prj_1", "DB_URL")
            .await
            .unwrap(),
        None
    );
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM bastion.secrets")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(left, 0);
}

/// The outbox migration keeps what it can tell: pending mail queued before it gets '' (an
/// unknown key: rewrapped, and holding back retirement), finished mail NULL.
#[tokio::test]
async fn s3_mail_queued_before_the_vault_migration_has_an_unknown_key() {
    use std::borrow::Cow;
    let Some(f) = fresh().await else { return };
    // Start again from an empty schema, migrated up to just before the vault.
    sqlx::query("DROP SCHEMA bastion CASCADE")
        .execute(f.store.pool())
        .await
        .unwrap();
    let store = PgStore::connect(&f._db.url, 2).await.unwrap();
    sqlx::query("CREATE SCHEMA bastion")
        .execute(store.pool())
        .await
        .unwrap();
    // The migrator's fields are sqlx's (hidden) way to build one from a subset.
    let before = sqlx::migrate::Migrator {
        migrations: Cow::Owned(
            bastion_store_postgres::MIGRATOR
                .iter()
                .filter(|m| m.version < 7)
                .cloned()
                .collect(),
        ),
        ..sqlx::migrate::Migrator::DEFAULT
    };
    before.run(store.pool()).await.unwrap();
    for (id, sealed, sent, failed) in [
        ("mail_p", &b"sealed"[..], None, None),
        ("mail_s", &b""[..], Some(5_i64), None),
        ("mail_f", &b""[..], None, Some(5_i64)),
    ] {
        sqlx::query(
            "INSERT INTO bastion.email_outbox (id, recipient, template, sealed, created_ms, next_attempt_ms, sent_ms, failed_ms) \
             VALUES ($1, 'a@example.com', 't', $2, 1, 1, $3, $4)",
        )
        .bind(id)
        .bind(sealed)
        .bind(sent)
        .bind(failed)
        .execute(store.pool())
        .await
        .unwrap();
    }
    store.migrate().await.unwrap();
    let keys: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT id, sealed_key FROM bastion.email_outbox ORDER BY id")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(
        keys,
        [
            ("mail_f".to_owned(), None),
            ("mail_p".to_owned(), Some(String::new())),
            ("mail_s".to_owned(), None)
        ]
    );
    let forced: bool = sqlx::query_scalar(
        "SELECT relforcerowsecurity FROM pg_class WHERE oid = 'bastion.email_outbox'::regclass",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert!(forced, "row security is forced again");
    let sys = Scope::System("test");
    let rows = store
        .sealed_batch(
            &sys,
            bastion_store::SealedColumn::MailBody,
            "mail-v1",
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| (r.row_id.as_str(), r.key_id.as_str()))
            .collect::<Vec<_>>(),
        [("mail_p", "")]
    );
    store.pool().close().await;
}

/// A product of `org` created at 1.
fn lic_product(id: &str, org: &str, name: &str) -> bastion_store::ProductRow {
    bastion_store::ProductRow {
        id: id.into(),
        org_id: org.into(),
        name: name.into(),
        created_ms: 1,
    }
}

/// A perpetual two-machine policy of `product`.
fn lic_policy(id: &str, org: &str, product: &str, name: &str) -> bastion_store::PolicyRow {
    bastion_store::PolicyRow {
        id: id.into(),
        org_id: org.into(),
        product_id: product.into(),
        name: name.into(),
        max_machines: 2,
        duration_ms: None,
        entitlements: vec!["pro".into()],
        lease_ms: 86_400_000,
        created_ms: 1,
    }
}

/// A live license issued at `at` under `policy`, whose key hash is `hash` repeated.
fn lic_license(
    id: &str,
    policy: &bastion_store::PolicyRow,
    hash: u8,
    at: i64,
) -> bastion_store::LicenseRow {
    bastion_store::LicenseRow {
        id: id.into(),
        org_id: policy.org_id.clone(),
        product_id: policy.product_id.clone(),
        policy_id: policy.id.clone(),
        key_hash: [hash; 32],
        email: "ada@example.com".into(),
        entitlements: policy.entitlements.clone(),
        max_machines: policy.max_machines,
        lease_ms: policy.lease_ms,
        expires_ms: None,
        created_ms: at,
        created_by: "usr_a".into(),
        failures: 0,
        frozen_ms: None,
        revoked_ms: None,
    }
}

/// A machine of `license` first seen at `at`, whose hash is `hash` repeated.
fn lic_machine(
    id: &str,
    license: &bastion_store::LicenseRow,
    hash: u8,
    at: i64,
) -> bastion_store::MachineRow {
    bastion_store::MachineRow {
        id: id.into(),
        org_id: license.org_id.clone(),
        license_id: license.id.clone(),
        machine_hash: [hash; 32],
        name: format!("machine {id}"),
        activated_ms: at,
        last_seen_ms: at,
    }
}

/// A licensing message to the licensee.
fn lic_mail(id: &str) -> bastion_store::OutboundMail {
    bastion_store::OutboundMail {
        id: id.into(),
        recipient: "ada@example.com".into(),
        template: "license_issued".into(),
        sealed: b"sealed".to_vec(),
        sealed_key: "mail-v1".into(),
        created_ms: 1,
    }
}

/// Org `org` with product `prd_<org>`, its policy `pol_<org>`, license `lic_<org>` (key hash
/// `hash`) issued by `issuer` and one machine activated by the system: a row in each licensing
/// table.
async fn licensed(store: &PgStore, issuer: &Scope, org: &str, hash: u8) {
    use bastion_store::{Activation, LicenseStore};
    let (product, policy_id) = (format!("prd_{org}"), format!("pol_{org}"));
    store
        .insert_product(issuer, &lic_product(&product, org, "Editor"))
        .await
        .unwrap();
    let policy = lic_policy(&policy_id, org, &product, "Standard");
    store.insert_policy(issuer, &policy).await.unwrap();
    let lic = lic_license(&format!("lic_{org}"), &policy, hash, 1);
    store.insert_license(issuer, &lic, None).await.unwrap();
    let m = lic_machine(&format!("mch_{org}"), &lic, hash, 2);
    assert!(matches!(
        store
            .activate_machine(&Scope::System("test"), &m, 2)
            .await
            .unwrap(),
        Activation::Created(_)
    ));
}

/// L3 on PostgreSQL: the policies decide licensing by the permission map. Learners, Users and
/// Managers (licenses.read) see products, policies, licenses and machines and change nothing;
/// Viewers, publishable and revoked keys and other orgs see nothing; Admins, Super Admins and
/// service keys issue, freeze, revoke and deactivate; and with a map that splits them, freezing
/// and revoking each need their own permission.
#[tokio::test]
async fn l3_license_policies_follow_the_permission_map() {
    use bastion_store::{Activation, LicenseStore, MailStore, StoreError};
    let Some(f) = fresh().await else { return };
    let store = &*f.store;
    let sys = Scope::System("test");
    store
        .sync_permissions(&sys, &permission_rows())
        .await
        .unwrap();
    org_with(
        store,
        "org_a",
        &[
            ("usr_super", 100),
            ("usr_admin", 80),
            ("usr_mgr", 60),
            ("usr_user", 40),
            ("usr_learner", 30),
            ("usr_viewer", 20),
        ],
    )
    .await;
    org_with(store, "org_b", &[("usr_b", 100)]).await;
    let owner = in_org("usr_super", "org_a");
    for (id, kind, hash) in [
        ("key_s", KeyKind::Service, 1),
        ("key_p", KeyKind::Publishable, 2),
        ("key_r", KeyKind::Service, 3),
    ] {
        store
            .create_api_key(&owner, &key_row(id, "org_a", kind, hash, 1))
            .await
            .unwrap();
    }
    assert!(
        store
            .revoke_api_key(&owner, "org_a", "key_r", 2)
            .await
            .unwrap()
    );
    let admin = in_org("usr_admin", "org_a");
    store
        .insert_product(&admin, &lic_product("prd_1", "org_a", "Editor"))
        .await
        .unwrap();
    let policy = lic_policy("pol_1", "org_a", "prd_1", "Standard");
    store.insert_policy(&admin, &policy).await.unwrap();
    let lic = lic_license("lic_1", &policy, 1, 1);
    store
        .insert_license(&admin, &lic, Some(&lic_mail("mail_1")))
        .await
        .unwrap();
    assert_eq!(
        store.mail_counts(&sys).await.unwrap().pending,
        1,
        "an Admin's license is mailed in its transaction"
    );
    let machine = lic_machine("mch_1", &lic, 7, 2);
    assert!(matches!(
        store.activate_machine(&sys, &machine, 2).await.unwrap(),
        Activation::Created(_)
    ));
    let forbidden = |r: Result<(), StoreError>| matches!(r, Err(StoreError::Forbidden));

    // (scope, holds licenses.read)
    let bystanders = [
        (in_org("usr_learner", "org_a"), true),
        (in_org("usr_user", "org_a"), true),
        (in_org("usr_mgr", "org_a"), true),
        (in_org("usr_viewer", "org_a"), false),
        (key_scope("key_p", "org_a", KeyKind::Publishable), false),
        (key_scope("key_r", "org_a", KeyKind::Service), false),
        (in_org("usr_b", "org_b"), false),
        (in_org("usr_b", "org_a"), false),
    ];
    for (scope, reads) in bystanders {
        let at = format!("{scope:?}");
        let s = &scope;
        assert_eq!(
            store.product(s, "prd_1").await.unwrap().is_some(),
            reads,
            "{at}"
        );
        assert_eq!(
            store.products(s, "org_a").await.unwrap().len(),
            usize::from(reads),
            "{at}"
        );
        assert_eq!(
            store.policy(s, "pol_1").await.unwrap().is_some(),
            reads,
            "{at}"
        );
        assert_eq!(
            store.policies(s, "prd_1").await.unwrap().len(),
            usize::from(reads),
            "{at}"
        );
        assert_eq!(
            store.license(s, "lic_1").await.unwrap(),
            reads.then(|| lic.clone()),
            "{at}"
        );
        assert_eq!(
            store.license_by_key_hash(s, &[1; 32]).await.unwrap(),
            reads.then(|| lic.clone()),
            "{at}"
        );
        assert_eq!(
            store.licenses(s, "org_a", None, 10).await.unwrap().len(),
            usize::from(reads),
            "{at}"
        );
        assert_eq!(
            store.machines(s, "lic_1").await.unwrap().len(),
            usize::from(reads),
            "{at}"
        );
        assert_eq!(
            store
                .machine_by_hash(s, "lic_1", &[7; 32])
                .await
                .unwrap()
                .is_some(),
            reads,
            "{at}"
        );
        // And no writes at all.
        assert!(
            forbidden(
                store
                    .insert_product(s, &lic_product("prd_x", "org_a", "X"))
                    .await
            ),
            "{at}"
        );
        assert!(
            forbidden(
                store
                    .insert_policy(s, &lic_policy("pol_x", "org_a", "prd_1", "X"))
                    .await
            ),
            "{at}"
        );
        assert!(
            forbidden(
                store
                    .insert_license(
                        s,
                        &lic_license("lic_x", &policy, 9, 3),
                        Some(&lic_mail("mail_x"))
                    )
                    .await
            ),
            "{at}"
        );
        assert!(
            !store.set_frozen(s, "lic_1", Some(3)).await.unwrap(),
            "{at}"
        );
        assert!(!store.revoke_license(s, "lic_1", 3).await.unwrap(), "{at}");
        assert!(
            !store
                .delete_machine(s, "lic_1", "mch_1", 1_700_000_000_000, 1_700_000_000_001)
                .await
                .unwrap(),
            "{at}"
        );
        assert!(
            !matches!(store.touch_machine(s, "mch_1", 3).await, Ok(true)),
            "{at}"
        );
        let mut intruder = lic_machine("mch_x", &lic, 8, 3);
        if let Some(org) = s.org_id() {
            intruder.org_id = org.into();
        }
        assert!(
            store.activate_machine(s, &intruder, 2).await.is_err(),
            "{at}"
        );
        assert!(
            store
                .record_key_failure(s, "lic_1", 3, 1, Some(&lic_mail("mail_f")))
                .await
                .is_err(),
            "{at}"
        );
    }
    assert_eq!(
        store.license(&sys, "lic_1").await.unwrap(),
        Some(lic.clone())
    );
    assert_eq!(
        store.machines(&sys, "lic_1").await.unwrap(),
        std::slice::from_ref(&machine),
        "nothing changed"
    );
    assert_eq!(store.products(&sys, "org_a").await.unwrap().len(), 1);
    assert_eq!(store.mail_counts(&sys).await.unwrap().pending, 1);

    // Admins, Super Admins and service keys issue (their mail queued with the license),
    // freeze, unfreeze, deactivate and revoke; none of them adds a seat by hand.
    for (i, scope) in [
        admin.clone(),
        owner.clone(),
        key_scope("key_s", "org_a", KeyKind::Service),
    ]
    .into_iter()
    .enumerate()
    {
        let at = format!("{scope:?}");
        let s = &scope;
        let n = u8::try_from(i).unwrap();
        let (product, policy_id, id) = (
            format!("prd_w{i}"),
            format!("pol_w{i}"),
            format!("lic_w{i}"),
        );
        store
            .insert_product(s, &lic_product(&product, "org_a", &product))
            .await
            .unwrap();
        let p = lic_policy(&policy_id, "org_a", &product, "Standard");
        store.insert_policy(s, &p).await.unwrap();
        let l = lic_license(&id, &p, 10 + n, 10);
        store
            .insert_license(s, &l, Some(&lic_mail(&format!("mail_w{i}"))))
            .await
            .unwrap();
        let m = lic_machine(&format!("mch_w{i}"), &l, 20 + n, 11);
        // Seats are added only by the public path a license key proves, never by a request.
        assert!(
            matches!(
                store.activate_machine(s, &m, 2).await,
                Err(StoreError::Forbidden)
            ),
            "{at}"
        );
        assert_eq!(
            store.activate_machine(&sys, &m, 2).await.unwrap(),
            Activation::Created(m.clone()),
            "{at}"
        );
        let mut again = lic_machine("mch_other", &l, 20 + n, 12);
        again.name = "renamed".into();
        assert!(
            matches!(
                store.activate_machine(&sys, &again, 2).await.unwrap(),
                Activation::Existing(ref e) if e.id == m.id && e.name == "renamed"
            ),
            "{at}"
        );
        assert!(
            matches!(
                store.touch_machine(s, &m.id, 13).await,
                Err(StoreError::Forbidden)
            ),
            "{at}"
        );
        assert!(store.touch_machine(&sys, &m.id, 13).await.unwrap(), "{at}");
        assert!(store.set_frozen(s, &id, Some(14)).await.unwrap(), "{at}");
        assert!(store.set_frozen(s, &id, None).await.unwrap(), "{at}");
        assert!(
            store
                .delete_machine(s, &id, &m.id, 1_700_000_000_000, 1_700_000_000_001)
                .await
                .unwrap(),
            "{at}"
        );
        assert!(store.revoke_license(s, &id, 15).await.unwrap(), "{at}");
        assert_eq!(
            store.revoked_licenses(s, &product).await.unwrap(),
            std::slice::from_ref(&id),
            "{at}"
        );
    }
    assert_eq!(store.mail_counts(&sys).await.unwrap().pending, 4);

    // A map whose Admins may freeze but not revoke: the policy lets them update the row, the
    // trigger refuses the revocation, and deactivating (licenses.revoke) finds nothing.
    let without = |level: i32, permission: &str| -> Vec<(i32, String)> {
        permission_rows()
            .into_iter()
            .filter(|(l, p)| !(*l == level && p == permission))
            .collect()
    };
    store
        .sync_permissions(&sys, &without(80, "licenses.revoke"))
        .await
        .unwrap();
    assert!(store.set_frozen(&admin, "lic_1", Some(20)).await.unwrap());
    assert!(store.set_frozen(&admin, "lic_1", None).await.unwrap());
    assert!(matches!(
        store.revoke_license(&admin, "lic_1", 21).await,
        Err(StoreError::Forbidden)
    ));
    assert!(
        !store
            .delete_machine(
                &admin,
                "lic_1",
                "mch_1",
                1_700_000_000_000,
                1_700_000_000_001
            )
            .await
            .unwrap()
    );
    // And the other way round: revoking without freezing, nor counting failures.
    store
        .sync_permissions(&sys, &without(80, "licenses.freeze"))
        .await
        .unwrap();
    assert!(matches!(
        store.set_frozen(&admin, "lic_1", Some(22)).await,
        Err(StoreError::Forbidden)
    ));
    assert!(
        store
            .record_key_failure(&admin, "lic_1", 22, 1, Some(&lic_mail("mail_y")))
            .await
            .is_err()
    );
    let stored = store.license(&sys, "lic_1").await.unwrap().unwrap();
    assert_eq!(
        (stored.failures, stored.frozen_ms, stored.revoked_ms),
        (0, None, None)
    );
    assert!(
        store
            .delete_machine(
                &admin,
                "lic_1",
                "mch_1",
                1_700_000_000_000,
                1_700_000_000_001
            )
            .await
            .unwrap()
    );
    assert!(store.revoke_license(&admin, "lic_1", 23).await.unwrap());
    assert_eq!(
        store.revoked_licenses(&admin, "prd_1").await.unwrap(),
        ["lic_1"]
    );
    assert_eq!(store.mail_counts(&sys).await.unwrap().pending, 4);
}
