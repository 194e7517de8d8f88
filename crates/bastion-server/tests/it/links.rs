//! Email verification, password reset, enumeration resistance and mail delivery over the real
//! server (SPEC A1, A7).

use std::sync::Arc;
use std::time::Instant;

use bastion_core::clock::ManualClock;
use bastion_core::mail::Template;
use bastion_core::{Clock, SystemClock};
use bastion_testkit::app::{Spawn, TestApp, spawn_app};
use bastion_testkit::smtp::SmtpSink;
use serde_json::{Value, json};

use crate::auth::post;
use crate::auth::signup_and_login;
use crate::{assert_problem, client};

const PASSWORD: &str = "correct horse battery staple";

#[tokio::test]
async fn a7_sign_in_waits_for_the_verification_link_which_works_once() {
    let app = spawn_app(Spawn::default(), |_| {}).await.unwrap();
    let email = "new@example.com";
    let res = post(
        &app,
        "/v1/auth/signup",
        json!({ "email": email, "password": PASSWORD }),
    )
    .await;
    assert_eq!(res.status(), 202);
    let res = post(
        &app,
        "/v1/auth/login",
        json!({ "email": email, "password": PASSWORD }),
    )
    .await;
    assert_problem(res, 403, "email_not_verified").await;
    // The wrong password does not learn that the account awaits verification.
    let res = post(
        &app,
        "/v1/auth/login",
        json!({ "email": email, "password": "wrong password!" }),
    )
    .await;
    assert_problem(res, 401, "invalid_credentials").await;

    let mail = app.wait_for_mail(email, 1).await.pop().unwrap();
    assert!(mail.subject().contains("Confirm your email"));
    assert!(mail.raw.contains("text/plain") && mail.raw.contains("text/html"));
    let token = mail.link_token().unwrap();
    assert!(
        mail.decoded
            .contains(&format!("/verify-email#token={token}")),
        "the token rides in the fragment"
    );
    let res = post(&app, "/v1/auth/verify-email", json!({ "token": token })).await;
    assert_eq!(res.status(), 204);
    let res = post(&app, "/v1/auth/verify-email", json!({ "token": token })).await;
    assert_problem(res, 400, "invalid_link").await;
    let res = post(
        &app,
        "/v1/auth/login",
        json!({ "email": email, "password": PASSWORD }),
    )
    .await;
    assert_eq!(res.status(), 200);

    // Resend is for unverified accounts only, and answers alike for anyone.
    for who in [email, "nobody@example.com"] {
        let res = post(
            &app,
            "/v1/auth/verify-email/resend",
            json!({ "email": who }),
        )
        .await;
        assert_eq!(res.status(), 202);
    }
}

