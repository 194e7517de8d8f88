//! One mailbox is one account (SPEC A1): addresses are normalized (NFKC, invisible characters
//! removed, lower-cased, the domain in its UTS 46 ASCII form) before they are stored or compared,
//! and addresses stored under the older rule are rewritten at start-up, collisions reported and
//! never merged. Each scenario runs on SQLite and, when configured, on PostgreSQL.

use std::sync::Arc;

use bastion_store::{Scope, Store};
use bastion_testkit::app::{Spawn, TestApp, spawn_app};
use serde_json::{Value, json};

use crate::auth::post;
use crate::auth::signup_and_login;
use crate::orgs::backends;
use crate::signin_limits::audit_rows;
use crate::{assert_problem, client};

const PASSWORD: &str = "correct horse battery staple";
const SYS: Scope = Scope::System("test");

/// The app's own database, opened beside it the way an operator's tool would.
async fn store_of(app: &TestApp) -> Arc<dyn Store> {
    let url = &app.config.database_url;
    if url.starts_with("postgres") {
        Arc::new(
            bastion_store_postgres::PgStore::connect(url, 2)
                .await
                .unwrap(),
        )
    } else {
        Arc::new(
            bastion_store_sqlite::SqliteStore::open_in_dir(&app.config.data_dir)
                .await
                .unwrap(),
        )
    }
}

/// Signs in as `email`; the account it reaches (`/v1/me`), or the failed status.
async fn sign_in(app: &TestApp, email: &str, password: &str) -> Result<Value, u16> {
    let res = post(
        app,
        "/v1/auth/login",
        json!({ "email": email, "password": password }),
    )
    .await;
    if res.status() != 200 {
        return Err(res.status().as_u16());
    }
    let tokens: Value = res.json().await.unwrap();
    let me = client()
        .get(app.url("/v1/me"))
        .bearer_auth(tokens["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    Ok(me.json().await.unwrap())
}

#[tokio::test]
async fn a1_one_mailbox_in_several_unicode_forms_is_one_account() {
    for app in backends(|_| {}).await {
        let normal = "ada@xn--bcher-kva.example";
        let first = post(
            &app,
            "/v1/auth/signup",
            json!({ "email": "ada@bücher.example", "password": PASSWORD }),
        )
        .await;
        let (status, body) = (first.status(), first.text().await.unwrap());
        assert_eq!(status, 202);
        app.wait_for_mail(normal, 1).await;
        // Fullwidth letters, Punycode, a zero-width space, capitals: the same mailbox.
        for other in ["ＡＤＡ@xn--bcher-kva.example", "a\u{200B}da@BÜCHER.example"] {
            let res = post(
                &app,
                "/v1/auth/signup",
                json!({ "email": other, "password": "an attacker's passphrase" }),
            )
            .await;
            assert_eq!(
                (res.status(), res.text().await.unwrap()),
                (status, body.clone()),
                "{other:?} answers like any sign-up"
            );
        }
        let mails = app.wait_for_mail(normal, 3).await;
        for notice in &mails[1..] {
            assert!(
                notice.subject().contains("already have"),
                "{}",
                notice.subject()
            );
        }
        let users = store_of(&app)
            .await
            .users_page(&SYS, None, 100)
            .await
            .unwrap();
        assert_eq!(
            users.iter().map(|u| u.email.as_str()).collect::<Vec<_>>(),
            [normal],
            "one account, stored in the normal form"
        );

        let token = mails[0].link_token().unwrap();
        let res = post(&app, "/v1/auth/verify-email", json!({ "token": token })).await;
        assert_eq!(res.status(), 204);
        for form in [
            "ada@bücher.example",
            "ＡＤＡ@xn--bcher-kva.example",
            "a\u{200B}da@BÜCHER.example",
            normal,
        ] {
            let me = sign_in(&app, form, PASSWORD).await.unwrap();
            assert_eq!(me["id"], users[0].id.as_str(), "{form:?}");
            assert_eq!(me["email"], normal);
        }
        assert_eq!(
            sign_in(&app, "ada@bücher.example", "an attacker's passphrase").await,
            Err(401),
            "the later sign-ups changed nothing"
        );
        // Forms that do not survive normalization are refused at the edge.
        for bad in ["ada@xn--a.example", "\u{200B}@example.com"] {
            let res = post(
                &app,
                "/v1/auth/signup",
                json!({ "email": bad, "password": PASSWORD }),
            )
            .await;
            assert_problem(res, 422, "invalid_email").await;
        }
    }
}

#[tokio::test]
async fn a1_start_up_rewrites_addresses_stored_in_an_old_form_and_reports_collisions() {
    for first in backends(|_| {}).await {
        // An account whose row an older rule (lower-case only) stored in its Unicode form, and
        // two accounts that are one mailbox under the current rule.
        let ada = signup_and_login(&first, "ada@xn--bcher-kva.example").await;
        let store = store_of(&first).await;
        let ada_id = store
            .user_by_email(&SYS, "ada@xn--bcher-kva.example")
            .await
            .unwrap()
            .unwrap()
            .id;
        assert!(ada["access_token"].is_string());
        assert!(
            store
                .set_email(
                    &SYS,
                    &ada_id,
                    "ada@xn--bcher-kva.example",
                    "ada@bücher.example",
                    1
                )
                .await
                .unwrap()
        );
        for (id, email) in [
            ("usr_bob_ascii", "bob@xn--bcher-kva.example"),
            ("usr_bob_unicode", "bob@bücher.example"),
        ] {
            let row = bastion_store::UserRow {
                id: id.into(),
                email: email.into(),
                email_verified_ms: Some(1),
                password_hash: None,
                super_admin: false,
                created_ms: 1,
                updated_ms: 1,
            };
            store.create_user(&SYS, &row).await.unwrap();
        }
        assert_eq!(
            sign_in(&first, "ada@bücher.example", PASSWORD).await,
            Err(401),
            "before the pass, the old row is out of reach"
        );

        // A (re)start over the same database runs the pass before it serves.
        let (url, dir) = (
            first.config.database_url.clone(),
            first.config.data_dir.clone(),
        );
        let restarted = spawn_app(Spawn::default(), move |c| {
            c.rate_limit.per_ip_per_second = 0;
            c.database_url = url;
            c.data_dir = dir;
        })
        .await
        .unwrap();
        let emails = |rows: Vec<bastion_store::UserRow>| {
            let mut v: Vec<(String, String)> = rows.into_iter().map(|u| (u.id, u.email)).collect();
            v.sort();
            v
        };
        let mut want = vec![
            (ada_id.clone(), "ada@xn--bcher-kva.example".to_owned()),
            (
                "usr_bob_ascii".to_owned(),
                "bob@xn--bcher-kva.example".to_owned(),
            ),
            (
                "usr_bob_unicode".to_owned(),
                "bob@bücher.example".to_owned(),
            ),
        ];
        want.sort();
        assert_eq!(
            emails(store.users_page(&SYS, None, 100).await.unwrap()),
            want,
            "the old form rewritten; the colliding pair left as it was"
        );
        let me = sign_in(&restarted, "ＡＤＡ@BÜCHER.example", PASSWORD)
            .await
            .unwrap();
        assert_eq!(me["id"], ada_id.as_str());
        let collisions: Vec<Value> = audit_rows(&restarted, "account.email_collision")
            .await
            .iter()
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        assert_eq!(
            collisions,
            [json!({ "users": ["usr_bob_ascii", "usr_bob_unicode"] })]
        );
        assert_eq!(
            audit_rows(&restarted, "account.email_normalized")
                .await
                .len(),
            1
        );
        drop(restarted);
    }
}
