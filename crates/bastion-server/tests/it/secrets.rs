//! The secrets API and data-key rotation over HTTP (SPEC S1–S4), on SQLite and PostgreSQL:
//! who may write, list and reveal; what a list and an error show; rewrap while the API writes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bastion_crypto::keyring::Purpose;
use bastion_testkit::app::TestApp;
use reqwest::Method;
use serde_json::{Value, json};

use crate::assert_problem;
use crate::auth::signup_and_login;
use crate::orgs::{api_key, backends, bearer, call, create_org, member, ok_json};

async fn project(app: &TestApp, org: &str, auth: &str, name: &str) -> String {
    let p = ok_json(
        call(
            app,
            Method::POST,
            &format!("/v1/orgs/{org}/projects"),
            auth,
            Some(json!({ "name": name })),
        )
        .await,
        201,
    )
    .await;
    p["id"].as_str().unwrap().to_owned()
}

async fn reveal(app: &TestApp, path: &str, auth: &str) -> reqwest::Response {
    call(
        app,
        Method::POST,
        &format!("{path}/reveal"),
        auth,
        Some(json!({ "reason": "rotating the payment provider credentials" })),
    )
    .await
}

async fn revealed_value(app: &TestApp, path: &str, auth: &str) -> String {
    let res = reveal(app, path, auth).await;
    assert_eq!(
        res.headers()
            .get("cache-control")
            .map(|v| v.to_str().unwrap()),
        Some("no-store"),
        "a revealed value must not be cached"
    );
    ok_json(res, 200).await["value"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s1_s4_secrets_are_listed_without_values_and_revealed_only_with_the_permission_and_a_reason()
 {
    for app in backends(|_| {}).await {
        let alice = bearer(&signup_and_login(&app, "alice@a.example").await);
        let org = create_org(&app, &alice, "Acme").await;
        let (admin, _) = member(&app, &org, &alice, "admin@a.example", "admin").await;
        let (manager, _) = member(&app, &org, &alice, "manager@a.example", "manager").await;
        let (user, _) = member(&app, &org, &alice, "user@a.example", "user").await;
        let (viewer, _) = member(&app, &org, &alice, "viewer@a.example", "viewer").await;
        let (service, _) = api_key(&app, &org, &alice, "service").await;
        let (publishable, _) = api_key(&app, &org, &alice, "publishable").await;

        // Projects: Managers create them; viewers see them; below Manager nobody creates one.
        let res = call(
            &app,
            Method::POST,
            &format!("/v1/orgs/{org}/projects"),
            &user,
            Some(json!({ "name": "nope" })),
        )
        .await;
        assert_problem(res, 403, "permission_denied").await;
        let prj = project(&app, &org, &manager, "billing").await;
        let res = call(
            &app,
            Method::POST,
            &format!("/v1/orgs/{org}/projects"),
            &manager,
            Some(json!({ "name": "billing" })),
        )
        .await;
        assert_problem(res, 409, "project_exists").await;
        let listed = ok_json(
            call(
                &app,
                Method::GET,
                &format!("/v1/orgs/{org}/projects"),
                &viewer,
                None,
            )
            .await,
            200,
        )
        .await;
        assert_eq!(listed["projects"][0]["id"], prj.as_str());

        // Secrets: Managers write; Users list; values stay inside.
        let secrets = format!("/v1/orgs/{org}/projects/{prj}/secrets");
        let value = "sk_live_value-of-S1-test";
        let res = call(
            &app,
            Method::POST,
            &secrets,
            &user,
            Some(json!({ "name": "STRIPE_KEY", "value": value })),
        )
        .await;
        assert_problem(res, 403, "permission_denied").await;
        let created = ok_json(
            call(
                &app,
                Method::POST,
                &secrets,
                &manager,
                Some(json!({ "name": "STRIPE_KEY", "value": value })),
            )
            .await,
            201,
        )
        .await;
        assert_eq!(created["version"], 1);
        assert!(created.get("value").is_none(), "{created}");
        for (body, status, code) in [
            (
                json!({ "name": "STRIPE_KEY", "value": value }),
                409,
                "secret_exists",
            ),
            (
                json!({ "name": "1BAD", "value": value }),
                422,
                "invalid_field",
            ),
            (
                json!({ "name": "bad-name", "value": value }),
                422,
                "invalid_field",
            ),
            (
                json!({ "name": "EMPTY", "value": "" }),
                422,
                "invalid_field",
            ),
            (
                json!({ "name": "HUGE", "value": "x".repeat(64 * 1024 + 1) }),
                422,
                "invalid_field",
            ),
            (
                json!({ "name": "EXTRA", "value": value, "note": value }),
                422,
                "invalid_body",
            ),
        ] {
            let res = call(&app, Method::POST, &secrets, &manager, Some(body)).await;
            let text = format!("{:?}", res.headers());
            let problem = assert_problem(res, status, code).await;
            assert!(
                !problem.to_string().contains(value) && !text.contains(value),
                "an error echoed the value: {problem}"
            );
        }
        let list = ok_json(call(&app, Method::GET, &secrets, &user, None).await, 200).await;
        assert_eq!(list["secrets"].as_array().unwrap().len(), 1);
        assert_eq!(list["secrets"][0]["name"], "STRIPE_KEY");
        assert!(!list.to_string().contains(value), "a list showed the value");
        let res = call(&app, Method::GET, &secrets, &publishable, None).await;
        assert_problem(res, 403, "permission_denied").await;

        // Reveal: Admin and above (and the Admin-level service key), with a reason.
        let one = format!("{secrets}/STRIPE_KEY");
        for who in [&user, &manager] {
            let res = reveal(&app, &one, who).await;
            assert_problem(res, 403, "permission_denied").await;
        }
        for reason in [json!({}), json!({ "reason": "" }), json!({ "reason": "x" })] {
            let res = call(
                &app,
                Method::POST,
                &format!("{one}/reveal"),
                &admin,
                Some(reason),
            )
            .await;
            assert_eq!(res.status(), 422);
        }
        assert_eq!(revealed_value(&app, &one, &admin).await, value);
        assert_eq!(revealed_value(&app, &one, &service).await, value);

        // Update: a new version; the new value is what reveal returns.
        let updated = ok_json(
            call(
                &app,
                Method::PUT,
                &one,
                &manager,
                Some(json!({ "value": "sk_live_second" })),
            )
            .await,
            200,
        )
        .await;
        assert_eq!(updated["version"], 2);
        assert_eq!(revealed_value(&app, &one, &alice).await, "sk_live_second");
        let res = call(
            &app,
            Method::PUT,
            &format!("{secrets}/NOT_THERE"),
            &manager,
            Some(json!({ "value": "x" })),
        )
        .await;
        assert_eq!(res.status(), 404);

        // The trail: who revealed, why, and who was refused; never a value.
        let audit = ok_json(
            call(
                &app,
                Method::GET,
                &format!("/v1/orgs/{org}/audit"),
                &alice,
                None,
            )
            .await,
            200,
        )
        .await;
        let events = audit["events"].as_array().unwrap();
        let revealed: Vec<&Value> = events
            .iter()
            .filter(|e| e["action"] == "secret.revealed")
            .collect();
        assert_eq!(revealed.len(), 3, "{audit}");
        // `details` is the event's JSON text, as the chain hashed it.
        let details =
            |e: &Value| -> Value { serde_json::from_str(e["details"].as_str().unwrap()).unwrap() };
        assert!(
            revealed
                .iter()
                .all(|e| details(e)["reason"] == "rotating the payment provider credentials"),
            "{revealed:?}"
        );
        assert!(
            events
                .iter()
                .filter(|e| e["action"] == "permission.denied" && e["outcome"] == "denied")
                .count()
                >= 4
        );
        for action in ["project.created", "secret.created", "secret.updated"] {
            assert!(events.iter().any(|e| e["action"] == action), "no {action}");
        }
        let text = audit.to_string();
        assert!(!text.contains(value) && !text.contains("sk_live_second"));

        // Delete: the secret, then the project with what remains in it.
        ok_json(
            call(
                &app,
                Method::POST,
                &secrets,
                &manager,
                Some(json!({ "name": "OTHER", "value": "v" })),
            )
            .await,
            201,
        )
        .await;
        let res = call(&app, Method::DELETE, &one, &manager, None).await;
        assert_eq!(res.status(), 204);
        assert_eq!(reveal(&app, &one, &admin).await.status(), 404);
        let res = call(
            &app,
            Method::DELETE,
            &format!("/v1/orgs/{org}/projects/{prj}"),
            &manager,
            None,
        )
        .await;
        assert_eq!(res.status(), 204);
        let res = call(&app, Method::GET, &secrets, &admin, None).await;
        assert_eq!(res.status(), 404);
        assert_eq!(
            reveal(&app, &format!("{secrets}/OTHER"), &admin)
                .await
                .status(),
            404
        );
    }
}

/// Rotates the `secrets` key through a second handle on the same database (as the CLI does)
/// and waits until the server seals new values with it.
async fn rotate_and_wait(app: &TestApp, cli: &bastion_server::Bastion, path: &str, auth: &str) {
    let k = cli.rotate_key(Purpose::Secrets).await.unwrap();
    let want = format!("secrets-v{}", k.version);
    for _ in 0..200 {
        ok_json(
            call(
                app,
                Method::PUT,
                path,
                auth,
                Some(json!({ "value": "probe" })),
            )
            .await,
            200,
        )
        .await;
        let status = cli.vault.status().await.unwrap();
        if status.rows.iter().any(|c| c.key_id == want) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the server never picked up {want}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_rewrap_while_the_api_writes_keeps_every_latest_value_and_converges_to_one_key() {
    for app in backends(|c| c.keys.reload_secs = 1).await {
        let alice = bearer(&signup_and_login(&app, "alice@a.example").await);
        let org = create_org(&app, &alice, "Acme").await;
        let prj = project(&app, &org, &alice, "prod").await;
        let secrets = format!("/v1/orgs/{org}/projects/{prj}/secrets");
        let n = 60;
        let latest: Arc<Mutex<HashMap<String, String>>> = Arc::default();
        for i in 0..n {
            let (name, value) = (format!("S_{i}"), format!("v1-of-{i}"));
            ok_json(
                call(
                    &app,
                    Method::POST,
                    &secrets,
                    &alice,
                    Some(json!({ "name": name, "value": value })),
                )
                .await,
                201,
            )
            .await;
            latest.lock().unwrap().insert(name, value);
        }
        let cli = bastion_server::Bastion::open(&app.config).await.unwrap();
        rotate_and_wait(&app, &cli, &format!("{secrets}/S_0"), &alice).await;
        latest.lock().unwrap().insert("S_0".into(), "probe".into());

        // Retiring v1 now is refused: rows still use it.
        let err = cli.vault.retire(Purpose::Secrets, 2).await.unwrap_err();
        assert!(err.to_string().contains("still sealed"), "{err}");

        // Writers update every other secret while the rewrap walks them in small batches.
        let writer = {
            let (app_base, alice, secrets, latest) = (
                app.base.clone(),
                alice.clone(),
                secrets.clone(),
                latest.clone(),
            );
            tokio::spawn(async move {
                let http = crate::client();
                for round in 0..3 {
                    for i in (0..n).step_by(2) {
                        let value = format!("round-{round}-of-{i}");
                        let res = http
                            .put(format!("{app_base}{secrets}/S_{i}"))
                            .header("authorization", &alice)
                            .json(&json!({ "value": value }))
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(res.status(), 200);
                        latest.lock().unwrap().insert(format!("S_{i}"), value);
                    }
                }
            })
        };
        let reports = cli
            .vault
            .rewrap(
                Some(Purpose::Secrets),
                3,
                std::time::Duration::from_millis(5),
                &mut |_| {},
            )
            .await
            .unwrap();
        writer.await.unwrap();
        assert!(reports.iter().all(|r| r.failed.is_empty()), "{reports:?}");
        assert!(reports[0].rewrapped > 0, "{reports:?}");

        // Every secret holds the last value written, whoever wrote last.
        let latest = latest.lock().unwrap().clone();
        for (name, value) in latest {
            assert_eq!(
                revealed_value(&app, &format!("{secrets}/{name}"), &alice).await,
                value,
                "{name}"
            );
        }
        // One key seals everything now; v1 retires, and still everything opens.
        let status = cli.vault.status().await.unwrap();
        let keys: Vec<&str> = status
            .rows
            .iter()
            .filter(|c| c.column == bastion_store::SealedColumn::SecretValue)
            .map(|c| c.key_id.as_str())
            .collect();
        assert_eq!(keys, ["secrets-v2"], "{status:?}");
        assert_eq!(cli.vault.retire(Purpose::Secrets, 2).await.unwrap(), 1);
        assert!(
            cli.vault.retire(Purpose::Secrets, 3).await.is_err(),
            "the newest key cannot be retired"
        );
        assert_eq!(
            revealed_value(&app, &format!("{secrets}/S_1"), &alice).await,
            "v1-of-1"
        );
    }
}