#[tokio::test]
async fn a1_signing_up_with_a_taken_address_answers_alike_and_tells_the_owner() {
    let app = spawn_app(Spawn::default(), |_| {}).await.unwrap();
    let first = post(
        &app,
        "/v1/auth/signup",
        json!({ "email": "taken@example.com", "password": PASSWORD }),
    )
    .await;
    let (s1, b1) = (first.status(), first.text().await.unwrap());
    app.wait_for_mail("taken@example.com", 1).await;
    let second = post(
        &app,
        "/v1/auth/signup",
        json!({ "email": "Taken@Example.com", "password": "an attacker's passphrase" }),
    )
    .await;
    let (s2, b2) = (second.status(), second.text().await.unwrap());
    assert_eq!((s1, &b1), (s2, &b2), "same status and body");
    let mails = app.wait_for_mail("taken@example.com", 2).await;
    let notice = &mails[1];
    assert!(
        notice.subject().contains("already have"),
        "{}",
        notice.subject()
    );
    assert!(notice.link_token().is_none(), "the notice carries no link");
    // The second sign-up changed nothing: the owner's password still works after verifying.
    let token = mails[0].link_token().unwrap();
    post(&app, "/v1/auth/verify-email", json!({ "token": token })).await;
    let res = post(
        &app,
        "/v1/auth/login",
        json!({ "email": "taken@example.com", "password": "an attacker's passphrase" }),
    )
    .await;
    assert_problem(res, 401, "invalid_credentials").await;
    let res = post(
        &app,
        "/v1/auth/login",
        json!({ "email": "taken@example.com", "password": PASSWORD }),
    )
    .await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn a7_password_reset_over_http_sets_the_password_once_and_ends_every_session() {
    let app = spawn_app(Spawn::default(), |_| {}).await.unwrap();
    let email = "forgetful@example.com";
    let before = signup_and_login(&app, email).await;
    let res = post(&app, "/v1/auth/password/forgot", json!({ "email": email })).await;
    assert_eq!(res.status(), 202);
    let token = app.link_token(email, 2).await;
    let res = post(
        &app,
        "/v1/auth/password/reset",
        json!({ "token": token, "new_password": "short" }),
    )
    .await;
    assert_problem(res, 422, "weak_password").await;
    let res = post(
        &app,
        "/v1/auth/password/reset",
        json!({ "token": token, "new_password": "a fresh passphrase" }),
    )
    .await;
    assert_eq!(res.status(), 204, "a weak password did not use the link up");
    let res = post(
        &app,
        "/v1/auth/password/reset",
        json!({ "token": token, "new_password": "another passphrase" }),
    )
    .await;
    assert_problem(res, 400, "invalid_link").await;
    let res = client()
        .get(app.url("/v1/me"))
        .bearer_auth(before["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_problem(res, 401, "invalid_token").await;
    let res = post(
        &app,
        "/v1/auth/refresh",
        json!({ "refresh_token": before["refresh_token"] }),
    )
    .await;
    assert_problem(res, 401, "invalid_token").await;
    let res = post(
        &app,
        "/v1/auth/login",
        json!({ "email": email, "password": PASSWORD }),
    )
    .await;
    assert_problem(res, 401, "invalid_credentials").await;
    let res = post(
        &app,
        "/v1/auth/login",
        json!({ "email": email, "password": "a fresh passphrase" }),
    )
    .await;
    assert_eq!(res.status(), 200);
}

/// Mann–Whitney U: the z score of "the two samples come from one distribution".
pub(crate) fn mann_whitney_z(a: &[f64], b: &[f64]) -> f64 {
    let mut all: Vec<(f64, bool)> = a
        .iter()
        .map(|x| (*x, true))
        .chain(b.iter().map(|x| (*x, false)))
        .collect();
    all.sort_by(|x, y| x.0.total_cmp(&y.0));
    let mut rank_sum_a = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum_a += rank * all[i..=j].iter().filter(|x| x.1).count() as f64;
        i = j + 1;
    }
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    let u = rank_sum_a - n1 * (n1 + 1.0) / 2.0;
    let mu = n1 * n2 / 2.0;
    let sigma = (n1 * n2 * (n1 + n2 + 1.0) / 12.0).sqrt();
    (u - mu) / sigma
}

#[test]
fn mann_whitney_tells_different_samples_apart() {
    let a: Vec<f64> = (0..40).map(f64::from).collect();
    let same: Vec<f64> = (0..40).map(|i| f64::from(i) + 0.5).collect();
    let slower: Vec<f64> = (0..40).map(|i| f64::from(i) + 30.0).collect();
    assert!(mann_whitney_z(&a, &same).abs() < 1.0);
    assert!(mann_whitney_z(&a, &slower).abs() > 3.29);
}

/// One side of a paired run: each response's status and body, and each latency in µs.
type Side = (Vec<(u16, String)>, Vec<f64>);

/// Sends `known` and `unknown` alternately (so drift hits both alike) and returns, per side,
/// the responses' status and body and the latencies in microseconds.
async fn paired(
    app: &TestApp,
    path: &str,
    known: impl Fn(usize) -> Value,
    unknown: impl Fn(usize) -> Value,
    n: usize,
) -> [Side; 2] {
    let http = client();
    let mut out: [Side; 2] = Default::default();
    for i in 0..n + 5 {
        for (side, body) in [known(i), unknown(i)].into_iter().enumerate() {
            let started = Instant::now();
            let res = http.post(app.url(path)).json(&body).send().await.unwrap();
            let status = res.status().as_u16();
            let text = res.text().await.unwrap();
            let micros = started.elapsed().as_secs_f64() * 1e6;
            // The first rounds warm connections and caches.
            if i >= 5 {
                out[side].0.push((status, text));
                out[side].1.push(micros);
            }
        }
    }
    out
}

/// Problem bodies carry a per-request id; the rest must match.
fn without_request_id(body: &str) -> Value {
    let mut v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.remove("request_id");
        o.remove("instance");
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a1_login_and_forgot_password_are_indistinguishable_for_unknown_emails() {
    let app = spawn_app(Spawn::default(), |c| {
        c.auth.login_max_failures = 10_000;
        c.auth.login_ip_max_failures = 10_000;
        c.auth.login_ip_max_accounts = 10_000;
        c.auth.mail_per_address_per_hour = 10_000;
        c.auth.mail_per_requester_per_hour = 10_000;
        // The per-IP HTTP limiter would answer 429 to this burst from one address.
        c.rate_limit.per_ip_per_second = 0;
    })
    .await
    .unwrap();
    signup_and_login(&app, "known@example.com").await;
    let n = 40;
    for (path, known, unknown) in [
        (
            "/v1/auth/login",
            Box::new(|_| json!({ "email": "known@example.com", "password": "not the password" }))
                as Box<dyn Fn(usize) -> Value>,
            Box::new(
                |i| json!({ "email": format!("ghost{i}@example.com"), "password": "not the password" }),
            ) as Box<dyn Fn(usize) -> Value>,
        ),
        (
            "/v1/auth/password/forgot",
            Box::new(|_| json!({ "email": "known@example.com" })),
            Box::new(|i| json!({ "email": format!("ghost{i}@example.com") })),
        ),
    ] {
        let [(k_res, k_us), (u_res, u_us)] = paired(&app, path, known, unknown, n).await;
        let first = (k_res[0].0, without_request_id(&k_res[0].1));
        for (status, body) in k_res.iter().chain(&u_res) {
            assert_eq!(
                (*status, without_request_id(body)),
                first,
                "{path}: same status and body"
            );
        }
        let z = mann_whitney_z(&k_us, &u_us);
        let median = |v: &[f64]| {
            let mut s = v.to_vec();
            s.sort_by(f64::total_cmp);
            s[s.len() / 2]
        };
        eprintln!(
            "{path}: known median {:.0} µs, unknown median {:.0} µs, Mann-Whitney z = {z:.2}",
            median(&k_us),
            median(&u_us)
        );
        // p < 0.001 two-sided would mean the timings tell the two apart.
        assert!(z.abs() < 3.29, "{path}: timing differs (z = {z:.2})");
    }
}

#[tokio::test]
async fn a7_mail_waits_out_an_smtp_outage_and_is_delivered_once_the_server_is_back() {
    // A port with nothing listening: the mail server is down.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = bastion_testkit::test_config(dir.path());
    cfg.email.transport = "smtp".into();
    cfg.email.smtp.host = "127.0.0.1".into();
    cfg.email.smtp.port = port;
    cfg.email.smtp.security = "none".into();
    cfg.email.smtp.timeout_secs = 5;
    cfg.email.max_attempts = 3;
    let mut b = bastion_server::Bastion::open(&cfg).await.unwrap();
    let clock = Arc::new(ManualClock::new(SystemClock.now_ms()));
    b.clock = clock.clone();
    let services = bastion_server::startup::auth_services(&b, &cfg).unwrap();
    let smtp = bastion_server::mail::transport(&cfg).unwrap();
    let mailer = services.mailer;
    mailer
        .enqueue("ada@example.com", &Template::AlreadyRegistered)
        .await
        .unwrap();

    let report = mailer.dispatch_due(smtp.as_ref()).await.unwrap();
    assert_eq!((report.sent, report.retrying), (0, 1), "{report:?}");
    let counts = b
        .store
        .mail_counts(&bastion_store::Scope::System("test"))
        .await
        .unwrap();
    assert_eq!(counts.pending, 1, "still queued, nothing lost");
    let report = mailer.dispatch_due(smtp.as_ref()).await.unwrap();
    assert_eq!(report, Default::default(), "not before its backoff");

    let sink = SmtpSink::start(([127, 0, 0, 1], port).into(), false)
        .await
        .unwrap();
    clock.advance_ms(30_000);
    let report = mailer.dispatch_due(smtp.as_ref()).await.unwrap();
    assert_eq!(report.sent, 1, "{report:?}");
    let got = sink.messages();
    assert_eq!(got.len(), 1);
    assert!(got[0].contains("To: ada@example.com") && got[0].contains("Subject: You already have"));
    let counts = b
        .store
        .mail_counts(&bastion_store::Scope::System("test"))
        .await
        .unwrap();
    assert_eq!((counts.pending, counts.sent), (0, 1));
    drop(sink);

    // A permanent refusal is not retried; transient failures stop after max_attempts.
    let refusing = SmtpSink::start(([127, 0, 0, 1], 0).into(), true)
        .await
        .unwrap();
    cfg.email.smtp.port = refusing.addr.port();
    let refused = bastion_server::mail::transport(&cfg).unwrap();
    mailer
        .enqueue("bob@example.com", &Template::AlreadyRegistered)
        .await
        .unwrap();
    let report = mailer.dispatch_due(refused.as_ref()).await.unwrap();
    assert_eq!(report.abandoned, 1, "{report:?}");
    assert!(refusing.messages().is_empty());
    let counts = b
        .store
        .mail_counts(&bastion_store::Scope::System("test"))
        .await
        .unwrap();
    assert_eq!(counts.failed, 1);
}

#[tokio::test]
async fn a1_bad_input_to_the_link_endpoints_is_a_4xx_problem_never_a_500() {
    let app = spawn_app(Spawn::default(), |_| {}).await.unwrap();
    let big = "x".repeat(10 << 20);
    for path in [
        "/v1/auth/verify-email",
        "/v1/auth/verify-email/resend",
        "/v1/auth/password/forgot",
        "/v1/auth/password/reset",
    ] {
        let raw = |body: &str| {
            client()
                .post(app.url(path))
                .header("content-type", "application/json")
                .body(body.to_owned())
        };
        let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
            (raw("{"), 400, "malformed_json"),
            (
                client().post(app.url(path)).body("token=x"),
                415,
                "unsupported_media_type",
            ),
            (raw("{}"), 422, "invalid_body"),
            (
                raw("{\"token\": 5, \"email\": 5, \"new_password\": 5}"),
                422,
                "invalid_body",
            ),
            (raw("[]"), 422, "invalid_body"),
            (
                raw(&format!("{{\"token\": \"{big}\"}}")),
                413,
                "payload_too_large",
            ),
        ];
        for (req, status, code) in cases {
            let res = req.send().await.unwrap();
            assert_eq!(res.status(), status, "{path}: {code}");
            assert_problem(res, status, code).await;
        }
    }
    for path in ["/v1/auth/verify-email/resend", "/v1/auth/password/forgot"] {
        let res = post(&app, path, json!({ "email": "not an email" })).await;
        assert_problem(res, 422, "invalid_email").await;
    }
    let res = post(
        &app,
        "/v1/auth/verify-email",
        json!({ "token": "bml_forged" }),
    )
    .await;
    assert_problem(res, 400, "invalid_link").await;
    let res = post(
        &app,
        "/v1/auth/password/reset",
        json!({ "token": "bml_forged", "new_password": "long enough passphrase" }),
    )
    .await;
    assert_problem(res, 400, "invalid_link").await;
}

#[tokio::test]
async fn a7_mail_goes_over_starttls_only_to_a_relay_whose_certificate_is_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let tls_dir = dir.path().join("relay-tls");
    bastion_server::tls::write_self_signed(&tls_dir, vec!["localhost".into()]).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(
        bastion_server::tls::server_config(
            &tls_dir.join("cert.pem"),
            &tls_dir.join("key.pem"),
            "1.2",
        )
        .unwrap(),
    );
    let sink = SmtpSink::start_with(
        ([127, 0, 0, 1], 0).into(),
        bastion_testkit::smtp::SinkOptions {
            reject_recipients: false,
            starttls: Some(acceptor),
        },
    )
    .await
    .unwrap();
    let mut cfg = bastion_testkit::test_config(&dir.path().join("data"));
    cfg.email.transport = "smtp".into();
    cfg.email.smtp.host = "localhost".into();
    cfg.email.smtp.port = sink.addr.port();
    cfg.email.smtp.security = "starttls".into();
    cfg.email.smtp.timeout_secs = 5;
    let mut b = bastion_server::Bastion::open(&cfg).await.unwrap();
    let clock = Arc::new(ManualClock::new(SystemClock.now_ms()));
    b.clock = clock.clone();
    let mailer = bastion_server::startup::auth_services(&b, &cfg)
        .unwrap()
        .mailer;
    mailer
        .enqueue("ada@example.com", &Template::AlreadyRegistered)
        .await
        .unwrap();

    // The relay's certificate is not trusted yet: no plaintext fallback, no delivery.
    let untrusted = bastion_server::mail::transport(&cfg).unwrap();
    let report = mailer.dispatch_due(untrusted.as_ref()).await.unwrap();
    assert_eq!((report.sent, report.retrying), (0, 1), "{report:?}");
    assert!(sink.messages().is_empty());

    cfg.email.smtp.ca_cert = tls_dir.join("cert.pem").display().to_string();
    let trusted = bastion_server::mail::transport(&cfg).unwrap();
    clock.advance_ms(30_000);
    let report = mailer.dispatch_due(trusted.as_ref()).await.unwrap();
    assert_eq!(report.sent, 1, "{report:?}");
    assert_eq!(sink.tls_sessions(), 1, "delivered inside TLS");
    assert!(sink.messages()[0].contains("To: ada@example.com"));
}
