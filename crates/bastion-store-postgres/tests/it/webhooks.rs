//! webhooks tests particular to this backend: what the database itself refuses to a direct
//! connection with the server's roles (migration 0010), beyond the conformance suite.

use bastion_store::conformance::{in_org, org_with, permission_rows};
use bastion_store::{
    EndpointRow, EndpointSecretRow, EventRow, EventStatus, Finish, OrgStore, Scope, WebhookStore,
};

use crate::{begin_as, fresh};

const NOW: i64 = 1_700_000_000_000;

fn endpoint(id: &str, org: &str) -> EndpointRow {
    EndpointRow {
        id: id.into(),
        org_id: org.into(),
        provider: "github".into(),
        name: format!("Hook {id}"),
        config: "{}".into(),
        created_ms: NOW,
        created_by: "usr_a".into(),
        disabled_ms: None,
    }
}

fn secret(id: &str, endpoint: &str, org: &str) -> EndpointSecretRow {
    EndpointSecretRow {
        id: id.into(),
        endpoint_id: endpoint.into(),
        org_id: org.into(),
        secret_key: "webhooks-v1".into(),
        secret: b"sealed".to_vec(),
        created_ms: NOW,
        expires_ms: None,
    }
}

fn event(id: &str, endpoint: &str, org: &str) -> EventRow {
    EventRow {
        id: id.into(),
        endpoint_id: endpoint.into(),
        org_id: org.into(),
        provider: "github".into(),
        event_id: format!("delivery-{id}"),
        event_type: "push".into(),
        payload: b"{}".to_vec(),
        received_ms: NOW,
        status: EventStatus::Received,
        attempts: 0,
        next_attempt_ms: Some(NOW),
        last_error: None,
        processed_ms: None,
    }
}

/// `sql` run by a direct connection as the role and signed context of `scope` (rolled back):
/// the rows it changed or counted, or the SQLSTATE it was refused with.
async fn run_as(
    store: &bastion_store_postgres::PgStore,
    scope: Option<&Scope>,
    role: &str,
    sql: &str,
) -> Result<i64, String> {
    let ctx = scope.map(|s| store.signed_context(s).unwrap().1);
    let mut tx = begin_as(store.pool(), role, ctx.as_deref()).await;
    let out = if sql.starts_with("SELECT") {
        sqlx::query_scalar::<_, i64>(sql).fetch_one(&mut *tx).await
    } else {
        sqlx::query(sql)
            .execute(&mut *tx)
            .await
            .map(|r| i64::try_from(r.rows_affected()).unwrap())
    };
    tx.rollback().await.unwrap();
    out.map_err(|e| match e {
        sqlx::Error::Database(d) => d.code().map(|c| c.into_owned()).unwrap_or_default(),
        other => other.to_string(),
    })
}

