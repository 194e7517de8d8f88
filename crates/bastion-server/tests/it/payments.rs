//! Payments over HTTP (SPEC P1–P5): verified webhook ingress that fails closed, the inbox that
//! processes each event once, Stripe Checkout against a local server speaking Stripe's API,
//! idempotent POSTs, and the wallet under concurrent debits — on SQLite and PostgreSQL.

use std::sync::Arc;

use bastion_core::{Clock, SystemClock};
use bastion_testkit::app::{Spawn, TestApp, spawn_app};
use bastion_testkit::stripe::{FakeStripe, deliver, stripe_signature};
use futures_util::future::join_all;
use reqwest::Method;
use serde_json::{Value, json};

use crate::auth::signup_and_login;
use crate::orgs::{bearer, call, create_org, ok_json};
use crate::{assert_problem, client};

const STRIPE_KEY: &str = "sk_test_bastion_fake";
const WHSEC: &str = "whsec_9TnS2vQ4kXcP7mLr1ZyB8eHw3JdF6uGa";

/// A server on SQLite or PostgreSQL that talks to `stripe` (if any) as its Stripe API.
async fn server(postgres: bool, stripe: Option<&FakeStripe>) -> Option<TestApp> {
    let key_dir = tempfile::tempdir().unwrap();
    let key_file = key_dir.path().join("stripe.key");
    std::fs::write(&key_file, STRIPE_KEY).unwrap();
    let base = stripe.map(FakeStripe::base_url);
    let app = spawn_app(
        Spawn {
            postgres,
            ..Spawn::default()
        },
        move |c| {
            c.rate_limit.per_ip_per_second = 0;
            if let Some(base) = base {
                c.payments.stripe_api_base = base;
                c.payments.stripe_secret_key_file = key_file.display().to_string();
            }
        },
    )
    .await;
    // The key was read at start-up.
    drop(key_dir);
    app
}

async fn both(stripe: Option<&FakeStripe>) -> Vec<TestApp> {
    let mut apps = vec![server(false, stripe).await.unwrap()];
    if let Some(pg) = server(true, stripe).await {
        apps.push(pg);
    }
    apps
}

/// An owner's token and their org.
async fn owner_and_org(app: &TestApp, email: &str) -> (String, String) {
    let owner = bearer(&signup_and_login(app, email).await);
    let org = create_org(app, &owner, "Acme").await;
    (owner, org)
}

async fn endpoint(app: &TestApp, owner: &str, org: &str, handler: &str) -> String {
    let e = ok_json(
        call(
            app,
            Method::POST,
            &format!("/v1/orgs/{org}/webhooks/endpoints"),
            owner,
            Some(json!({
                "name": format!("stripe {handler}"), "provider": "stripe",
                "secrets": [WHSEC], "config": { "handler": handler },
            })),
        )
        .await,
        201,
    )
    .await;
    assert!(e.to_string().find(WHSEC).is_none(), "secret echoed: {e}");
    e["path"].as_str().unwrap().to_owned()
}

fn now_s() -> i64 {
    SystemClock.now_ms() / 1000
}

/// POSTs `body` with a raw `Stripe-Signature` header (or none).
async fn post_raw(
    app: &TestApp,
    path: &str,
    body: &[u8],
    signature: Option<&str>,
) -> reqwest::Response {
    let mut req = client()
        .post(app.url(path))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(s) = signature {
        req = req.header("stripe-signature", s);
    }
    req.send().await.unwrap()
}

async fn events(app: &TestApp, owner: &str, org: &str) -> Vec<Value> {
    ok_json(
        call(
            app,
            Method::GET,
            &format!("/v1/orgs/{org}/webhooks/events"),
            owner,
            None,
        )
        .await,
        200,
    )
    .await["events"]
        .as_array()
        .unwrap()
        .clone()
}

