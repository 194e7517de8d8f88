//! The background jobs a claim depends on, run by the server itself on a clock the test moves
//! (SPEC A5: scheduled rotation of the token-signing key; A6: automatic cleanup). The jobs tick
//! every second here; the test waits for their effect, bounded, never for a fixed time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bastion_core::clock::ManualClock;
use bastion_core::{Clock, SystemClock};
use bastion_testkit::app::{Spawn, TestApp, spawn_app};
use serde_json::{Value, json};

use crate::auth::signup_and_login;
use crate::client;

const DAY_MS: i64 = 86_400_000;

/// Polls `probe` until it returns `Some`, for at most 30 s (a job ticks every second).
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn jwks_kids(app: &TestApp) -> Vec<String> {
    let set: Value = client()
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    set["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

fn kid_of(token: &str) -> String {
    use base64::Engine;
    let head = token.split('.').next().unwrap();
    let head = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head)
        .unwrap();
    let head: Value = serde_json::from_slice(&head).unwrap();
    head["kid"].as_str().unwrap().to_owned()
}

/// A5: once the token key is `rotate_after_days` old (365 by default), the server's own job
/// rotates it: a new key signs new tokens, and the old one stays published so tokens it signed
/// keep verifying. Nothing rotates before the age is reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a5_the_server_rotates_the_token_key_on_schedule_and_keeps_the_old_one_published() {
    let clock = Arc::new(ManualClock::new(SystemClock.now_ms()));
    let app = spawn_app(
        Spawn {
            clock: Some(clock.clone()),
            ..Default::default()
        },
        |c| c.keys.reload_secs = 1,
    )
    .await
    .unwrap();
    let tokens = signup_and_login(&app, "rota@example.com").await;
    let first_kid = kid_of(tokens["access_token"].as_str().unwrap());
    assert_eq!(jwks_kids(&app).await, std::slice::from_ref(&first_kid));
    // Not yet due: a day short of a year, through several ticks of the job.
    clock.advance_ms(364 * DAY_MS);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        jwks_kids(&app).await,
        std::slice::from_ref(&first_kid),
        "rotated too early"
    );
    // Due: the job rotates, and keeps the old key published.
    clock.advance_ms(DAY_MS + 1);
    let kids = eventually("scheduled rotation", || async {
        let kids = jwks_kids(&app).await;
        (kids.len() == 2).then_some(kids)
    })
    .await;
    assert!(kids.contains(&first_kid), "{kids:?}");
    let res = client()
        .post(app.url("/v1/auth/login"))
        .json(&json!({ "email": "rota@example.com", "password": "correct horse battery staple" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let fresh: Value = res.json().await.unwrap();
    let new_kid = kid_of(fresh["access_token"].as_str().unwrap());
    assert_ne!(new_kid, first_kid, "new tokens are signed by the new key");
    assert!(kids.contains(&new_kid), "{kids:?}");
}

/// A6: the server's cleanup job removes what has ended, by itself: a session past its idle
/// expiry (7 days) and a used magic link are gone from the database once the clock has moved,
/// while a live session stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a6_the_server_cleans_up_ended_sessions_and_links_by_itself() {
    let clock = Arc::new(ManualClock::new(SystemClock.now_ms()));
    let app = spawn_app(
        Spawn {
            clock: Some(clock.clone()),
            ..Default::default()
        },
        |c| c.cleanup.interval_secs = 1,
    )
    .await
    .unwrap();
    // A session, and the used verification link behind it.
    signup_and_login(&app, "old@example.com").await;
    let db = format!(
        "sqlite://{}",
        app.config.data_dir.join("bastion.db").display()
    );
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    let count = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(count("SELECT count(*) FROM sessions").await, 1);
    assert!(count("SELECT count(*) FROM magic_links").await >= 1);
    // Eight days later, with a fresh session signed in just now.
    clock.advance_ms(8 * DAY_MS);
    let res = client()
        .post(app.url("/v1/auth/login"))
        .json(&json!({ "email": "old@example.com", "password": "correct horse battery staple" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    eventually("cleanup of the idle session and the used link", || async {
        let sessions = count("SELECT count(*) FROM sessions").await;
        let links = count("SELECT count(*) FROM magic_links").await;
        (sessions == 1 && links == 0).then_some(())
    })
    .await;
    pool.close().await;
}
