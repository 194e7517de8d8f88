//! The Stripe gateway against the fake Stripe of the testkit (SPEC P1, P4): Stripe's form
//! encoding, the secret key, an idempotency key on every call, timeouts and errors without
//! secrets.

use std::collections::BTreeMap;
use std::time::Duration;

use bastion_core::payments::{CheckoutRequest, GatewayError, PaymentGateway};
use bastion_server::stripe::{STRIPE_VERSION, StripeGateway};
use bastion_testkit::stripe::FakeStripe;
use secrecy::SecretString;

const KEY: &str = "sk_test_51FakeSecretKeyThatMustNeverLeak";

fn gateway(stripe: &FakeStripe, key: &str, timeout: Duration) -> StripeGateway {
    StripeGateway::new(
        stripe.base_url(),
        SecretString::from(key.to_owned()),
        timeout,
    )
    .unwrap()
}

fn request() -> CheckoutRequest {
    let mut metadata = BTreeMap::new();
    metadata.insert("bastion_checkout".to_owned(), "chk_123".to_owned());
    metadata.insert("bastion_kind".to_owned(), "wallet".to_owned());
    CheckoutRequest {
        currency: "eur".to_owned(),
        unit_amount: 1250,
        product_name: "Credit & more".to_owned(),
        success_url: "https://app.example.com/paid?c=1".to_owned(),
        cancel_url: "https://app.example.com/cancel".to_owned(),
        customer_email: Some("buyer+1@example.com".to_owned()),
        client_reference_id: "chk_123".to_owned(),
        metadata,
    }
}

