//! Licensing over HTTP (SPEC L1–L7): issue and deliver, activate under an atomic limit,
//! certificates checked offline, the IP lockout and the key freeze across two server instances
//! sharing PostgreSQL (on a clock the test moves), and revocation by magic link.

use std::sync::Arc;

use bastion_core::clock::ManualClock;
use bastion_core::{Clock, SystemClock};
use bastion_crypto::license::{DEFAULT_SKEW_SECS, LicenseError, PublicKeySet, canonical_machine};
use bastion_testkit::app::{Spawn, TestApp, spawn_app};
use reqwest::Method;
use serde_json::{Value, json};

use crate::auth::signup_and_login;
use crate::orgs::{api_key, backends, bearer, call, create_org, member, ok_json};
use crate::{assert_problem, client};

/// An org selling one product under one policy, with its owner's credentials.
struct Shop {
    org: String,
    owner: String,
    product: String,
    policy: String,
}

fn tweak(c: &mut bastion_server::Config) {
    c.rate_limit.per_ip_per_second = 0;
    // The tests speak for many client addresses through X-Forwarded-For.
    c.http.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
}

async fn shop(app: &TestApp, owner_email: &str, max_machines: u32) -> Shop {
    let owner = bearer(&signup_and_login(app, owner_email).await);
    let org = create_org(app, &owner, "Acme Desktop").await;
    let product = ok_json(
        call(
            app,
            Method::POST,
            &format!("/v1/orgs/{org}/products"),
            &owner,
            Some(json!({ "name": "Acme Desk" })),
        )
        .await,
        201,
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let policy = ok_json(
        call(
            app,
            Method::POST,
            &format!("/v1/orgs/{org}/products/{product}/policies"),
            &owner,
            Some(json!({
                "name": "Pro", "max_machines": max_machines, "duration_days": 365,
                "entitlements": ["pro", "export"], "lease_days": 7,
            })),
        )
        .await,
        201,
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    Shop {
        org,
        owner,
        product,
        policy,
    }
}

/// Issues a license to `email`; returns (license id, key).
async fn issue(app: &TestApp, shop: &Shop, auth: &str, email: &str) -> (String, String) {
    let res = call(
        app,
        Method::POST,
        &format!("/v1/orgs/{}/licenses", shop.org),
        auth,
        Some(json!({ "policy_id": shop.policy, "email": email })),
    )
    .await;
    assert_eq!(
        res.headers().get("cache-control").unwrap(),
        "no-store",
        "an answer with a key must not be cached"
    );
    let v = ok_json(res, 201).await;
    (
        v["license"]["id"].as_str().unwrap().to_owned(),
        v["key"].as_str().unwrap().to_owned(),
    )
}

fn machine(n: usize) -> Value {
    json!({ "components": [format!("Machine-ID-{n:04}"), "linux"], "name": format!("laptop {n}") })
}

fn canonical(n: usize) -> String {
    canonical_machine(&[format!("Machine-ID-{n:04}"), "linux".to_owned()]).unwrap()
}

/// POSTs a licensee call as if from `ip` (the server trusts the loopback proxy).
async fn app_call(app: &TestApp, path: &str, ip: &str, body: Value) -> reqwest::Response {
    client()
        .post(app.url(path))
        .header("x-forwarded-for", ip)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn activate(app: &TestApp, key: &str, email: &str, n: usize, ip: &str) -> reqwest::Response {
    app_call(
        app,
        "/v1/licenses/activate",
        ip,
        json!({ "key": key, "email": email, "machine": machine(n) }),
    )
    .await
}

async fn public_keys(app: &TestApp) -> PublicKeySet {
    let text = client()
        .get(app.url("/v1/licenses/public-keys"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    PublicKeySet::from_json(&text).unwrap()
}

fn now_s() -> i64 {
    SystemClock.now_ms() / 1000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l1_l2_l4_a_license_is_mailed_verifies_offline_and_activates_with_a_machine_certificate() {
    for app in backends(tweak).await {
        let shop = shop(&app, "owner@acme.example", 3).await;
        let (lic, key) = issue(&app, &shop, &shop.owner, "Buyer@Example.com").await;
        assert!(
            key.starts_with("BSTL1.") && key.len() < 1200,
            "{}",
            key.len()
        );

        // L2: delivered to the licensee, key included, once: counted where mail is queued (in the
        // license's own transaction), so a late duplicate cannot hide behind the first delivery.
        assert_eq!(queued_mail(&app, "buyer@example.com").await, 1);
        let mails = app.wait_for_mail("buyer@example.com", 1).await;
        assert_eq!(mails.len(), 1);
        assert!(mails[0].decoded.contains(&key), "the mail carries the key");

        // L1: the app verifies offline with the published keys, email bound.
        let keys = public_keys(&app).await;
        let claims = keys
            .verify_license(&key, Some("buyer@example.com"), now_s(), DEFAULT_SKEW_SECS)
            .unwrap();
        assert_eq!(claims.lic, lic);
        assert_eq!(claims.prd, shop.product);
        assert_eq!(claims.ent, vec!["export", "pro"]);
        assert!(claims.exp.is_some());
        assert_eq!(claims.alg, "RS256", "RS256 by default (SPEC L1)");
        assert_eq!(
            keys.verify_license(&key, Some("other@example.com"), now_s(), 300),
            Err(LicenseError::EmailMismatch)
        );
        // L2 online: the server refuses the key with another email, and no seat is taken.
        assert_problem(
            activate(&app, &key, "other@example.com", 1, "203.0.113.2").await,
            403,
            "license_invalid",
        )
        .await;

        // L4: activation returns a certificate for this machine only.
        let cert = ok_json(
            activate(&app, &key, "buyer@example.com", 1, "203.0.113.1").await,
            200,
        )
        .await;
        let c = cert["certificate"].as_str().unwrap();
        let cc = keys
            .verify_certificate(c, &lic, &canonical(1), now_s(), DEFAULT_SKEW_SECS)
            .unwrap();
        assert_eq!(cc.mch, cert["machine_id"].as_str().unwrap());
        assert!(
            cc.exp - now_s() <= 7 * 86_400 && cc.exp - now_s() > 6 * 86_400,
            "7-day lease"
        );
        // Copied to another machine, or checked after its lease: refused offline.
        assert_eq!(
            keys.verify_certificate(c, &lic, &canonical(2), now_s(), 300),
            Err(LicenseError::WrongMachine)
        );
        assert_eq!(
            keys.verify_certificate(c, &lic, &canonical(1), cc.exp + 301, 300),
            Err(LicenseError::Expired)
        );

        // The same machine again (case and order differ) is the same seat.
        let again = json!({ "key": key, "email": "buyer@example.com",
            "machine": { "components": ["LINUX", " machine-id-0001 "], "name": "x" } });
        let again = ok_json(
            app_call(&app, "/v1/licenses/activate", "203.0.113.1", again).await,
            200,
        )
        .await;
        assert_eq!(again["machine_id"], cert["machine_id"]);

        // Validate renews; machines lists one; deactivate frees the seat.
        let body = json!({ "key": key, "email": "buyer@example.com", "machine": machine(1) });
        ok_json(
            app_call(&app, "/v1/licenses/validate", "203.0.113.1", body).await,
            200,
        )
        .await;
        let body = json!({ "key": key, "email": "buyer@example.com", "machine": machine(9) });
        let res = app_call(&app, "/v1/licenses/validate", "203.0.113.1", body).await;
        assert_problem(res, 404, "machine_not_activated").await;
        let list = json!({ "key": key, "email": "buyer@example.com" });
        let ms = ok_json(
            app_call(&app, "/v1/licenses/machines", "203.0.113.1", list.clone()).await,
            200,
        )
        .await;
        assert_eq!(ms["machines"].as_array().unwrap().len(), 1);
        let off =
            json!({ "key": key, "email": "buyer@example.com", "machine_id": cert["machine_id"] });
        let res = app_call(&app, "/v1/licenses/deactivate", "203.0.113.1", off).await;
        assert_eq!(res.status(), 204);
        let ms = ok_json(
            app_call(&app, "/v1/licenses/machines", "203.0.113.1", list).await,
            200,
        )
        .await;
        assert!(ms["machines"].as_array().unwrap().is_empty());

        // The admin view never shows the key; its hash is all the database has.
        let detail = ok_json(
            call(
                &app,
                Method::GET,
                &format!("/v1/orgs/{}/licenses/{lic}", shop.org),
                &shop.owner,
                None,
            )
            .await,
            200,
        )
        .await;
        assert_eq!(detail["license"]["status"], "active");
        assert!(!detail.to_string().contains(&key));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l2_who_may_issue_and_see_licenses_follows_the_permission_map_and_the_org() {
    for app in backends(tweak).await {
        let shop = shop(&app, "owner@acme.example", 3).await;
        let (manager, _) = member(
            &app,
            &shop.org,
            &shop.owner,
            "manager@acme.example",
            "manager",
        )
        .await;
        let (learner, _) = member(
            &app,
            &shop.org,
            &shop.owner,
            "learner@acme.example",
            "learner",
        )
        .await;
        let (service, _) = api_key(&app, &shop.org, &shop.owner, "service").await;
        let (publishable, _) = api_key(&app, &shop.org, &shop.owner, "publishable").await;
        let path = format!("/v1/orgs/{}/licenses", shop.org);
        let body = json!({ "policy_id": shop.policy, "email": "b@example.com" });
        // Issuing: a service key or an Admin (and above), nobody below.
        for who in [&manager, &learner, &publishable] {
            let res = call(&app, Method::POST, &path, who, Some(body.clone())).await;
            assert_eq!(res.status(), 403, "{who}");
        }
        let (lic, _) = issue(&app, &shop, &service, "b@example.com").await;
        // Reading: licenses.read (Learner and above).
        let list = ok_json(call(&app, Method::GET, &path, &learner, None).await, 200).await;
        assert_eq!(list["licenses"][0]["id"], lic.as_str());
        // Another org's owner sees nothing of it, whatever id it tries.
        let eve = bearer(&signup_and_login(&app, "eve@evil.example").await);
        let _ = create_org(&app, &eve, "Evil").await;
        let res = call(&app, Method::GET, &format!("{path}/{lic}"), &eve, None).await;
        assert_problem(res, 404, "not_found").await;
        let res = call(
            &app,
            Method::POST,
            &format!("{path}/{lic}/revoke"),
            &eve,
            None,
        )
        .await;
        assert_problem(res, 404, "not_found").await;
        let res = call(
            &app,
            Method::POST,
            &format!("{path}/{lic}/unfreeze"),
            &manager,
            None,
        )
        .await;
        assert_problem(res, 403, "permission_denied").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l2_fifty_concurrent_activations_of_a_three_machine_license_exactly_three_succeed() {
    for app in backends(tweak).await {
        let shop = shop(&app, "owner@acme.example", 3).await;
        let (lic, key) = issue(&app, &shop, &shop.owner, "buyer@example.com").await;
        let app = Arc::new(app);
        let mut tasks = Vec::new();
        for n in 0..50 {
            let (app, key) = (app.clone(), key.clone());
            tasks.push(tokio::spawn(async move {
                // Each from its own address: only the machine limit may refuse.
                let res = activate(
                    &app,
                    &key,
                    "buyer@example.com",
                    n,
                    &format!("198.51.100.{n}"),
                )
                .await;
                let status = res.status().as_u16();
                let body: Value = res.json().await.unwrap();
                (status, body["code"].as_str().unwrap_or("").to_owned())
            }));
        }
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap() {
                (200, _) => ok += 1,
                (409, code) => assert_eq!(code, "machine_limit_reached"),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(ok, 3, "exactly the limit");
        let d = ok_json(
            call(
                &app,
                Method::GET,
                &format!("/v1/orgs/{}/licenses/{lic}", shop.org),
                &shop.owner,
                None,
            )
            .await,
            200,
        )
        .await;
        assert_eq!(d["machines"].as_array().unwrap().len(), 3);
        // A full license is not an attack: nothing was counted against the key.
        assert_eq!(d["license"]["failed_activations"], 0);
    }
}

/// A PostgreSQL database served by two Bastion instances on one moved clock; `None` when
/// PostgreSQL tests are not configured (CI requires them).
async fn two_nodes(clock: Arc<ManualClock>) -> Option<(TestApp, TestApp)> {
    let a = spawn_app(
        Spawn {
            postgres: true,
            clock: Some(clock.clone()),
            ..Spawn::default()
        },
        tweak,
    )
    .await?;
    let (url, dir) = (a.config.database_url.clone(), a.config.data_dir.clone());
    let b = spawn_app(
        Spawn {
            clock: Some(clock),
            ..Spawn::default()
        },
        move |c| {
            tweak(c);
            c.database_url = url;
            // The same master key file (and outbox) as the first node.
            c.data_dir = dir;
        },
    )
    .await
    .unwrap();
    Some((a, b))
}

/// Single-node SQLite plus, when configured, two PostgreSQL nodes: (node for odd calls, node
/// for even calls, the clock).
async fn topologies() -> Vec<(Arc<TestApp>, Arc<TestApp>, Arc<ManualClock>)> {
    let mut out = Vec::new();
    let clock = Arc::new(ManualClock::new(SystemClock.now_ms()));
    let one = spawn_app(
        Spawn {
            clock: Some(clock.clone()),
            ..Spawn::default()
        },
        tweak,
    )
    .await
    .unwrap();
    let one = Arc::new(one);
    out.push((one.clone(), one, clock));
    let clock = Arc::new(ManualClock::new(SystemClock.now_ms()));
    if let Some((a, b)) = two_nodes(clock.clone()).await {
        out.push((Arc::new(a), Arc::new(b), clock));
    } else {
        assert!(
            std::env::var("BASTION_TEST_REQUIRE_POSTGRES").is_err(),
            "PostgreSQL is required"
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l6_the_fifth_failure_from_an_ip_locks_it_for_15_minutes_while_another_ip_activates() {
    for (a, b, clock) in topologies().await {
        let shop = shop(&a, "owner@acme.example", 10).await;
        let (_, key) = issue(&a, &shop, &shop.owner, "buyer@example.com").await;
        let mut forged = key.clone().into_bytes();
        let mid = forged.len() / 2;
        forged[mid] = if forged[mid] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        let attacker = "192.0.2.66";
        // Four failures of different kinds, alternating nodes: each answered as what it is.
        let fails = [
            (forged.as_str(), "buyer@example.com", "license_invalid"),
            (key.as_str(), "thief@example.com", "license_invalid"),
            (
                "BSTL1.bm9wZQ.bm9wZQ",
                "buyer@example.com",
                "license_invalid",
            ),
            ("not a key", "buyer@example.com", "license_invalid"),
        ];
        for (i, (k, email, code)) in fails.iter().enumerate() {
            let node = if i % 2 == 0 { &a } else { &b };
            assert_problem(activate(node, k, email, 1, attacker).await, 403, code).await;
        }
        // The 5th failure locks the address: from then on even the right key is refused.
        assert_problem(
            activate(&b, &forged, "buyer@example.com", 1, attacker).await,
            403,
            "license_invalid",
        )
        .await;
        for node in [&a, &b] {
            let res = activate(node, &key, "buyer@example.com", 1, attacker).await;
            let retry: u64 = res.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=900).contains(&retry), "{retry}");
            assert_problem(res, 429, "activation_locked").await;
        }
        // Another address activates meanwhile.
        ok_json(
            activate(&a, &key, "buyer@example.com", 2, "192.0.2.7").await,
            200,
        )
        .await;
        // Successes never count: many activations from one office address are fine.
        for n in 3..9 {
            ok_json(
                activate(&b, &key, "buyer@example.com", n, "192.0.2.8").await,
                200,
            )
            .await;
        }
        clock.advance_ms(14 * 60_000);
        assert_problem(
            activate(&a, &key, "buyer@example.com", 1, attacker).await,
            429,
            "activation_locked",
        )
        .await;
        clock.advance_ms(60_000 + 1_000);
        ok_json(
            activate(&b, &key, "buyer@example.com", 1, attacker).await,
            200,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l7_the_20th_failure_against_a_key_freezes_it_mails_the_customer_once_and_one_action_unfreezes_it()
 {
    for (a, b, _clock) in topologies().await {
        let shop = shop(&a, "owner@acme.example", 3).await;
        let (lic, key) = issue(&a, &shop, &shop.owner, "buyer@example.com").await;
        let (_, other_key) = issue(&a, &shop, &shop.owner, "second@example.com").await;
        // 19 wrong-email attempts from 19 addresses (no IP lockout), concurrently, both nodes:
        // each one the same `license_invalid`, and the key still works after them.
        let mut tasks = Vec::new();
        for i in 0..19 {
            let node = if i % 2 == 0 { a.clone() } else { b.clone() };
            let key = key.clone();
            tasks.push(tokio::spawn(async move {
                let res = activate(
                    &node,
                    &key,
                    &format!("guess{i}@example.com"),
                    i,
                    &format!("10.9.0.{i}"),
                )
                .await;
                let status = res.status().as_u16();
                let body: Value = res.json().await.unwrap();
                (status, body["code"].as_str().unwrap_or_default().to_owned())
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), (403, "license_invalid".to_owned()));
        }
        ok_json(
            activate(&a, &key, "buyer@example.com", 1, "10.8.0.3").await,
            200,
        )
        .await;
        // The 20th failure (a success in between does not reset the count) freezes the key.
        assert_problem(
            activate(&b, &key, "guess19@example.com", 19, "10.9.0.19").await,
            403,
            "license_invalid",
        )
        .await;
        // Frozen: the right email no longer activates, from a clean address.
        assert_problem(
            activate(&b, &key, "buyer@example.com", 1, "10.8.0.1").await,
            403,
            "license_frozen",
        )
        .await;
        // Another license is untouched.
        ok_json(
            activate(&a, &other_key, "second@example.com", 1, "10.8.0.2").await,
            200,
        )
        .await;
        // Exactly one freeze notice (besides the delivery), though 21 failures were counted.
        // Counted where they are queued (both servers share the database), so no wait for a
        // dispatcher can hide a second notice.
        let queued = queued_mail(&a, "buyer@example.com").await;
        assert_eq!(queued, 2, "one delivery and one freeze notice");
        let mails = a.wait_for_mail("buyer@example.com", 2).await;
        assert!(mails.iter().any(|m| m.subject().contains("frozen")));
        let path = format!("/v1/orgs/{}/licenses/{lic}", shop.org);
        let d = ok_json(call(&b, Method::GET, &path, &shop.owner, None).await, 200).await;
        assert_eq!(d["license"]["status"], "frozen");
        assert_eq!(d["license"]["failed_activations"], 21);
        // One action unfreezes (and resets the count); the customer activates again.
        let u = ok_json(
            call(
                &b,
                Method::POST,
                &format!("{path}/unfreeze"),
                &shop.owner,
                None,
            )
            .await,
            200,
        )
        .await;
        assert_eq!(u["changed"], true);
        assert_eq!(u["license"]["status"], "active");
        assert_eq!(u["license"]["failed_activations"], 0);
        ok_json(
            activate(&a, &key, "buyer@example.com", 1, "10.8.0.1").await,
            200,
        )
        .await;
        // Both the freeze and the unfreeze are in the org's audit trail.
        let audit = ok_json(
            call(
                &a,
                Method::GET,
                &format!("/v1/orgs/{}/audit", shop.org),
                &shop.owner,
                None,
            )
            .await,
            200,
        )
        .await
        .to_string();
        assert!(
            audit.contains("license.frozen") && audit.contains("license.unfrozen"),
            "{audit}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l5_revoke_from_the_app_works_through_the_mailed_link_once_only_for_that_key_and_the_link_expires()
 {
    for (a, b, clock) in topologies().await {
        let shop = shop(&a, "owner@acme.example", 3).await;
        let (lic, key) = issue(&a, &shop, &shop.owner, "buyer@example.com").await;
        let (lic2, key2) = issue(&a, &shop, &shop.owner, "second@example.com").await;
        let keys = public_keys(&a).await;
        let cert = ok_json(
            activate(&a, &key, "buyer@example.com", 1, "10.1.0.1").await,
            200,
        )
        .await;
        let cert = cert["certificate"].as_str().unwrap().to_owned();
        let cert2 = ok_json(
            activate(&a, &key2, "second@example.com", 1, "10.1.0.2").await,
            200,
        )
        .await;
        let cert2 = cert2["certificate"].as_str().unwrap().to_owned();
        let list_path = format!("/v1/licenses/revocations/{}", shop.product);
        let list_before = client()
            .get(a.url(&list_path))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap();
        let before = keys
            .verify_revocations(list_before["list"].as_str().unwrap())
            .unwrap();
        assert!(!before.is_revoked(&lic));

        // The request must prove an activated copy: a certificate of another license (or
        // another machine) is refused.
        let ask = |cert: &str, n: usize| json!({ "key": key, "email": "buyer@example.com", "certificate": cert, "machine": machine(n) });
        assert_problem(
            app_call(
                &b,
                "/v1/licenses/revoke-request",
                "10.1.0.1",
                ask(&cert2, 1),
            )
            .await,
            403,
            "certificate_invalid",
        )
        .await;
        assert_problem(
            app_call(&b, "/v1/licenses/revoke-request", "10.1.0.1", ask(&cert, 2)).await,
            403,
            "certificate_invalid",
        )
        .await;
        let res = app_call(&b, "/v1/licenses/revoke-request", "10.1.0.1", ask(&cert, 1)).await;
        assert_eq!(res.status(), 202);
        let token = a.link_token("buyer@example.com", 2).await;

        // Nothing is revoked until the licensee confirms.
        ok_json(
            activate(&b, &key, "buyer@example.com", 1, "10.1.0.1").await,
            200,
        )
        .await;
        let confirm = |t: &str| json!({ "token": t });
        ok_json(
            app_call(
                &b,
                "/v1/licenses/revoke/confirm",
                "10.1.0.3",
                confirm(&token),
            )
            .await,
            200,
        )
        .await;
        // Once only.
        assert_problem(
            app_call(
                &a,
                "/v1/licenses/revoke/confirm",
                "10.1.0.3",
                confirm(&token),
            )
            .await,
            400,
            "invalid_link",
        )
        .await;
        // It revoked that license and no other.
        assert_problem(
            activate(&a, &key, "buyer@example.com", 1, "10.1.0.4").await,
            403,
            "license_revoked",
        )
        .await;
        ok_json(
            activate(&a, &key2, "second@example.com", 1, "10.1.0.2").await,
            200,
        )
        .await;
        // The new list revokes it offline: an app that fetched it refuses the key.
        let list_after = client()
            .get(b.url(&list_path))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap();
        let after = keys
            .verify_revocations(list_after["list"].as_str().unwrap())
            .unwrap();
        assert!(after.is_revoked(&lic) && !after.is_revoked(&lic2));
        assert!(after.iat >= before.iat);

        // A link for the second license expires unused.
        let ask2 = json!({ "key": key2, "email": "second@example.com", "certificate": cert2, "machine": machine(1) });
        assert_eq!(
            app_call(&a, "/v1/licenses/revoke-request", "10.1.0.2", ask2)
                .await
                .status(),
            202
        );
        let token2 = a.link_token("second@example.com", 2).await;
        clock.advance_ms(31 * 60_000);
        assert_problem(
            app_call(
                &b,
                "/v1/licenses/revoke/confirm",
                "10.1.0.3",
                confirm(&token2),
            )
            .await,
            400,
            "invalid_link",
        )
        .await;
        ok_json(
            activate(&a, &key2, "second@example.com", 1, "10.1.0.2").await,
            200,
        )
        .await;
        // A made-up token is the same answer.
        let fake = format!("bml_{}", "A".repeat(43));
        assert_problem(
            app_call(
                &b,
                "/v1/licenses/revoke/confirm",
                "10.1.0.3",
                confirm(&fake),
            )
            .await,
            400,
            "invalid_link",
        )
        .await;
    }
}

/// Messages ever queued to `address` (sent or not), counted in the outbox table.
pub(crate) async fn queued_mail(app: &TestApp, address: &str) -> i64 {
    let url = &app.config.database_url;
    if url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        let n =
            sqlx::query_scalar("SELECT count(*) FROM bastion.email_outbox WHERE recipient = $1")
                .bind(address)
                .fetch_one(&pool)
                .await
                .unwrap();
        pool.close().await;
        n
    } else {
        let db = format!(
            "sqlite://{}",
            app.config.data_dir.join("bastion.db").display()
        );
        let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
        let n = sqlx::query_scalar("SELECT count(*) FROM email_outbox WHERE recipient = ?1")
            .bind(address)
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        n
    }
}

/// Every byte the database holds: the SQLite files, or a `pg_dump` of the PostgreSQL database.
fn database_dump(app: &TestApp) -> Vec<u8> {
    let url = &app.config.database_url;
    if url.starts_with("postgres") {
        let out = std::process::Command::new("pg_dump")
            .arg("--data-only")
            .arg(url)
            .output()
            .expect("pg_dump");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return out.stdout;
    }
    let mut db = Vec::new();
    for entry in std::fs::read_dir(app.data_dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("bastion.db")
        {
            db.extend(std::fs::read(&path).unwrap());
        }
    }
    db
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l3_the_database_holds_neither_a_raw_key_nor_a_raw_machine_identifier() {
    for app in backends(tweak).await {
        let shop = shop(&app, "owner@acme.example", 3).await;
        let (lic, key) = issue(&app, &shop, &shop.owner, "buyer@example.com").await;
        let marker = "Canary-Machine-7f3a9c";
        let body = json!({ "key": key, "email": "buyer@example.com",
            "machine": { "components": [marker, "linux"], "name": "desk" } });
        ok_json(
            app_call(&app, "/v1/licenses/activate", "10.2.0.1", body).await,
            200,
        )
        .await;
        // Let the delivery mail go out: its sealed body is emptied once sent.
        app.wait_for_mail("buyer@example.com", 1).await;
        let dump = database_dump(&app);
        assert!(
            dump.windows(lic.len()).any(|w| w == lic.as_bytes()),
            "the dump holds the license row"
        );
        let haystack = String::from_utf8_lossy(&dump).to_lowercase();
        let sig = key.rsplit('.').next().unwrap().to_lowercase();
        let payload = key.split('.').nth(1).unwrap().to_lowercase();
        assert!(
            !haystack.contains(&key.to_lowercase()),
            "raw key in the database"
        );
        assert!(
            !haystack.contains(&sig),
            "the key's signature in the database"
        );
        assert!(
            !haystack.contains(&payload),
            "the key's payload in the database"
        );
        assert!(
            !haystack.contains(&marker.to_lowercase()),
            "raw machine identifier in the database"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l1_bad_input_gets_a_clear_problem_and_changes_nothing() {
    let app = spawn_app(Spawn::default(), tweak).await.unwrap();
    let shop = shop(&app, "owner@acme.example", 3).await;
    let (_, key) = issue(&app, &shop, &shop.owner, "buyer@example.com").await;
    for (machine, what) in [
        (json!({ "components": [], "name": "x" }), "no components"),
        (json!({ "components": ["   "], "name": "x" }), "blank"),
        (
            json!({ "components": ["a\u{1}b"], "name": "x" }),
            "control character",
        ),
        (
            json!({ "components": ["x".repeat(300)], "name": "x" }),
            "too long",
        ),
    ] {
        let body = json!({ "key": key, "email": "buyer@example.com", "machine": machine });
        let res = app_call(&app, "/v1/licenses/activate", "10.3.0.1", body).await;
        assert_eq!(res.status(), 422, "{what}");
    }
    let path = format!("/v1/orgs/{}/products/{}/policies", shop.org, shop.product);
    for body in [
        json!({ "name": "z", "max_machines": 0 }),
        json!({ "name": "z", "max_machines": 1, "entitlements": ["Not Valid!"] }),
        json!({ "name": "z", "max_machines": 1, "lease_days": 0 }),
        json!({ "name": "", "max_machines": 1 }),
    ] {
        let res = call(&app, Method::POST, &path, &shop.owner, Some(body.clone())).await;
        assert_problem(res, 422, "invalid_field").await;
    }
    let res = call(
        &app,
        Method::POST,
        &path,
        &shop.owner,
        Some(json!({ "name": "Pro", "max_machines": 2 })),
    )
    .await;
    assert_problem(res, 409, "policy_exists").await;
    let res = call(
        &app,
        Method::POST,
        &format!("/v1/orgs/{}/licenses", shop.org),
        &shop.owner,
        Some(json!({ "policy_id": shop.policy, "email": "not-an-email" })),
    )
    .await;
    assert_problem(res, 422, "invalid_field").await;
    // Nothing above was counted as an attack: the key is clean.
    let list = ok_json(
        call(
            &app,
            Method::GET,
            &format!("/v1/orgs/{}/licenses", shop.org),
            &shop.owner,
            None,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(list["licenses"].as_array().unwrap().len(), 1);
    assert_eq!(list["licenses"][0]["failed_activations"], 0);
}

/// The desktop library end to end (SPEC C4, L4, L5): `bastion-client` activates against the
/// real server, then works offline from what it stored, until the new revocation list arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c4_the_client_library_activates_runs_offline_and_stops_once_the_revocation_list_says_so() {
    use bastion_client::api::Client;
    use bastion_client::fingerprint::Fingerprint;
    use bastion_client::offline::{RevocationCache, verify_all};

    let app = spawn_app(Spawn::default(), tweak).await.unwrap();
    let shop = shop(&app, "owner@acme.example", 2).await;
    let (lic, key) = issue(&app, &shop, &shop.owner, "buyer@example.com").await;
    let api = Client::new(&app.base).unwrap();
    let keys = PublicKeySet::from_json(&api.public_keys().await.unwrap()).unwrap();
    let here = Fingerprint::from_components(vec!["client-e2e-machine".into(), "linux".into()]);
    let activated = api
        .activate(&key, "buyer@example.com", &here, "laptop")
        .await
        .unwrap();
    assert_eq!(activated.license_id, lic);
    let mut revocations = RevocationCache::new(shop.product.clone());
    revocations
        .offer(&keys, &api.revocations(&shop.product).await.unwrap())
        .unwrap();
    // Offline from here: only what the app holds.
    let status = verify_all(
        &key,
        "buyer@example.com",
        &activated.certificate,
        &here,
        &keys,
        &revocations,
        now_s(),
    )
    .unwrap();
    assert_eq!(status.entitlements(), ["export", "pro"]);
    assert!(status.runs_until() > now_s() + 6 * 86_400);
    // Copied to another machine: refused offline.
    let elsewhere = Fingerprint::from_components(vec!["another-machine".into()]);
    assert!(
        verify_all(
            &key,
            "buyer@example.com",
            &activated.certificate,
            &elsewhere,
            &keys,
            &revocations,
            now_s()
        )
        .is_err()
    );
    // Revoked by the owner; the app fetches the new list and stops, offline.
    let path = format!("/v1/orgs/{}/licenses/{lic}/revoke", shop.org);
    ok_json(
        call(&app, Method::POST, &path, &shop.owner, None).await,
        200,
    )
    .await;
    assert!(
        revocations
            .offer(&keys, &api.revocations(&shop.product).await.unwrap())
            .unwrap()
    );
    assert!(
        verify_all(
            &key,
            "buyer@example.com",
            &activated.certificate,
            &here,
            &keys,
            &revocations,
            now_s()
        )
        .is_err(),
        "a revoked license keeps running"
    );
    // And the server says so with a stable code.
    let err = api
        .validate(&key, "buyer@example.com", &here)
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("license_revoked"), "{err:?}");
}

/// An org cannot mail one address without limit by issuing licenses: past its mail budget for
/// that address the key is still issued and answered, but not mailed; another org's budget is its
/// own; and the product name an org chose never reaches a subject line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l2_license_mail_to_one_address_is_bounded_per_org_and_keeps_org_text_out_of_subjects() {
    for app in backends(tweak).await {
        let acme = shop(&app, "acme@example.com", 1).await;
        let mut mailed = Vec::new();
        for _ in 0..7 {
            let v = ok_json(
                call(
                    &app,
                    Method::POST,
                    &format!("/v1/orgs/{}/licenses", acme.org),
                    &acme.owner,
                    Some(json!({ "policy_id": acme.policy, "email": "target@example.com" })),
                )
                .await,
                201,
            )
            .await;
            assert!(v["key"].as_str().unwrap().starts_with("BSTL1."));
            mailed.push(v["mailed"].as_bool().unwrap());
        }
        assert_eq!(mailed, [vec![true; 5], vec![false; 2]].concat());
        assert_eq!(queued_mail(&app, "target@example.com").await, 5);
        let other = shop(&app, "other@example.com", 1).await;
        issue(&app, &other, &other.owner, "target@example.com").await;
        assert_eq!(queued_mail(&app, "target@example.com").await, 6);
        let mails = app.wait_for_mail("target@example.com", 6).await;
        for m in mails {
            let subject = m
                .decoded
                .lines()
                .find(|l| l.starts_with("Subject:"))
                .unwrap()
                .to_owned();
            assert!(!subject.contains("Acme Desk"), "{subject}");
            assert!(
                m.decoded.contains("\"Acme Desk\""),
                "the name is in the body, quoted"
            );
        }
    }
}

/// L2, L4: deactivating a machine revokes its certificate: the client library refuses it offline
/// once it holds the new list, though its lease has not ended, while the license and a newly
/// activated seat keep working. Activation churn is bounded: with the default of 10
/// deactivations a day, cycles past the 10th are refused (429 `deactivation_limited`, audited
/// once), so a one-seat license cannot mint certificates without end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l2_l4_a_deactivated_seat_is_revoked_offline_and_activation_churn_is_bounded() {
    use bastion_client::api::Client;
    use bastion_client::fingerprint::Fingerprint;
    use bastion_client::offline::{RevocationCache, verify_all};

    for app in backends(tweak).await {
        let shop = shop(&app, "owner@acme.example", 1).await;
        let (_, key) = issue(&app, &shop, &shop.owner, "buyer@example.com").await;
        let api = Client::new(&app.base).unwrap();
        let keys = PublicKeySet::from_json(&api.public_keys().await.unwrap()).unwrap();
        let here = Fingerprint::from_components(vec!["churn-machine".into(), "linux".into()]);
        let email = "buyer@example.com";
        let first = api.activate(&key, email, &here, "laptop").await.unwrap();
        let mut revocations = RevocationCache::new(shop.product.clone());
        revocations
            .offer(&keys, &api.revocations(&shop.product).await.unwrap())
            .unwrap();
        let check = |cert: &str, cache: &RevocationCache| {
            verify_all(&key, email, cert, &here, &keys, cache, now_s())
        };
        assert!(check(&first.certificate, &revocations).is_ok());
        api.deactivate(&key, email, &first.machine_id)
            .await
            .unwrap();
        assert!(
            revocations
                .offer(&keys, &api.revocations(&shop.product).await.unwrap())
                .unwrap(),
            "the new list names the machine"
        );
        assert!(
            check(&first.certificate, &revocations).is_err(),
            "a deactivated seat stops at the next list, not at its lease's end"
        );
        // The same machine activates again: a new seat, a new certificate that verifies.
        let second = api.activate(&key, email, &here, "laptop").await.unwrap();
        assert_ne!(second.machine_id, first.machine_id);
        assert!(check(&second.certificate, &revocations).is_ok());

        // Churn: nine more deactivations are allowed today, then every cycle is refused.
        let mut machine = second.machine_id;
        let mut statuses = Vec::new();
        for _ in 0..100 {
            let res = app_call(
                &app,
                "/v1/licenses/deactivate",
                "203.0.113.200",
                json!({ "key": key, "email": email, "machine_id": machine }),
            )
            .await;
            let status = res.status().as_u16();
            if status == 429 {
                assert_problem(res, 429, "deactivation_limited").await;
            }
            statuses.push(status);
            if status != 204 {
                continue;
            }
            machine = api
                .activate(&key, email, &here, "laptop")
                .await
                .unwrap()
                .machine_id;
        }
        let ok = statuses.iter().filter(|s| **s == 204).count();
        assert_eq!(ok, 9, "{statuses:?}");
        assert!(statuses[9..].iter().all(|s| *s == 429), "{statuses:?}");
        // The seat stays taken: another machine cannot get in by churning.
        let other = Fingerprint::from_components(vec!["another".into()]);
        assert!(api.activate(&key, email, &other, "other").await.is_err());
        let audit = ok_json(
            call(
                &app,
                Method::GET,
                &format!("/v1/orgs/{}/audit", shop.org),
                &shop.owner,
                None,
            )
            .await,
            200,
        )
        .await
        .to_string();
        assert_eq!(
            audit.matches("license.deactivations_limited").count(),
            1,
            "audited once per lock"
        );
    }
}

/// L2 with A1: a license is bound to the normalized address, so the licensee activates with any
/// form of the same mailbox (IDN or punycode domain, another case), and another mailbox fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l2_a1_a_license_activates_with_any_form_of_its_mailbox_and_no_other() {
    let app = spawn_app(Spawn::default(), tweak).await.unwrap();
    let shop = shop(&app, "owner@acme.example", 3).await;
    let (_, key) = issue(&app, &shop, &shop.owner, "ada@bücher.example").await;
    for (n, form) in ["ada@xn--bcher-kva.example", "ADA@BÜCHER.example"]
        .into_iter()
        .enumerate()
    {
        ok_json(activate(&app, &key, form, n + 1, "192.0.2.10").await, 200).await;
    }
    assert_problem(
        activate(&app, &key, "ada@bucher.example", 3, "192.0.2.10").await,
        403,
        "license_invalid",
    )
    .await;
}
