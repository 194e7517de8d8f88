//! webhooks tests particular to this backend.

use crate::fresh;

/// P2, P3: the schema itself refuses an unknown provider or event status, and a secret or
/// event filed under another org than its endpoint's (direct writes, which bypass the store).
#[tokio::test]
async fn p3_the_schema_refuses_unknown_providers_statuses_and_crossed_orgs() {
    let (store, _dir) = fresh().await;
    let pool = store.pool();
    for org in ["org_a", "org_b"] {
        sqlx::query(
            "INSERT INTO orgs (id, name, created_by, created_ms, updated_ms) VALUES (?, ?, 'u', 1, 1)",
        )
        .bind(org)
        .bind(org)
        .execute(pool)
        .await
        .unwrap();
    }
    let endpoint = "INSERT INTO webhook_endpoints (id, org_id, provider, name, config, created_ms, \
                    created_by) VALUES (?, 'org_a', ?, ?, '{}', 1, 'u')";
    for (id, provider, ok) in [("whe_1", "stripe", true), ("whe_2", "paypal", false)] {
        let r = sqlx::query(endpoint)
            .bind(id)
            .bind(provider)
            .bind(id)
            .execute(pool)
            .await;
        assert_eq!(r.is_ok(), ok, "{provider}: {r:?}");
    }
    let secret = "INSERT INTO webhook_secrets (id, endpoint_id, org_id, secret_key, secret, \
                  created_ms) VALUES ('whs_1', 'whe_1', ?, 'webhooks-v1', x'00', 1)";
    assert!(
        sqlx::query(secret)
            .bind("org_b")
            .execute(pool)
            .await
            .is_err()
    );
    assert!(
        sqlx::query(secret)
            .bind("org_a")
            .execute(pool)
            .await
            .is_ok()
    );
    let event = "INSERT INTO webhook_events (id, endpoint_id, org_id, provider, event_id, \
                 event_type, payload, received_ms, status) \
                 VALUES (?, 'whe_1', ?, 'stripe', ?, '', x'00', 1, ?)";
    for (id, org, status, ok) in [
        ("wev_1", "org_a", "received", true),
        ("wev_2", "org_a", "lost", false),
        ("wev_3", "org_b", "received", false),
    ] {
        let r = sqlx::query(event)
            .bind(id)
            .bind(org)
            .bind(id)
            .bind(status)
            .execute(pool)
            .await;
        assert_eq!(r.is_ok(), ok, "{id}: {r:?}");
    }
}