async fn audit_actions(app: &TestApp, owner: &str, org: &str) -> Vec<String> {
    ok_json(
        call(
            app,
            Method::GET,
            &format!("/v1/orgs/{org}/audit"),
            owner,
            None,
        )
        .await,
        200,
    )
    .await["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect()
}

fn event(id: &str) -> Value {
    json!({ "id": id, "object": "event", "type": "customer.created", "data": { "object": {} } })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2_p3_stripe_deliveries_are_verified_over_the_raw_body_stored_once_and_forgeries_refused()
{
    for app in both(None).await {
        let (owner, org) = owner_and_org(&app, "ops@example.com").await;
        let path = endpoint(&app, &owner, &org, "inbox").await;
        let url = app.url(&path);

        let good = event("evt_1");
        let (status, body) = deliver(&url, WHSEC, now_s(), &good).await;
        assert_eq!(status, 200, "{body}");
        let first: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(first["duplicate"], false);
        assert_eq!(first["status"], "processed");
        // A replay answers 2xx without reprocessing (P3).
        let (status, body) = deliver(&url, WHSEC, now_s(), &good).await;
        assert_eq!(status, 200);
        let again: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(again["duplicate"], true);
        assert_eq!(again["event_id"], first["event_id"]);

        let raw = event("evt_2").to_string().into_bytes();
        let ts = now_s();
        let sig = stripe_signature(WHSEC, ts, &raw);
        // Tampered body: one byte changed after signing.
        let mut tampered = raw.clone();
        let i = tampered.len() - 3;
        tampered[i] ^= 0x01;
        assert_problem(
            post_raw(&app, &path, &tampered, Some(&sig)).await,
            400,
            "webhook_signature_invalid",
        )
        .await;
        // Tampered signature, empty signature, wrong secret, missing header.
        let mut bad_sig = sig.clone().into_bytes();
        let last = bad_sig.len() - 1;
        bad_sig[last] = if bad_sig[last] == b'0' { b'1' } else { b'0' };
        let bad_sig = String::from_utf8(bad_sig).unwrap();
        assert_problem(
            post_raw(&app, &path, &raw, Some(&bad_sig)).await,
            400,
            "webhook_signature_invalid",
        )
        .await;
        assert_problem(
            post_raw(&app, &path, &raw, Some(&format!("t={ts},v1="))).await,
            400,
            "webhook_signature_invalid",
        )
        .await;
        let other = stripe_signature("whsec_someone_else", ts, &raw);
        assert_problem(
            post_raw(&app, &path, &raw, Some(&other)).await,
            400,
            "webhook_signature_invalid",
        )
        .await;
        assert_problem(
            post_raw(&app, &path, &raw, None).await,
            400,
            "webhook_signature_missing",
        )
        .await;
        // Stale and future timestamps, each correctly signed.
        for skew in [-301, 301] {
            let t = now_s() + skew;
            let s = stripe_signature(WHSEC, t, &raw);
            assert_problem(
                post_raw(&app, &path, &raw, Some(&s)).await,
                400,
                "webhook_timestamp_out_of_tolerance",
            )
            .await;
        }
        // An unknown endpoint is not found, whatever it carries.
        let (status, _) = deliver(
            &app.url("/v1/webhooks/whe_00000000000000000000000000000000"),
            WHSEC,
            now_s(),
            &good,
        )
        .await;
        assert_eq!(status, 404);

        // Nothing unverified was stored: the inbox holds evt_1 alone.
        let stored = events(&app, &owner, &org).await;
        assert_eq!(stored.len(), 1, "{stored:?}");
        assert_eq!(stored[0]["event_id"], "evt_1");
        assert_eq!(stored[0]["status"], "processed");
        let actions = audit_actions(&app, &owner, &org).await;
        assert!(
            actions.iter().filter(|a| *a == "webhook.rejected").count() >= 6,
            "{actions:?}"
        );
        assert!(
            actions.iter().any(|a| a == "webhook.received"),
            "{actions:?}"
        );
        assert!(
            actions.iter().any(|a| a == "webhook.replayed"),
            "{actions:?}"
        );

        // Rotation: during the overlap both the old and the new secret verify.
        let endpoint_id = path.rsplit('/').next().unwrap();
        ok_json(
            call(
                &app,
                Method::POST,
                &format!("/v1/orgs/{org}/webhooks/endpoints/{endpoint_id}/secrets"),
                &owner,
                Some(json!({ "secret": "whsec_Qw7Er5Ty2Ui9Op4As6Df1Gh3Jk8Lz0Xc", "overlap_secs": 3600 })),
            )
            .await,
            200,
        )
        .await;
        let (s_old, _) = deliver(&url, WHSEC, now_s(), &event("evt_old")).await;
        let (s_new, _) = deliver(
            &url,
            "whsec_Qw7Er5Ty2Ui9Op4As6Df1Gh3Jk8Lz0Xc",
            now_s(),
            &event("evt_new"),
        )
        .await;
        assert_eq!((s_old, s_new), (200, 200));
        // A rotation with no overlap retires the older secrets at once.
        ok_json(
            call(
                &app,
                Method::POST,
                &format!("/v1/orgs/{org}/webhooks/endpoints/{endpoint_id}/secrets"),
                &owner,
                Some(json!({ "secret": "whsec_Mn4Bv7Cx2Za9Sd1Fg6Hj3Kl8Qw5Er0Ty", "overlap_secs": 0 })),
            )
            .await,
            200,
        )
        .await;
        let (s_old, _) = deliver(&url, WHSEC, now_s(), &event("evt_late")).await;
        let (s_new, _) = deliver(
            &url,
            "whsec_Mn4Bv7Cx2Za9Sd1Fg6Hj3Kl8Qw5Er0Ty",
            now_s(),
            &event("evt_third"),
        )
        .await;
        assert_eq!((s_old, s_new), (400, 200));
        assert_eq!(events(&app, &owner, &org).await.len(), 4);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2_an_endpoint_without_a_secret_fails_closed_with_500_is_audited_and_stores_nothing() {
    let app = server(false, None).await.unwrap();
    let (owner, org) = owner_and_org(&app, "ops@example.com").await;
    let path = endpoint(&app, &owner, &org, "inbox").await;
    // The operator lost the secret: the endpoint is left with none.
    let db = format!(
        "sqlite://{}",
        app.data_dir.path().join("bastion.db").display()
    );
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    sqlx::query("DELETE FROM webhook_secrets")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    let raw = event("evt_1").to_string().into_bytes();
    // Even a delivery "signed" with the old secret is refused: no secret, no verification.
    let sig = stripe_signature(WHSEC, now_s(), &raw);
    let body = assert_problem(
        post_raw(&app, &path, &raw, Some(&sig)).await,
        500,
        "webhook_secret_missing",
    )
    .await;
    assert!(!body.to_string().contains(WHSEC));
    assert!(events(&app, &owner, &org).await.is_empty());
    let actions = audit_actions(&app, &owner, &org).await;
    assert!(
        actions.iter().any(|a| a == "webhook.secret_missing"),
        "{actions:?}"
    );
}

/// A Stripe endpoint with the payments handler, and a checkout crediting the org's wallet.
async fn wallet_checkout(
    app: &TestApp,
    stripe: &FakeStripe,
    owner: &str,
    org: &str,
    amount: i64,
) -> (String, String) {
    let path = endpoint(app, owner, org, "payments").await;
    let chk = ok_json(
        call(
            app,
            Method::POST,
            "/v1/checkout",
            owner,
            Some(json!({
                "kind": "wallet_credit", "org_id": org, "amount": amount, "currency": "usd",
                "product_name": "Credits",
            })),
        )
        .await,
        201,
    )
    .await;
    let session = chk["session_id"].as_str().unwrap().to_owned();
    assert!(stripe.session(&session).is_some());
    (path, session)
}

async fn wallets(app: &TestApp, auth: &str, org: &str) -> Vec<Value> {
    ok_json(
        call(
            app,
            Method::GET,
            &format!("/v1/orgs/{org}/wallets"),
            auth,
            None,
        )
        .await,
        200,
    )
    .await["wallets"]
        .as_array()
        .unwrap()
        .clone()
}

async fn entries(app: &TestApp, auth: &str, org: &str, wallet: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut before: Option<i64> = None;
    loop {
        let q = before.map_or(String::new(), |b| format!("&before={b}"));
        let page = ok_json(
            call(
                app,
                Method::GET,
                &format!("/v1/orgs/{org}/wallets/{wallet}/entries?limit=500{q}"),
                auth,
                None,
            )
            .await,
            200,
        )
        .await["entries"]
            .as_array()
            .unwrap()
            .clone();
        if page.is_empty() {
            return out;
        }
        before = page.last().unwrap()["seq"].as_i64();
        out.extend(page);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p3_the_same_event_delivered_100_times_concurrently_is_processed_exactly_once() {
    let stripe = FakeStripe::start(STRIPE_KEY).await;
    for app in both(Some(&stripe)).await {
        let (owner, org) = owner_and_org(&app, "ops@example.com").await;
        let (path, session) = wallet_checkout(&app, &stripe, &owner, &org, 2500).await;
        let paid = stripe.completed_event(&session);
        let url = app.url(&path);
        let answers = join_all((0..100).map(|_| {
            let (url, paid) = (url.clone(), paid.clone());
            async move { deliver(&url, WHSEC, now_s(), &paid).await }
        }))
        .await;
        assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:?}");
        let fresh = answers
            .iter()
            .filter(|(_, b)| serde_json::from_str::<Value>(b).unwrap()["duplicate"] == false)
            .count();
        assert_eq!(fresh, 1);
        let w = wallets(&app, &owner, &org).await;
        assert_eq!(w.len(), 1);
        assert_eq!(w[0]["balance"], 2500);
        let wallet = w[0]["id"].as_str().unwrap();
        let history = entries(&app, &owner, &org, wallet).await;
        assert_eq!(history.len(), 1, "{history:?}");
        assert_eq!(events(&app, &owner, &org).await.len(), 1);

        // The refund reverses the credit, once however often it arrives.
        let pi = stripe.session(&session).unwrap().payment_intent;
        let refund = stripe.refunded_event(&pi);
        for _ in 0..2 {
            let (s, b) = deliver(&url, WHSEC, now_s(), &refund).await;
            assert_eq!(s, 200, "{b}");
        }
        let w = wallets(&app, &owner, &org).await;
        assert_eq!(w[0]["balance"], 0);
        let history = entries(&app, &owner, &org, wallet).await;
        assert_eq!(history.len(), 2);
        assert_eq!(history[0]["kind"], "reversal");
        assert_eq!(history[0]["amount"], -2500);
    }
}

/// Product and policy of `org`: the policy id.
async fn policy(app: &TestApp, owner: &str, org: &str) -> String {
    let product = ok_json(
        call(
            app,
            Method::POST,
            &format!("/v1/orgs/{org}/products"),
            owner,
            Some(json!({ "name": "Acme Desk" })),
        )
        .await,
        201,
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    ok_json(
        call(
            app,
            Method::POST,
            &format!("/v1/orgs/{org}/products/{product}/policies"),
            owner,
            Some(json!({ "name": "Pro", "max_machines": 2, "duration_days": 365, "entitlements": ["pro"] })),
        )
        .await,
        201,
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn licenses(app: &TestApp, owner: &str, org: &str) -> Vec<Value> {
    ok_json(
        call(
            app,
            Method::GET,
            &format!("/v1/orgs/{org}/licenses"),
            owner,
            None,
        )
        .await,
        200,
    )
    .await["licenses"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p1_a_purchase_end_to_end_issues_and_mails_the_license_once_even_when_the_webhook_comes_twice()
 {
    let stripe = FakeStripe::start(STRIPE_KEY).await;
    for app in both(Some(&stripe)).await {
        let (owner, org) = owner_and_org(&app, "seller@example.com").await;
        let policy = policy(&app, &owner, &org).await;
        let path = endpoint(&app, &owner, &org, "payments").await;
        let before = stripe.requests().len();
        let res = client()
            .post(app.url("/v1/checkout"))
            .header("authorization", &owner)
            .header("idempotency-key", "order-1001")
            .json(&json!({
                "kind": "license", "org_id": org, "policy_id": policy,
                "email": "Buyer@Example.com", "amount": 4900, "currency": "USD",
                "product_name": "Acme Desk Pro",
            }))
            .send()
            .await
            .unwrap();
        let chk = ok_json(res, 201).await;
        assert!(
            chk["url"]
                .as_str()
                .unwrap()
                .starts_with("https://checkout.stripe.test/")
        );
        // Bastion called Stripe once, with its secret key and an Idempotency-Key.
        let calls = stripe.requests()[before..].to_vec();
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert_eq!(calls[0].path, "/v1/checkout/sessions");
        assert_eq!(
            calls[0].header("authorization"),
            Some(format!("Bearer {STRIPE_KEY}").as_str())
        );
        assert_eq!(calls[0].header("idempotency-key"), chk["id"].as_str());
        assert_eq!(
            calls[0].field("line_items[0][price_data][unit_amount]"),
            Some("4900")
        );
        assert_eq!(
            calls[0].field("metadata[bastion_policy]"),
            Some(policy.as_str())
        );

        let session = chk["session_id"].as_str().unwrap();
        let paid = stripe.completed_event(session);
        for _ in 0..2 {
            let (s, b) = deliver(&app.url(&path), WHSEC, now_s(), &paid).await;
            assert_eq!(s, 200, "{b}");
        }
        let issued = licenses(&app, &owner, &org).await;
        assert_eq!(issued.len(), 1, "{issued:?}");
        // Another org's payments endpoint acts in its own org only: the event fails there.
        let (other_owner, other_org) = owner_and_org(&app, "other@example.com").await;
        let other_path = endpoint(&app, &other_owner, &other_org, "payments").await;
        let (s, b) = deliver(&app.url(&other_path), WHSEC, now_s(), &paid).await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(
            serde_json::from_str::<Value>(&b).unwrap()["status"],
            "failed"
        );
        assert!(licenses(&app, &other_owner, &other_org).await.is_empty());
        assert_eq!(licenses(&app, &owner, &org).await.len(), 1);
        // The failed event is listed with its reason, and an admin retry runs it again now.
        let failed = events(&app, &other_owner, &other_org).await;
        assert_eq!(failed[0]["status"], "failed");
        assert!(
            failed[0]["last_error"]
                .as_str()
                .unwrap()
                .contains("another org")
        );
        let retried = ok_json(
            call(
                &app,
                Method::POST,
                &format!(
                    "/v1/orgs/{other_org}/webhooks/events/{}/retry",
                    failed[0]["id"].as_str().unwrap()
                ),
                &other_owner,
                None,
            )
            .await,
            200,
        )
        .await;
        assert_eq!(
            (retried["status"].as_str(), retried["attempts"].as_u64()),
            (Some("failed"), Some(2))
        );
        // A processed event is not retried, and another org cannot even see it.
        let done = &events(&app, &owner, &org).await[0];
        let retry_done = format!(
            "/v1/orgs/{org}/webhooks/events/{}/retry",
            done["id"].as_str().unwrap()
        );
        assert_problem(
            call(&app, Method::POST, &retry_done, &owner, None).await,
            409,
            "event_not_retryable",
        )
        .await;
        let foreign = format!(
            "/v1/orgs/{other_org}/webhooks/events/{}/retry",
            done["id"].as_str().unwrap()
        );
        assert_problem(
            call(&app, Method::POST, &foreign, &other_owner, None).await,
            404,
            "not_found",
        )
        .await;
        assert_eq!(issued[0]["email"], "buyer@example.com");
        // Counted in the outbox, where the license queues its mail in its own transaction: both
        // deliveries of the webhook have been processed above, so this is the settled count.
        assert_eq!(
            crate::licenses::queued_mail(&app, "buyer@example.com").await,
            1
        );
        let mails = app.wait_for_mail("buyer@example.com", 1).await;
        assert_eq!(mails.len(), 1);
        assert_eq!(mails[0].subject(), "Your license key");
        assert!(
            mails[0].decoded.contains("\"Acme Desk\""),
            "the product, quoted, in the body"
        );

        // A full refund revokes it.
        let pi = stripe.session(session).unwrap().payment_intent;
        let (s, b) = deliver(&app.url(&path), WHSEC, now_s(), &stripe.refunded_event(&pi)).await;
        assert_eq!(s, 200, "{b}");
        let after = licenses(&app, &owner, &org).await;
        assert_eq!(after[0]["status"], "revoked", "{after:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p1_checkout_without_a_stripe_key_answers_503_and_calls_nobody() {
    let app = server(false, None).await.unwrap();
    let (owner, org) = owner_and_org(&app, "seller@example.com").await;
    let res = call(
        &app,
        Method::POST,
        "/v1/checkout",
        &owner,
        Some(json!({ "kind": "wallet_credit", "org_id": org, "amount": 100, "currency": "usd", "product_name": "Credits" })),
    )
    .await;
    assert_problem(res, 503, "payments_not_configured").await;
}

async fn org_wallet(app: &TestApp, owner: &str, org: &str, credit: i64) -> String {
    let w = ok_json(
        call(
            app,
            Method::POST,
            &format!("/v1/orgs/{org}/wallets"),
            owner,
            Some(json!({ "currency": "CREDITS" })),
        )
        .await,
        201,
    )
    .await;
    let id = w["id"].as_str().unwrap().to_owned();
    ok_json(
        call(
            app,
            Method::POST,
            &format!("/v1/orgs/{org}/wallets/{id}/postings"),
            owner,
            Some(json!({ "kind": "credit", "amount": credit, "memo": "grant" })),
        )
        .await,
        201,
    )
    .await;
    id
}

async fn keyed(
    app: &TestApp,
    auth: &str,
    path: &str,
    key: &str,
    body: &Value,
) -> reqwest::Response {
    client()
        .post(app.url(path))
        .header("authorization", auth)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p4_an_idempotent_post_retried_with_the_same_key_replays_and_changes_nothing() {
    for app in both(None).await {
        let (owner, org) = owner_and_org(&app, "ops@example.com").await;
        let wallet = org_wallet(&app, &owner, &org, 100).await;
        let path = format!("/v1/orgs/{org}/wallets/{wallet}/postings");
        let debit = json!({ "kind": "debit", "amount": 30, "memo": "usage" });

        let first = keyed(&app, &owner, &path, "retry-me", &debit).await;
        assert_eq!(first.status(), 201);
        assert_eq!(first.headers()["idempotency-replayed"], "false");
        let first: Value = first.json().await.unwrap();
        let second = keyed(&app, &owner, &path, "retry-me", &debit).await;
        assert_eq!(second.status(), 201);
        assert_eq!(second.headers()["idempotency-replayed"], "true");
        assert_eq!(second.headers()["content-type"], "application/json");
        let second: Value = second.json().await.unwrap();
        assert_eq!(first, second);
        let w = wallets(&app, &owner, &org).await;
        assert_eq!(w[0]["balance"], 70, "debited once");

        // The same key with another request is refused, and changes nothing either.
        let other = json!({ "kind": "debit", "amount": 31, "memo": "usage" });
        assert_problem(
            keyed(&app, &owner, &path, "retry-me", &other).await,
            422,
            "idempotency_key_reused",
        )
        .await;
        // A key is per principal: another caller's identical key is theirs alone.
        let (key_auth, _) = crate::orgs::api_key(&app, &org, &owner, "service").await;
        let theirs = keyed(&app, &key_auth, &path, "retry-me", &debit).await;
        assert_eq!(theirs.status(), 201);
        assert_eq!(theirs.headers()["idempotency-replayed"], "false");
        assert_eq!(wallets(&app, &owner, &org).await[0]["balance"], 40);
        // A malformed key is refused before anything runs.
        assert_problem(
            keyed(&app, &owner, &path, "", &debit).await,
            400,
            "idempotency_key_invalid",
        )
        .await;

        // A license issued with a key: the retry does not issue again, and does not hand out the
        // key a second time either (a response with a secret is never kept).
        let policy = policy(&app, &owner, &org).await;
        let issue = json!({ "policy_id": policy, "email": "buyer@example.com" });
        let lpath = format!("/v1/orgs/{org}/licenses");
        let a: Value = keyed(&app, &owner, &lpath, "issue-1", &issue)
            .await
            .json()
            .await
            .unwrap();
        assert!(a["key"].as_str().unwrap().starts_with("BSTL1."), "{a}");
        let b = keyed(&app, &owner, &lpath, "issue-1", &issue).await;
        assert_eq!(b.headers()["idempotency-replayed"], "true");
        let b = assert_problem(b, 409, "idempotency_response_withheld").await;
        assert!(!b.to_string().contains("BSTL1."), "{b}");
        assert_eq!(licenses(&app, &owner, &org).await.len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p5_1000_concurrent_debits_of_1_from_a_wallet_holding_500_leave_exactly_0() {
    for app in both(None).await {
        let (owner, org) = owner_and_org(&app, "ops@example.com").await;
        let wallet = org_wallet(&app, &owner, &org, 500).await;
        let path = format!("/v1/orgs/{org}/wallets/{wallet}/postings");
        let owner = Arc::new(owner);
        let statuses = join_all((0..1000).map(|_| {
            let (app, path, owner) = (&app, path.clone(), owner.clone());
            async move {
                call(
                    app,
                    Method::POST,
                    &path,
                    &owner,
                    Some(json!({ "kind": "debit", "amount": 1 })),
                )
                .await
                .status()
                .as_u16()
            }
        }))
        .await;
        assert_eq!(
            statuses.iter().filter(|s| **s == 201).count(),
            500,
            "{statuses:?}"
        );
        assert_eq!(statuses.iter().filter(|s| **s == 422).count(), 500);
        assert_eq!(wallets(&app, &owner, &org).await[0]["balance"], 0);
        let history = entries(&app, &owner, &org, &wallet).await;
        assert_eq!(history.len(), 501);
        // Never negative at any point, and the entries add up to the balance.
        assert!(
            history
                .iter()
                .all(|e| e["balance_after"].as_i64().unwrap() >= 0)
        );
        assert_eq!(
            history
                .iter()
                .map(|e| e["amount"].as_i64().unwrap())
                .sum::<i64>(),
            0
        );
        let mut seqs: Vec<i64> = history.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=501).collect::<Vec<_>>());
    }
}

/// A `checkout.session.completed` as an org admin could sign it for their own endpoint.
fn forged_completion(session_id: &str, wallet: &str, amount: i64) -> Value {
    json!({
        "id": format!("evt_forged_{session_id}"), "object": "event",
        "type": "checkout.session.completed",
        "data": { "object": {
            "id": session_id, "object": "checkout.session", "payment_status": "paid",
            "status": "complete", "payment_intent": format!("pi_forged_{session_id}"),
            "amount_total": amount, "currency": "usd",
            "metadata": { "bastion_kind": "wallet", "bastion_wallet": wallet },
        } },
    })
}

async fn my_balance(app: &TestApp, user: &str) -> (String, i64) {
    let w = ok_json(
        call(app, Method::GET, "/v1/me/wallets", user, None).await,
        200,
    )
    .await;
    let w = &w["wallets"][0];
    (
        w["id"].as_str().unwrap().to_owned(),
        w["balance"].as_i64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p1_p2_a_signed_event_alone_moves_no_money_the_provider_is_asked() {
    let stripe = FakeStripe::start(STRIPE_KEY).await;
    for app in both(Some(&stripe)).await {
        // Mallory owns an org, so she may add a payments endpoint with a secret of her own.
        let (mallory, her_org) = owner_and_org(&app, "mallory@example.com").await;
        let her_path = endpoint(&app, &mallory, &her_org, "payments").await;
        let her_url = app.url(&her_path);
        // She starts a top-up of her own wallet and never pays it.
        let chk = ok_json(
            call(
                &app,
                Method::POST,
                "/v1/checkout",
                &mallory,
                Some(json!({
                    "kind": "wallet_credit", "amount": 100, "currency": "usd",
                    "product_name": "Credits",
                })),
            )
            .await,
            201,
        )
        .await;
        let unpaid = chk["session_id"].as_str().unwrap().to_owned();
        let (wallet, balance) = my_balance(&app, &mallory).await;
        assert_eq!(balance, 0);

        // Signed "paid" completions — of her unpaid session, of a session Stripe never made,
        // and with an id that is not Stripe's — each fail and credit nothing.
        for session in [
            unpaid.as_str(),
            "cs_test_never_made",
            "cs_x/../../v1/refunds",
        ] {
            let (s, b) = deliver(
                &her_url,
                WHSEC,
                now_s(),
                &forged_completion(session, &wallet, 1_000_000_000),
            )
            .await;
            assert_eq!(s, 200, "{b}");
            assert_eq!(
                serde_json::from_str::<Value>(&b).unwrap()["status"],
                "failed",
                "{session}: {b}"
            );
        }
        assert_eq!(my_balance(&app, &mallory).await.1, 0);
        let reasons: Vec<String> = events(&app, &mallory, &her_org)
            .await
            .iter()
            .map(|e| e["last_error"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert!(
            reasons
                .iter()
                .any(|r| r.contains("provider says the session is not")),
            "{reasons:?}"
        );

        // Once she really pays, the genuine event credits what Stripe says she paid, once.
        let paid = stripe.completed_event(&unpaid);
        let mut tampered = paid.clone();
        tampered["id"] = json!("evt_tampered");
        tampered["data"]["object"]["amount_total"] = json!(1_000_000_000);
        for e in [&paid, &tampered] {
            let (s, b) = deliver(&her_url, WHSEC, now_s(), e).await;
            assert_eq!(s, 200, "{b}");
        }
        assert_eq!(my_balance(&app, &mallory).await.1, 100);

        // A forged full refund of a charge that was not refunded reverses nothing.
        let pi = stripe.session(&unpaid).unwrap().payment_intent;
        let charge = pi.replacen("pi_", "ch_", 1);
        let forged_refund = json!({
            "id": "evt_forged_refund", "object": "event", "type": "charge.refunded",
            "data": { "object": {
                "id": charge, "object": "charge", "refunded": true, "payment_intent": pi,
                "metadata": { "bastion_kind": "wallet", "bastion_wallet": wallet },
            } },
        });
        let (s, b) = deliver(&her_url, WHSEC, now_s(), &forged_refund).await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(
            serde_json::from_str::<Value>(&b).unwrap()["status"],
            "failed"
        );
        assert_eq!(my_balance(&app, &mallory).await.1, 100);

        // She cannot take the refund's reference first to make the real reversal a no-op.
        assert_problem(
            call(
                &app,
                Method::POST,
                &format!("/v1/me/wallets/{wallet}/debits"),
                &mallory,
                Some(json!({ "amount": 1, "reference": format!("stripe-refund:{pi}") })),
            )
            .await,
            422,
            "invalid_field",
        )
        .await;
        // So the real refund takes the credit back.
        let (s, b) = deliver(&her_url, WHSEC, now_s(), &stripe.refunded_event(&pi)).await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(my_balance(&app, &mallory).await.1, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p4_a_request_cut_off_by_the_deadline_frees_its_key_for_the_retry() {
    let stripe = FakeStripe::start(STRIPE_KEY).await;
    let key_dir = tempfile::tempdir().unwrap();
    let key_file = key_dir.path().join("stripe.key");
    std::fs::write(&key_file, STRIPE_KEY).unwrap();
    let base = stripe.base_url();
    let app = spawn_app(Spawn::default(), move |c| {
        c.rate_limit.per_ip_per_second = 0;
        c.http.request_timeout_ms = 300;
        c.payments.stripe_api_base = base;
        c.payments.stripe_secret_key_file = key_file.display().to_string();
    })
    .await
    .unwrap();
    let (owner, org) = owner_and_org(&app, "ops@example.com").await;
    let checkout = || {
        client()
            .post(app.url("/v1/checkout"))
            .header("authorization", &owner)
            .header("idempotency-key", "topup-1")
            .json(&json!({
                "kind": "wallet_credit", "org_id": org, "amount": 500, "currency": "usd",
                "product_name": "Credits",
            }))
            .send()
    };
    // Stripe answers after the server's deadline: the request is cut off with 408.
    stripe.set_delay(std::time::Duration::from_secs(2));
    let cut = checkout().await.unwrap();
    assert_eq!(cut.status().as_u16(), 408);
    // The retry runs (not 409 "in use" until the key expires) and its answer is then kept.
    stripe.set_delay(std::time::Duration::ZERO);
    let mut retried = checkout().await.unwrap();
    for _ in 0..250 {
        if retried.status().as_u16() != 409 {
            break;
        }
        // The abandoned claim is released on its own task, just after the cut-off.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        retried = checkout().await.unwrap();
    }
    assert_eq!(retried.status().as_u16(), 201);
    assert_eq!(retried.headers()["idempotency-replayed"], "false");
    let first: Value = retried.json().await.unwrap();
    // The scheme is case-insensitive for the key as for authentication: still a replay.
    let again = client()
        .post(app.url("/v1/checkout"))
        .header("authorization", owner.replacen("Bearer ", "bearer ", 1))
        .header("idempotency-key", "topup-1")
        .json(&json!({
            "kind": "wallet_credit", "org_id": org, "amount": 500, "currency": "usd",
            "product_name": "Credits",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(again.headers()["idempotency-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    assert_eq!(
        stripe.sessions().len(),
        2,
        "the cut-off attempt and the retry"
    );
}

/// P4 with S4 and A3: a replay is re-authorized (a member removed from the org retries a stored
/// request and meets the org's answer for a stranger, not the stored success), a response that
/// carried tokens or a secret is never replayed (a refresh retried after its grace window gets no
/// tokens), and every replay is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p4_s4_a3_a_replay_is_reauthorized_never_carries_tokens_or_secrets_and_is_audited() {
    for app in both(None).await {
        let (owner, org) = owner_and_org(&app, "boss@example.com").await;
        let wallet = org_wallet(&app, &owner, &org, 100).await;
        let (admin, admin_id) =
            crate::orgs::member(&app, &org, &owner, "admin@example.com", "admin").await;
        let path = format!("/v1/orgs/{org}/wallets/{wallet}/postings");
        let debit = json!({ "kind": "debit", "amount": 10, "memo": "usage" });
        assert_eq!(
            keyed(&app, &admin, &path, "k-1", &debit).await.status(),
            201
        );
        let replay = keyed(&app, &admin, &path, "k-1", &debit).await;
        assert_eq!(replay.headers()["idempotency-replayed"], "true");
        // The owner removes the admin: the stored success is out of the admin's reach.
        let res = call(
            &app,
            Method::DELETE,
            &format!("/v1/orgs/{org}/members/{admin_id}"),
            &owner,
            None,
        )
        .await;
        assert!(res.status().is_success(), "{}", res.status());
        let after = keyed(&app, &admin, &path, "k-1", &debit).await;
        assert_ne!(after.headers()["idempotency-replayed"], "true");
        assert_problem(after, 404, "not_found").await;
        assert_eq!(
            wallets(&app, &owner, &org).await[0]["balance"],
            90,
            "debited once"
        );

        // Tokens: a refresh with a key is answered once; its retry gets no tokens.
        let tokens = crate::auth::signup_and_login(&app, "rot@example.com").await;
        let auth = bearer(&tokens);
        let body = json!({ "refresh_token": tokens["refresh_token"] });
        let first = keyed(&app, &auth, "/v1/auth/refresh", "r-1", &body).await;
        assert_eq!(first.status(), 200);
        assert_eq!(first.headers()["cache-control"], "no-store");
        let again = keyed(&app, &auth, "/v1/auth/refresh", "r-1", &body).await;
        let problem = assert_problem(again, 409, "idempotency_response_withheld").await;
        assert!(!problem.to_string().contains("bst_rt_"), "{problem}");

        // Every replay is in the audit trail: the admin's one, the license-free refresh's one.
        let replays = crate::signin_limits::audit_rows(&app, "idempotency.replayed").await;
        assert_eq!(replays.len(), 2, "{replays:?}");
    }
}

/// P3: a GitHub delivery's id (`X-GitHub-Delivery`) is not covered by its signature, so a captured
/// delivery re-sent under a fresh id is still the same event: answered as a duplicate and stored
/// once. A genuinely different body is a new event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p3_a_captured_delivery_re_sent_under_a_new_unsigned_id_is_the_same_event() {
    const SECRET: &str = "gh-3f9Kq7Lm2Xw8Zr5Tn1Bv6Hc4Jd0Ps";
    for app in both(None).await {
        let (owner, org) = owner_and_org(&app, "hooks@example.com").await;
        let e = ok_json(
            call(
                &app,
                Method::POST,
                &format!("/v1/orgs/{org}/webhooks/endpoints"),
                &owner,
                Some(json!({ "name": "repo", "provider": "github", "secrets": [SECRET] })),
            )
            .await,
            201,
        )
        .await;
        let path = e["path"].as_str().unwrap().to_owned();
        let send = |body: &'static [u8], delivery: &'static str| {
            let url = app.url(&path);
            async move {
                let key =
                    aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, SECRET.as_bytes());
                let sig: String = aws_lc_rs::hmac::sign(&key, body)
                    .as_ref()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                let res = client()
                    .post(url)
                    .header("content-type", "application/json")
                    .header("x-github-event", "push")
                    .header("x-github-delivery", delivery)
                    .header("x-hub-signature-256", format!("sha256={sig}"))
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let status = res.status().as_u16();
                (status, res.json::<Value>().await.unwrap())
            }
        };
        let body: &[u8] = br#"{"ref":"refs/heads/main","after":"abc123"}"#;
        let (s1, first) = send(body, "d-1").await;
        assert_eq!(
            (s1, first["duplicate"].clone()),
            (200, json!(false)),
            "{first}"
        );
        let (s2, again) = send(body, "d-2-forged").await;
        assert_eq!(
            (s2, again["duplicate"].clone()),
            (200, json!(true)),
            "{again}"
        );
        let (s3, other) = send(br#"{"ref":"refs/heads/main","after":"def456"}"#, "d-3").await;
        assert_eq!(
            (s3, other["duplicate"].clone()),
            (200, json!(false)),
            "{other}"
        );
        let events = ok_json(
            call(
                &app,
                Method::GET,
                &format!("/v1/orgs/{org}/webhooks/events"),
                &owner,
                None,
            )
            .await,
            200,
        )
        .await;
        let n = events["events"].as_array().map_or(0, Vec::len);
        assert_eq!(n, 2, "{events}");
        // U1: each webhook event is audited with its provider, trigger and processed status.
        let endpoint_id = e["id"].as_str().unwrap();
        let received = crate::signin_limits::audit_rows(&app, "webhook.received").await;
        assert_eq!(received.len(), 2, "{received:?}");
        for row in &received {
            let v: Value = serde_json::from_str(row).unwrap();
            assert_eq!(v["provider"], "github", "{v}");
            assert_eq!(v["type"], "push", "{v}");
            assert_eq!(v["endpoint_id"], endpoint_id, "{v}");
            assert_eq!(v["status"], "processed", "{v}");
        }
        let replayed = crate::signin_limits::audit_rows(&app, "webhook.replayed").await;
        assert_eq!(replayed.len(), 1, "{replayed:?}");
        let v: Value = serde_json::from_str(&replayed[0]).unwrap();
        assert_eq!(
            (
                v["provider"].as_str(),
                v["type"].as_str(),
                v["event_id"].as_str()
            ),
            (Some("github"), Some("push"), Some("d-1")),
            "the re-sent delivery is filed as the first one: {v}"
        );
    }
}
