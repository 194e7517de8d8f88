//! Accounts, sign-in, refresh and sessions over HTTP (SPEC A1–A4, A8).

use bastion_store::{AccountStore, Scope, UserRow};
use bastion_testkit::app::{Spawn, TestApp, spawn_app};
use serde_json::{Value, json};

use crate::{assert_hardened, assert_problem, client};

const PASSWORD: &str = "correct horse battery staple";

async fn app(tweak: impl FnOnce(&mut bastion_server::Config)) -> TestApp {
    spawn_app(Spawn::default(), tweak).await.unwrap()
}

pub(crate) async fn post(app: &TestApp, path: &str, body: Value) -> reqwest::Response {
    client()
        .post(app.url(path))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Signs up, opens the verification mail, follows its link and signs in.
pub async fn signup_and_login(app: &TestApp, email: &str) -> Value {
    let res = post(
        app,
        "/v1/auth/signup",
        json!({ "email": email, "password": PASSWORD }),
    )
    .await;
    assert_eq!(res.status(), 202);
    let token = app.link_token(email, 1).await;
    let res = post(app, "/v1/auth/verify-email", json!({ "token": token })).await;
    assert_eq!(res.status(), 204);
    let res = post(
        app,
        "/v1/auth/login",
        json!({ "email": email, "password": PASSWORD, "device_name": "laptop" }),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_hardened(&res);
    res.json().await.unwrap()
}

fn bearer(tokens: &Value) -> String {
    format!("Bearer {}", tokens["access_token"].as_str().unwrap())
}

#[tokio::test]
async fn a1_a2_signup_login_me_refresh_and_logout() {
    let app = app(|_| {}).await;
    let tokens = signup_and_login(&app, "Ada@Example.com").await;
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 900, "15-minute access tokens");
    assert!(
        tokens["refresh_token"]
            .as_str()
            .unwrap()
            .starts_with("bst_rt_")
    );

    let me: Value = client()
        .get(app.url("/v1/me"))
        .header("authorization", bearer(&tokens))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["email"], "ada@example.com", "normalised");
    assert_eq!(me["email_verified"], true, "the link verified it");

    let res = post(
        &app,
        "/v1/auth/refresh",
        json!({ "refresh_token": tokens["refresh_token"] }),
    )
    .await;
    assert_eq!(res.status(), 200);
    let rotated: Value = res.json().await.unwrap();
    assert_ne!(rotated["refresh_token"], tokens["refresh_token"]);

    let res = client()
        .post(app.url("/v1/auth/logout"))
        .header("authorization", bearer(&rotated))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let res = client()
        .get(app.url("/v1/me"))
        .header("authorization", bearer(&rotated))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["www-authenticate"], "Bearer");
    assert_problem(res, 401, "invalid_token").await;
    let res = post(
        &app,
        "/v1/auth/refresh",
        json!({ "refresh_token": rotated["refresh_token"] }),
    )
    .await;
    assert_problem(res, 401, "invalid_token").await;

    let res = client().get(app.url("/v1/me")).send().await.unwrap();
    assert_problem(res, 401, "missing_token").await;
}

#[tokio::test]
async fn a8_lockout_answers_alike_for_known_and_unknown_accounts() {
    let app = app(|c| c.auth.login_max_failures = 3).await;
    signup_and_login(&app, "known@example.com").await;
    for email in ["known@example.com", "nobody@example.com"] {
        let mut seen = Vec::new();
        for _ in 0..4 {
            let res = post(
                &app,
                "/v1/auth/login",
                json!({ "email": email, "password": "wrong password!" }),
            )
            .await;
            let status = res.status().as_u16();
            let retry = res
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
            let body: Value = res.json().await.unwrap();
            seen.push((
                status,
                body["code"].as_str().unwrap().to_owned(),
                retry.is_some_and(|r| r > 0),
            ));
        }
        assert_eq!(
            seen,
            vec![
                (401, "invalid_credentials".into(), false),
                (401, "invalid_credentials".into(), false),
                (401, "invalid_credentials".into(), false),
                (429, "login_locked".into(), true),
            ],
            "{email}"
        );
    }
    // Locked means locked: the right password does not get through either.
    let res = post(
        &app,
        "/v1/auth/login",
        json!({ "email": "known@example.com", "password": PASSWORD }),
    )
    .await;
    assert_eq!(res.status(), 429);
}