#[tokio::test]
async fn p1_checkout_sessions_are_created_with_an_idempotency_key_and_the_secret_key() {
    let stripe = FakeStripe::start(KEY).await;
    let gw = gateway(&stripe, KEY, Duration::from_secs(30));
    let session = gw
        .create_checkout_session(&request(), "chk_123")
        .await
        .unwrap();
    assert_eq!(session.id, "cs_test_1");
    assert_eq!(session.url, "https://checkout.stripe.test/c/pay/cs_test_1");

    let reqs = stripe.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/v1/checkout/sessions");
    assert_eq!(r.header("idempotency-key"), Some("chk_123"));
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(r.header("stripe-version"), Some(STRIPE_VERSION));
    assert_eq!(
        r.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    let expect = [
        ("mode", "payment"),
        ("line_items[0][price_data][currency]", "eur"),
        ("line_items[0][price_data][unit_amount]", "1250"),
        (
            "line_items[0][price_data][product_data][name]",
            "Credit & more",
        ),
        ("line_items[0][quantity]", "1"),
        ("success_url", "https://app.example.com/paid?c=1"),
        ("cancel_url", "https://app.example.com/cancel"),
        ("customer_email", "buyer+1@example.com"),
        ("client_reference_id", "chk_123"),
        ("metadata[bastion_checkout]", "chk_123"),
        ("metadata[bastion_kind]", "wallet"),
        ("payment_intent_data[metadata][bastion_checkout]", "chk_123"),
        ("payment_intent_data[metadata][bastion_kind]", "wallet"),
    ];
    for (k, v) in expect {
        assert_eq!(r.field(k), Some(v), "{k} in {:?}", r.form);
    }
    assert_eq!(r.form.len(), expect.len(), "{:?}", r.form);

    let kept = stripe.session("cs_test_1").unwrap();
    assert_eq!(kept.amount, 1250);
    assert_eq!(kept.currency, "eur");
    assert_eq!(kept.metadata, request().metadata);
    assert_eq!(kept.payment_intent_metadata, request().metadata);
    assert_eq!(kept.payment_intent, "pi_test_1");

    // No customer email: the field is left out.
    let mut no_email = request();
    no_email.customer_email = None;
    gw.create_checkout_session(&no_email, "chk_456")
        .await
        .unwrap();
    assert_eq!(stripe.requests()[1].field("customer_email"), None);
}

#[tokio::test]
async fn p4_a_retried_session_create_with_the_same_key_returns_the_same_session() {
    let stripe = FakeStripe::start(KEY).await;
    let gw = gateway(&stripe, KEY, Duration::from_secs(30));
    let first = gw
        .create_checkout_session(&request(), "chk_123")
        .await
        .unwrap();
    let again = gw
        .create_checkout_session(&request(), "chk_123")
        .await
        .unwrap();
    assert_eq!(first, again);
    assert_eq!(stripe.sessions().len(), 1);
    assert_eq!(stripe.requests().len(), 2);

    // Another key is another session.
    let other = gw
        .create_checkout_session(&request(), "chk_other")
        .await
        .unwrap();
    assert_ne!(other.id, first.id);

    // The same key with other parameters is refused, as Stripe does.
    let mut changed = request();
    changed.unit_amount = 999;
    let err = gw
        .create_checkout_session(&changed, "chk_123")
        .await
        .unwrap_err();
    assert_eq!(
        err,
        GatewayError::Rejected {
            status: 400,
            code: "idempotency_error".to_owned()
        }
    );

    // A timed-out first attempt still created the session: the retry finds it.
    stripe.set_delay(Duration::from_secs(2));
    let slow = gateway(&stripe, KEY, Duration::from_millis(200));
    let err = slow
        .create_checkout_session(&request(), "chk_retry")
        .await
        .unwrap_err();
    assert_eq!(err, GatewayError::Timeout);
    stripe.set_delay(Duration::ZERO);
    let retried = gw
        .create_checkout_session(&request(), "chk_retry")
        .await
        .unwrap();
    assert_eq!(stripe.sessions().len(), 3);
    assert_eq!(retried.id, stripe.sessions()[2].id);
}

#[tokio::test]
async fn p1_a_slow_stripe_times_out() {
    let stripe = FakeStripe::start(KEY).await;
    stripe.set_delay(Duration::from_secs(2));
    let gw = gateway(&stripe, KEY, Duration::from_millis(200));
    let err = gw
        .create_checkout_session(&request(), "chk_slow")
        .await
        .unwrap_err();
    assert_eq!(err, GatewayError::Timeout);
    let err = gw.refund("pi_test_1", None, "ref_slow").await.unwrap_err();
    assert_eq!(err, GatewayError::Timeout);
}

#[tokio::test]
async fn p1_stripe_errors_are_reported_without_secrets() {
    let stripe = FakeStripe::start(KEY).await;
    let wrong = "sk_test_WrongKeyWhichIsAlsoSecret";
    let gw = gateway(&stripe, wrong, Duration::from_secs(30));
    let err = gw
        .create_checkout_session(&request(), "chk_123")
        .await
        .unwrap_err();
    assert!(
        matches!(err, GatewayError::Rejected { status: 401, .. }),
        "{err:?}"
    );
    for shown in [err.to_string(), format!("{err:?}"), format!("{gw:?}")] {
        assert!(!shown.contains(wrong), "{shown}");
        assert!(!shown.contains(KEY), "{shown}");
        assert!(!shown.contains("sk_test"), "{shown}");
    }
    // The gateway's own Debug rendering never shows its key either.
    let good = gateway(&stripe, KEY, Duration::from_secs(30));
    assert!(!format!("{good:?}").contains(KEY));

    // Stripe's error code comes through; a missing payment is `resource_missing`.
    let err = good.refund("pi_nope", None, "ref_1").await.unwrap_err();
    assert_eq!(
        err,
        GatewayError::Rejected {
            status: 404,
            code: "resource_missing".to_owned()
        }
    );
    stripe.fail_next(500);
    let err = good
        .create_checkout_session(&request(), "chk_500")
        .await
        .unwrap_err();
    assert_eq!(
        err,
        GatewayError::Rejected {
            status: 500,
            code: "api_error".to_owned()
        }
    );

    // Nobody listening: a transport error, without the key.
    let port = crate::free_port();
    let gone = StripeGateway::new(
        format!("http://127.0.0.1:{port}"),
        SecretString::from(KEY.to_owned()),
        Duration::from_secs(5),
    )
    .unwrap();
    let err = gone.refund("pi_test_1", None, "ref_2").await.unwrap_err();
    assert!(matches!(err, GatewayError::Transport(_)), "{err:?}");
    assert!(!format!("{err:?} {err}").contains(KEY));
}

#[tokio::test]
async fn p1_refunds_carry_an_idempotency_key() {
    let stripe = FakeStripe::start(KEY).await;
    let gw = gateway(&stripe, KEY, Duration::from_secs(30));
    gw.create_checkout_session(&request(), "chk_123")
        .await
        .unwrap();
    let partial = gw
        .refund("pi_test_1", Some(250), "refund-chk_123-1")
        .await
        .unwrap();
    assert_eq!(partial, "re_test_1");
    // The same refund again under its key is the same refund, not a second one.
    let again = gw
        .refund("pi_test_1", Some(250), "refund-chk_123-1")
        .await
        .unwrap();
    assert_eq!(again, partial);
    let rest = gw
        .refund("pi_test_1", None, "refund-chk_123-2")
        .await
        .unwrap();
    assert_eq!(rest, "re_test_2");
    let refunds = stripe.refunds();
    assert_eq!(refunds.len(), 2);
    assert_eq!(refunds[1].amount, 1000);

    let reqs = stripe.requests();
    let r = &reqs[1];
    assert_eq!(r.path, "/v1/refunds");
    assert_eq!(r.header("idempotency-key"), Some("refund-chk_123-1"));
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(r.field("payment_intent"), Some("pi_test_1"));
    assert_eq!(r.field("amount"), Some("250"));
    assert_eq!(reqs[3].field("amount"), None);
    assert_eq!(reqs[3].header("idempotency-key"), Some("refund-chk_123-2"));
}

#[tokio::test]
async fn p1_fake_stripe_requires_an_idempotency_key_and_signs_events_as_stripe() {
    let stripe = FakeStripe::start(KEY).await;
    let res = crate::client()
        .post(format!("{}/v1/refunds", stripe.base_url()))
        .header("authorization", format!("Bearer {KEY}"))
        .form(&[("payment_intent", "pi_test_1")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "idempotency_key_required");

    let gw = gateway(&stripe, KEY, Duration::from_secs(30));
    let s = gw
        .create_checkout_session(&request(), "chk_123")
        .await
        .unwrap();
    let event = stripe.completed_event(&s.id);
    assert_eq!(event["type"], "checkout.session.completed");
    assert_eq!(event["data"]["object"]["payment_intent"], "pi_test_1");
    assert_eq!(event["data"]["object"]["amount_total"], 1250);
    assert_eq!(event["data"]["object"]["client_reference_id"], "chk_123");
    assert_eq!(
        event["data"]["object"]["metadata"]["bastion_kind"],
        "wallet"
    );
    let refund = stripe.refunded_event("pi_test_1");
    assert_eq!(refund["type"], "charge.refunded");
    assert_eq!(refund["data"]["object"]["amount_refunded"], 1250);
    assert_eq!(refund["data"]["object"]["refunded"], true);
    assert_eq!(
        refund["data"]["object"]["metadata"]["bastion_checkout"],
        "chk_123"
    );
    assert_eq!(stripe.refunds().len(), 1);

    // Stripe's documented scheme: HMAC-SHA256 over "{t}.{body}", hex.
    let sig = bastion_testkit::stripe::stripe_signature("whsec_test", 1_700_000_000, b"{}");
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, b"whsec_test");
    let tag = aws_lc_rs::hmac::sign(&key, b"1700000000.{}");
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(sig, format!("t=1700000000,v1={hex}"));
}

#[tokio::test]
async fn p1_sessions_and_charges_are_read_back_with_the_key_and_odd_ids_never_leave() {
    let stripe = FakeStripe::start(KEY).await;
    let gw = gateway(&stripe, KEY, Duration::from_secs(30));
    let s = gw
        .create_checkout_session(&request(), "chk_123")
        .await
        .unwrap();
    let unpaid = gw.checkout_session(&s.id).await.unwrap();
    assert_eq!(
        (
            unpaid.payment_status.as_str(),
            unpaid.payment_intent.as_deref()
        ),
        ("unpaid", None)
    );
    stripe.completed_event(&s.id);
    let paid = gw.checkout_session(&s.id).await.unwrap();
    assert_eq!(paid.payment_status, "paid");
    assert_eq!(paid.payment_intent.as_deref(), Some("pi_test_1"));
    assert_eq!(paid.amount_total, Some(1250));
    assert_eq!(paid.client_reference_id.as_deref(), Some("chk_123"));
    assert_eq!(paid.metadata["bastion_kind"], "wallet");

    let charge = gw.charge("ch_test_1").await.unwrap();
    assert!(!charge.refunded);
    assert_eq!(charge.payment_intent.as_deref(), Some("pi_test_1"));
    assert_eq!(charge.metadata["bastion_checkout"], "chk_123");
    stripe.refunded_event("pi_test_1");
    assert!(gw.charge("ch_test_1").await.unwrap().refunded);

    let reads: Vec<_> = stripe
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET")
        .collect();
    assert_eq!(reads.len(), 4);
    assert_eq!(reads[0].path, "/v1/checkout/sessions/cs_test_1");
    assert_eq!(reads[2].path, "/v1/charges/ch_test_1");
    for r in &reads {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {KEY}").as_str())
        );
        assert_eq!(r.header("stripe-version"), Some(STRIPE_VERSION));
    }

    // Unknown objects are the provider's 404; ids that could change the path are never sent.
    assert!(matches!(
        gw.checkout_session("cs_test_404").await,
        Err(GatewayError::Rejected { status: 404, .. })
    ));
    let before = stripe.requests().len();
    for odd in ["cs_x/../refunds", "ch_1?expand=x", "", "cs test"] {
        assert_eq!(
            gw.checkout_session(odd).await,
            Err(GatewayError::Malformed),
            "{odd}"
        );
        assert_eq!(gw.charge(odd).await, Err(GatewayError::Malformed), "{odd}");
    }
    assert_eq!(stripe.requests().len(), before);
}