/// P2: signing secrets are the system path's alone: the app role has no privilege on
/// `webhook_secrets` whatever its context (not even the org's Super Admin's), and the system
/// role without a valid context sees none. Request work changes an event only back to
/// `received` (webhooks.manage) and an endpoint not at all; a reader changes nothing.
#[tokio::test]
async fn p2_webhook_secrets_are_the_system_paths_alone_and_policies_hold_on_direct_connections() {
    let Some(f) = fresh().await else { return };
    let store = &*f.store;
    let sys = Scope::System("webhooks");
    store
        .sync_permissions(&sys, &permission_rows())
        .await
        .unwrap();
    org_with(store, "org_a", &[("usr_a", 100), ("usr_r", 60)]).await;
    org_with(store, "org_b", &[("usr_b", 100)]).await;
    let a = in_org("usr_a", "org_a");
    store
        .insert_endpoint(
            &a,
            &endpoint("whe_1", "org_a"),
            &[secret("whs_1", "whe_1", "org_a")],
        )
        .await
        .unwrap();
    store
        .record_event(&sys, &event("wev_1", "whe_1", "org_a"), None)
        .await
        .unwrap();
    store
        .claim_event(&sys, "wev_1", NOW, 1_000)
        .await
        .unwrap()
        .unwrap();
    let dead = Finish::Failed {
        error: "gone".into(),
        retry_at_ms: None,
    };
    assert!(store.finish_event(&sys, "wev_1", NOW, &dead).await.unwrap());

    // No grant of any kind to the app role on the secrets.
    let granted: bool = sqlx::query_scalar(
        "SELECT has_table_privilege('bastion_app', 'bastion.webhook_secrets', \
                'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER') \
             OR has_any_column_privilege('bastion_app', 'bastion.webhook_secrets', \
                'SELECT, INSERT, UPDATE, REFERENCES')",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert!(!granted, "bastion_app holds a privilege on webhook_secrets");
    let denied = Err("42501".to_owned());
    for scope in [a.clone(), in_org("usr_b", "org_b")] {
        for sql in [
            "SELECT count(*) FROM webhook_secrets",
            "SELECT count(*) FROM webhook_secrets WHERE endpoint_id = 'whe_1'",
            "UPDATE webhook_secrets SET expires_ms = 1",
            "DELETE FROM webhook_secrets",
            "INSERT INTO webhook_secrets (id, endpoint_id, org_id, secret_key, secret, created_ms) \
             VALUES ('whs_x', 'whe_1', 'org_a', 'webhooks-v1', '\\x00', 1)",
        ] {
            assert_eq!(
                run_as(store, Some(&scope), "bastion_app", sql).await,
                denied,
                "{scope:?}: {sql}"
            );
        }
    }

    // The system role sees the secrets only with a valid system context.
    let secrets = "SELECT count(*) FROM webhook_secrets";
    assert_eq!(
        run_as(store, Some(&sys), "bastion_system", secrets).await,
        Ok(1)
    );
    for table in ["webhook_endpoints", "webhook_secrets", "webhook_events"] {
        let sql = format!("SELECT count(*) FROM {table}");
        assert_eq!(
            run_as(store, None, "bastion_system", &sql).await,
            Ok(0),
            "{table}"
        );
        assert_eq!(
            run_as(store, None, "bastion_app", &sql).await.unwrap_or(0),
            0,
            "{table}"
        );
        assert_eq!(
            run_as(store, Some(&in_org("usr_b", "org_b")), "bastion_app", &sql)
                .await
                .unwrap_or(0),
            0,
            "org B's admin sees {table} of org A"
        );
    }

    // The org's Super Admin: an event goes back to `received` and nowhere else; its other
    // columns, and endpoints, are not request work's to edit; events are not recorded by hand.
    let retry = "UPDATE webhook_events SET status = 'received', next_attempt_ms = 5";
    assert_eq!(run_as(store, Some(&a), "bastion_app", retry).await, Ok(1));
    for sql in [
        "UPDATE webhook_events SET status = 'processed'",
        "UPDATE webhook_events SET attempts = 0",
        "UPDATE webhook_events SET payload = '\\x00'",
        "UPDATE webhook_endpoints SET disabled_ms = 1",
        "UPDATE webhook_endpoints SET org_id = 'org_b'",
        "INSERT INTO webhook_events (id, endpoint_id, org_id, provider, event_id, event_type, \
         payload, received_ms, status) \
         VALUES ('wev_x', 'whe_1', 'org_a', 'github', 'd', 'push', '\\x00', 1, 'received')",
    ] {
        assert_eq!(
            run_as(store, Some(&a), "bastion_app", sql).await,
            denied,
            "{sql}"
        );
    }
    // A reader (webhooks.read) sees both, changes neither.
    let reader = in_org("usr_r", "org_a");
    for (sql, n) in [
        ("SELECT count(*) FROM webhook_endpoints", 1),
        ("SELECT count(*) FROM webhook_events", 1),
        (retry, 0),
        ("DELETE FROM webhook_endpoints", 0),
    ] {
        assert_eq!(
            run_as(store, Some(&reader), "bastion_app", sql).await,
            Ok(n),
            "{sql}"
        );
    }
    let insert = "INSERT INTO webhook_endpoints (id, org_id, provider, name, config, created_ms, \
                  created_by) VALUES ('whe_r', 'org_a', 'github', 'r', '{}', 1, 'usr_r')";
    assert_eq!(
        run_as(store, Some(&reader), "bastion_app", insert).await,
        denied
    );
    assert_eq!(run_as(store, Some(&a), "bastion_app", insert).await, Ok(1));

    // Nothing above stuck: the store still sees one dead event and one secret.
    let ev = store.event(&sys, "wev_1").await.unwrap().unwrap();
    assert_eq!(ev.status, EventStatus::Dead);
    assert_eq!(
        store.live_secrets(&sys, "whe_1", NOW).await.unwrap().len(),
        1
    );
}