/// Twenty concurrent sign-ins with a wrong password, spread over `apps`; their statuses.
async fn wrong_password_burst(apps: &[&TestApp], email: &str) -> Vec<u16> {
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let url = apps[i % apps.len()].url("/v1/auth/login");
            let body = json!({ "email": email, "password": "guess guess" });
            tokio::spawn(async move {
                let res = client().post(url).json(&body).send().await.unwrap();
                crate::signin_limits::checked(res).await
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a8_twenty_concurrent_wrong_passwords_are_evaluated_at_most_ten_times() {
    let app = app(|_| {}).await;
    signup_and_login(&app, "target@example.com").await;
    let statuses = wrong_password_burst(&[&app], "target@example.com").await;
    // The successful login above cleared the counter: 10 evaluations, 10 refusals.
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        10,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        10,
        "{statuses:?}"
    );
}

#[tokio::test]
async fn a1_bad_input_is_a_4xx_problem_that_echoes_no_secret() {
    let app = app(|_| {}).await;
    let secret_number = 918_273_645_u64;
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            client()
                .post(app.url("/v1/auth/signup"))
                .header("content-type", "application/json")
                .body("{\"email\": "),
            400,
            "malformed_json",
        ),
        (
            client().post(app.url("/v1/auth/signup")).body("email=a"),
            415,
            "unsupported_media_type",
        ),
        (
            client()
                .post(app.url("/v1/auth/signup"))
                .json(&json!({ "email": "a@example.com", "password": secret_number })),
            422,
            "invalid_body",
        ),
        (
            client()
                .post(app.url("/v1/auth/signup"))
                .json(&json!({ "email": "a@example.com" })),
            422,
            "invalid_body",
        ),
        (
            client()
                .post(app.url("/v1/auth/signup"))
                .json(&json!({ "email": "a@example.com", "password": PASSWORD, "admin": true })),
            422,
            "invalid_body",
        ),
        (
            client()
                .post(app.url("/v1/auth/signup"))
                .json(&json!({ "email": "not-an-email", "password": PASSWORD })),
            422,
            "invalid_email",
        ),
        (
            client()
                .post(app.url("/v1/auth/signup"))
                .json(&json!({ "email": "b@example.com", "password": "short" })),
            422,
            "weak_password",
        ),
        (
            client()
                .post(app.url("/v1/auth/signup"))
                .json(&json!({ "email": "c@example.com", "password": "x".repeat(10 << 20) })),
            413,
            "payload_too_large",
        ),
        (
            client()
                .post(app.url("/v1/auth/refresh"))
                .json(&json!({ "refresh_token": "bst_rt_forged" })),
            401,
            "invalid_token",
        ),
    ];
    for (req, status, code) in cases {
        let res = req.send().await.unwrap();
        let body = assert_problem(res, status, code).await;
        assert!(
            !body.to_string().contains(&secret_number.to_string()),
            "{body}"
        );
    }
}

