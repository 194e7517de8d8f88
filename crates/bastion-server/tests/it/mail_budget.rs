//! Mail budgets (SPEC A1, A7): counted before any account look-up and the same for every address,
//! never surfaced across flows, per requester so a stranger cannot silence an owner's reset, and
//! a budget per org for invitations and license keys.

use std::time::{Duration, Instant};

use bastion_testkit::app::TestApp;
use reqwest::Method;
use serde_json::{Value, json};

use crate::auth::signup_and_login;
use crate::client;
use crate::orgs::{backends, bearer, call, create_org};

fn tweak(c: &mut bastion_server::Config) {
    // Requesters are told apart by X-Forwarded-For, as a trusted proxy would send it.
    c.http.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
}

async fn post_from(app: &TestApp, ip: &str, path: &str, body: Value) -> (u16, Value) {
    let res = client()
        .post(app.url(path))
        .header("x-forwarded-for", ip)
        .json(&body)
        .send()
        .await
        .unwrap();
    (
        res.status().as_u16(),
        res.json().await.unwrap_or(Value::Null),
    )
}

/// Waits until `address` has `count` messages in the outbox, then a little longer, and returns
/// how many it has: so a late duplicate would be counted too.
async fn settled_mail_count(app: &TestApp, address: &str, count: usize) -> usize {
    app.wait_for_mail(address, count).await;
    // Forgot and resend do their work in the background; give stragglers time to land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    app.mails().iter().filter(|m| m.is_to(address)).count()
}

/// Mann–Whitney U as a z score (see links.rs for the test of the statistic itself).
fn z_score(a: &[f64], b: &[f64]) -> f64 {
    crate::links::mann_whitney_z(a, b)
}

/// After every budget an address has is spent, forgot, resend, sign-up and invitations answer an
/// existing and an unknown address alike, and take the same time; an invitation is never refused
/// for the account flows' budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a1_a7_once_the_mail_budget_is_spent_every_flow_answers_alike_for_existing_and_unknown() {
    for app in backends(tweak).await {
        let owner = bearer(&signup_and_login(&app, "owner@example.com").await);
        let org = create_org(&app, &owner, "Acme").await;
        signup_and_login(&app, "known@example.com").await;
        let (known, ghost) = ("known@example.com", "ghost@example.com");
        // Spend the budgets: this requester's, and (from many requesters) the address's own.
        for i in 0..25 {
            let ip = format!("203.0.113.{}", i / 5 + 1);
            for email in [known, ghost] {
                let (status, _) = post_from(
                    &app,
                    &ip,
                    "/v1/auth/password/forgot",
                    json!({ "email": email }),
                )
                .await;
                assert_eq!(status, 202);
            }
        }
        let mut answers = Vec::new();
        for email in [known, ghost] {
            let mut seen = Vec::new();
            for path in ["/v1/auth/password/forgot", "/v1/auth/verify-email/resend"] {
                seen.push(post_from(&app, "203.0.113.1", path, json!({ "email": email })).await);
            }
            // Invitations have the org's own budget: five, then 429, for both alike.
            for _ in 0..6 {
                let res = call(
                    &app,
                    Method::POST,
                    &format!("/v1/orgs/{org}/invitations"),
                    &owner,
                    Some(json!({ "email": email, "level": "user" })),
                )
                .await;
                let status = res.status().as_u16();
                let body: Value = res.json().await.unwrap();
                seen.push((status, json!(body["code"])));
            }
            answers.push(seen);
        }
        assert_eq!(answers[0], answers[1], "{answers:?}");
        assert_eq!(
            answers[0][2].0, 201,
            "the account budget does not refuse an invitation"
        );
        assert_eq!(answers[0][7], (429, json!("rate_limited")));
        // Timings of forgot and resend, interleaved, known against unknown.
        let mut times: [Vec<f64>; 2] = Default::default();
        for round in 0..45 {
            for (side, email) in [known, ghost].into_iter().enumerate() {
                for path in ["/v1/auth/password/forgot", "/v1/auth/verify-email/resend"] {
                    let started = Instant::now();
                    let (status, _) =
                        post_from(&app, "203.0.113.9", path, json!({ "email": email })).await;
                    assert_eq!(status, 202);
                    if round >= 5 {
                        times[side].push(started.elapsed().as_secs_f64() * 1e6);
                    }
                }
            }
        }
        let z = z_score(&times[0], &times[1]);
        assert!(z.abs() < 3.29, "timings tell them apart (z = {z:.2})");
        // Sign-up last: it answers alike and creates the unknown account.
        let signup = |email: &'static str| {
            let app = &app;
            async move {
                post_from(
                    app,
                    "203.0.113.1",
                    "/v1/auth/signup",
                    json!({ "email": email, "password": "correct horse battery staple" }),
                )
                .await
            }
        };
        assert_eq!(signup(known).await, signup(ghost).await);
    }
}

/// A stranger asking for the owner's reset again and again uses up the stranger's own budget for
/// that address, not the owner's: the owner's own request still mails a link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a7_a_strangers_reset_requests_cannot_silence_the_owners_own_reset_mail() {
    for app in backends(tweak).await {
        signup_and_login(&app, "victim@example.com").await;
        for _ in 0..10 {
            post_from(
                &app,
                "203.0.113.66",
                "/v1/auth/password/forgot",
                json!({ "email": "victim@example.com" }),
            )
            .await;
        }
        // One verification mail, then the stranger's five.
        assert_eq!(settled_mail_count(&app, "victim@example.com", 6).await, 6);
        post_from(
            &app,
            "198.51.100.9",
            "/v1/auth/password/forgot",
            json!({ "email": "victim@example.com" }),
        )
        .await;
        assert_eq!(settled_mail_count(&app, "victim@example.com", 7).await, 7);
        let token = app.link_token("victim@example.com", 7).await;
        let (status, _) = post_from(
            &app,
            "198.51.100.9",
            "/v1/auth/password/reset",
            json!({ "token": token, "new_password": "a brand new passphrase" }),
        )
        .await;
        assert_eq!(status, 204, "the owner's own link works");
    }
}
