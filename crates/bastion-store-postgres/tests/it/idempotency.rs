//! idempotency tests particular to this backend.

use bastion_store::conformance::{as_user, in_org, key_scope};
use bastion_store::{Begin, IdempotencyStore, KeyKind, Scope, StoredResponse};

use crate::{attacker_view, attacker_writes, fresh, selects};

const IDM: Scope = Scope::System("idempotency");

/// P4 on PostgreSQL: `idempotency_keys` is a system table under row-level security: only the
/// system role with a signed system context sees or changes a row; the app role has no grant,
/// and a request context is worthless under either role.
#[tokio::test]
async fn p4_only_a_signed_system_context_reaches_idempotency_keys() {
    let Some(f) = fresh().await else { return };
    let store = &f.store;
    for (key, id) in [("k-1", "idm_1"), ("k-2", "idm_2")] {
        assert_eq!(
            store
                .begin(&IDM, "usr_a", key, &[1; 32], id, 1_000, 2_000)
                .await
                .unwrap(),
            Begin::Started { row_id: id.into() }
        );
    }
    let resp = StoredResponse {
        status: 201,
        headers: "{}".into(),
        body_key: "idempotency-v1".into(),
        body: b"sealed".to_vec(),
    };
    assert!(store.complete(&IDM, "idm_1", &resp).await.unwrap());
    let pool = store.pool();
    let tables = ["idempotency_keys"];

    // Control: the store's own system context sees both rows.
    let (role, ctx) = store.signed_context(&IDM).unwrap();
    assert_eq!(role, "bastion_system");
    assert_eq!(
        selects(attacker_view(pool, role, Some(&ctx), &tables).await),
        vec![("idempotency_keys select".to_string(), 2)]
    );

    let writes = [
        "UPDATE idempotency_keys SET status = 200, headers = '{}', body_key = 'idempotency-v9', body = 'owned'::bytea",
        "UPDATE idempotency_keys SET expires_ms = 0",
        "INSERT INTO idempotency_keys (id, owner, key, request_hash, created_ms, expires_ms) \
         VALUES ('idm_evil', 'usr_a', 'k-3', decode(repeat('ee', 32), 'hex'), 1, 9000000000000)",
    ];
    let request_scopes = [
        as_user("usr_a"),
        in_org("usr_a", "org_a"),
        key_scope("key_a", "org_a", KeyKind::Service),
        Scope::Anonymous,
    ];
    let mut contexts: Vec<Option<String>> = vec![None, Some("garbage".into())];
    for s in &request_scopes {
        contexts.push(Some(store.signed_context(s).unwrap().1));
    }
    for role in ["bastion_app", "bastion_system"] {
        for ctx in &contexts {
            for (what, n) in attacker_view(pool, role, ctx.as_deref(), &tables).await {
                assert_eq!(n, 0, "{role} with {ctx:?}: {what}");
            }
            for (stmt, n) in attacker_writes(pool, role, ctx.as_deref(), &writes).await {
                assert_eq!(n, 0, "{role} with {ctx:?}: {stmt}");
            }
        }
    }
    // The system context is worthless under the app role.
    for (what, n) in attacker_view(pool, "bastion_app", Some(&ctx), &tables).await {
        assert_eq!(n, 0, "app role with a system context: {what}");
    }
    for (stmt, n) in attacker_writes(pool, "bastion_app", Some(&ctx), &writes).await {
        assert_eq!(n, 0, "app role with a system context: {stmt}");
    }

    // Nothing changed underneath.
    assert_eq!(
        store
            .begin(&IDM, "usr_a", "k-1", &[1; 32], "idm_3", 1_001, 2_001)
            .await
            .unwrap(),
        Begin::Completed {
            row_id: "idm_1".into(),
            response: resp,
        }
    );
    assert_eq!(
        store
            .begin(&IDM, "usr_a", "k-2", &[1; 32], "idm_4", 1_001, 2_001)
            .await
            .unwrap(),
        Begin::InFlight
    );
}

/// P4: a row holds its whole response or none of it (the in-flight marker is a NULL body), and
/// the fingerprint is 32 bytes: the schema refuses anything in between, whoever writes.
#[tokio::test]
async fn p4_the_schema_refuses_half_a_response() {
    let Some(f) = fresh().await else { return };
    let pool = f.store.pool();
    // Control: the same columns with a whole (in-flight) row are accepted, so each refusal
    // below is the schema's rule, not a mistyped statement.
    sqlx::query(
        "INSERT INTO idempotency_keys (id, owner, key, request_hash, created_ms, expires_ms) \
         VALUES ('idm_ok', 'usr_a', 'k-ok', decode(repeat('ee', 32), 'hex'), 1, 2)",
    )
    .execute(pool)
    .await
    .unwrap();
    for stmt in [
        // A status without a body.
        "INSERT INTO idempotency_keys (id, owner, key, request_hash, status, created_ms, expires_ms) \
         VALUES ('idm_1', 'usr_a', 'k', decode(repeat('ee', 32), 'hex'), 200, 1, 2)",
        // A body without its key id.
        "INSERT INTO idempotency_keys (id, owner, key, request_hash, status, headers, body, created_ms, expires_ms) \
         VALUES ('idm_1', 'usr_a', 'k', decode(repeat('ee', 32), 'hex'), 200, '{}', 'x'::bytea, 1, 2)",
        // A short fingerprint.
        "INSERT INTO idempotency_keys (id, owner, key, request_hash, created_ms, expires_ms) \
         VALUES ('idm_1', 'usr_a', 'k', decode(repeat('ee', 31), 'hex'), 1, 2)",
        // Headers that are not JSON.
        "INSERT INTO idempotency_keys (id, owner, key, request_hash, status, headers, body_key, body, created_ms, expires_ms) \
         VALUES ('idm_1', 'usr_a', 'k', decode(repeat('ee', 32), 'hex'), 200, 'nope', 'idempotency-v1', 'x'::bytea, 1, 2)",
    ] {
        let err = sqlx::query(stmt).execute(pool).await.expect_err(stmt);
        let code = err
            .as_database_error()
            .and_then(|d| d.code().map(|c| c.into_owned()))
            .unwrap_or_default();
        // 23: a constraint refused the row; 22: a value of the wrong form (headers not JSON).
        assert!(
            code.starts_with("23") || code.starts_with("22"),
            "{stmt}: {code} is not the schema's refusal: {err}"
        );
    }
}