#[tokio::test]
async fn a4_sessions_are_listed_and_revoked_one_by_one_or_all_but_current() {
    let app = app(|_| {}).await;
    let first = signup_and_login(&app, "multi@example.com").await;
    let mut others = Vec::new();
    for _ in 0..2 {
        let res = post(
            &app,
            "/v1/auth/login",
            json!({ "email": "multi@example.com", "password": PASSWORD, "device_name": "phone" }),
        )
        .await;
        others.push(res.json::<Value>().await.unwrap());
    }
    let list: Vec<Value> = client()
        .get(app.url("/v1/sessions"))
        .header("authorization", bearer(&first))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(list.iter().filter(|s| s["current"] == true).count(), 1);
    assert!(list.iter().any(|s| s["device_name"] == "phone"));

    // Someone else cannot revoke these (404, not 403).
    let stranger = signup_and_login(&app, "stranger@example.com").await;
    let res = client()
        .delete(app.url(&format!(
            "/v1/sessions/{}",
            others[0]["session_id"].as_str().unwrap()
        )))
        .header("authorization", bearer(&stranger))
        .send()
        .await
        .unwrap();
    assert_problem(res, 404, "not_found").await;

    let res = client()
        .delete(app.url(&format!(
            "/v1/sessions/{}",
            others[0]["session_id"].as_str().unwrap()
        )))
        .header("authorization", bearer(&first))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let res = client()
        .get(app.url("/v1/me"))
        .header("authorization", bearer(&others[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        401,
        "a revoked session's access token stops working"
    );

    let res = client()
        .delete(app.url("/v1/sessions?except=current"))
        .header("authorization", bearer(&first))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(
        client()
            .get(app.url("/v1/me"))
            .header("authorization", bearer(&others[1]))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        client()
            .get(app.url("/v1/me"))
            .header("authorization", bearer(&first))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn a1_an_imported_bcrypt_hash_signs_in_and_is_upgraded_to_argon2id() {
    let app = app(|_| {}).await;
    let store = bastion_store_sqlite::SqliteStore::open_in_dir(&app.config.data_dir)
        .await
        .unwrap();
    let imported = bcrypt::hash(PASSWORD, 12)
        .unwrap()
        .replacen("$2b$", "$2y$", 1);
    let user = UserRow {
        id: "usr_imported".into(),
        email: "old@example.com".into(),
        email_verified_ms: Some(1),
        password_hash: Some(imported),
        super_admin: false,
        created_ms: 1,
        updated_ms: 1,
    };
    store
        .create_user(&Scope::System("import"), &user)
        .await
        .unwrap();
    let res = post(
        &app,
        "/v1/auth/login",
        json!({ "email": "old@example.com", "password": PASSWORD }),
    )
    .await;
    assert_eq!(res.status(), 200);
    let after = store
        .user_by_id(&Scope::System("test"), "usr_imported")
        .await
        .unwrap()
        .unwrap();
    assert!(
        after.password_hash.unwrap().starts_with("$argon2id$"),
        "upgraded on login"
    );
    let res = post(
        &app,
        "/v1/auth/login",
        json!({ "email": "old@example.com", "password": PASSWORD }),
    )
    .await;
    assert_eq!(res.status(), 200, "and the upgraded hash works");
}

#[tokio::test]
async fn a1_a4_password_change_needs_the_current_password_and_ends_other_sessions() {
    let app = app(|_| {}).await;
    let here = signup_and_login(&app, "pw@example.com").await;
    let other = post(
        &app,
        "/v1/auth/login",
        json!({ "email": "pw@example.com", "password": PASSWORD }),
    )
    .await
    .json::<Value>()
    .await
    .unwrap();
    let change = |current: &str, new: &str| {
        client()
            .post(app.url("/v1/me/password"))
            .header("authorization", bearer(&here))
            .json(&json!({ "current_password": current, "new_password": new }))
            .send()
    };
    assert_problem(
        change("wrong current", "a brand new passphrase")
            .await
            .unwrap(),
        401,
        "invalid_credentials",
    )
    .await;
    assert_problem(
        change(PASSWORD, "short").await.unwrap(),
        422,
        "weak_password",
    )
    .await;
    assert_eq!(
        change(PASSWORD, "a brand new passphrase")
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        client()
            .get(app.url("/v1/me"))
            .header("authorization", bearer(&here))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        client()
            .get(app.url("/v1/me"))
            .header("authorization", bearer(&other))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let old = post(
        &app,
        "/v1/auth/login",
        json!({ "email": "pw@example.com", "password": PASSWORD }),
    )
    .await;
    assert_eq!(old.status(), 401);
    let new = post(
        &app,
        "/v1/auth/login",
        json!({ "email": "pw@example.com", "password": "a brand new passphrase" }),
    )
    .await;
    assert_eq!(new.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a8_twenty_concurrent_wrong_passwords_across_two_servers_sharing_postgres_are_evaluated_at_most_ten_times()
 {
    let Some(first) = spawn_app(
        Spawn {
            postgres: true,
            ..Default::default()
        },
        |_| {},
    )
    .await
    else {
        return;
    };
    // Before the second node exists, whose mail dispatcher could deliver the verification
    // mail into its own outbox.
    signup_and_login(&first, "shared@example.com").await;
    // A second node: same database, same master key, its own process state.
    let shared_db = first.config.database_url.clone();
    let key = first.data_dir.path().join("master.key");
    let second = spawn_app(Spawn::default(), |c| {
        c.database_url = shared_db;
        std::fs::copy(&key, c.data_dir.join("master.key")).unwrap();
    })
    .await
    .unwrap();
    let statuses = wrong_password_burst(&[&first, &second], "shared@example.com").await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        10,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        10,
        "{statuses:?}"
    );
    // Either node now refuses even the right password until the lock ends.
    let res = post(
        &second,
        "/v1/auth/login",
        json!({ "email": "shared@example.com", "password": PASSWORD }),
    )
    .await;
    assert_problem(res, 429, "login_locked").await;
}

#[tokio::test]
async fn r4_the_server_serves_through_a_runtime_role_and_uses_the_owner_only_to_migrate() {
    // A migrated database first: the roles are created by its migrations.
    let Some(db) = bastion_testkit::pg::PgTestDb::create().await else {
        return;
    };
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    sqlx::query(
        "DO $$ BEGIN \
           IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bastion_test_runtime') THEN \
             CREATE ROLE bastion_test_runtime LOGIN; \
           END IF; \
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("GRANT bastion_app, bastion_system TO bastion_test_runtime")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let app = spawn_app(Spawn::default(), |c| {
        c.database_migrate_url = db.url.clone();
        let (scheme, rest) = db.url.split_once("://").unwrap();
        let host = rest.split_once('@').map_or(rest, |(_, h)| h);
        c.database_url = format!("{scheme}://bastion_test_runtime@{host}");
    })
    .await
    .unwrap();
    let tokens = signup_and_login(&app, "runtime@example.com").await;
    let res = client()
        .get(app.url("/v1/me"))
        .header("authorization", bearer(&tokens))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}
