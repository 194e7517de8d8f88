//! SPEC T2 (HSTS), T3 (request deadline), T4 (CSP): every response carries the security headers
//! and a request id, and every error is problem+json with a stable code; 5xx are opaque.

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bastion_testkit::app::{Spawn, spawn_app};

use crate::{assert_hardened, assert_problem, client};

const PANIC_MESSAGE: &str = "db password hunter2 leaked in panic";

#[tokio::test]
async fn t2_t4_security_headers_and_request_id_on_200() {
    let app = spawn_app(Spawn::default(), |_| {}).await.unwrap();
    let res = client().get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_hardened(&res);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["status"], "ok");
}

#[tokio::test]
async fn t2_t4_unknown_path_is_404_problem_with_security_headers() {
    let app = spawn_app(Spawn::default(), |_| {}).await.unwrap();
    let res = client()
        .get(app.url("/no/such/thing"))
        .send()
        .await
        .unwrap();
    assert_problem(res, 404, "not_found").await;
}

#[tokio::test]
async fn t2_t4_wrong_method_is_405_problem_with_security_headers() {
    let app = spawn_app(Spawn::default(), |_| {}).await.unwrap();
    let res = client().delete(app.url("/healthz")).send().await.unwrap();
    assert_problem(res, 405, "method_not_allowed").await;
}

#[tokio::test]
async fn t3_slow_request_is_408_problem_with_security_headers() {
    let slow = Router::new().route(
        "/slow",
        get(|| async {
            // The one sleep that must be real: a handler slower than the deadline.
            tokio::time::sleep(Duration::from_secs(2)).await;
            "too late"
        }),
    );
    let app = spawn_app(
        Spawn {
            extra: Some(slow),
            ..Default::default()
        },
        |cfg| cfg.http.request_timeout_ms = 200,
    )
    .await
    .unwrap();
    let res = client().get(app.url("/slow")).send().await.unwrap();
    assert_problem(res, 408, "request_timeout").await;
}

#[tokio::test]
async fn t2_t4_oversized_body_is_413_problem_with_security_headers() {
    let app = spawn_app(Spawn::default(), |cfg| cfg.http.body_limit_bytes = 1024)
        .await
        .unwrap();
    let res = client()
        .post(app.url("/healthz"))
        .body(vec![b'x'; 10 * 1024])
        .send()
        .await
        .unwrap();
    assert_problem(res, 413, "payload_too_large").await;
}

async fn boom() -> &'static str {
    panic!("{PANIC_MESSAGE}")
}

#[tokio::test]
async fn t2_t4_panic_is_opaque_500_problem_with_security_headers() {
    let extra = Router::new().route("/boom", get(boom));
    let app = spawn_app(
        Spawn {
            extra: Some(extra),
            ..Default::default()
        },
        |_| {},
    )
    .await
    .unwrap();
    let res = client().get(app.url("/boom")).send().await.unwrap();
    let body = assert_problem(res, 500, "internal_error").await;
    let text = body.to_string();
    assert!(
        !text.contains("hunter2"),
        "the panic message leaked: {text}"
    );
    assert!(!text.contains("panic"), "{text}");
    assert!(body.get("detail").is_none(), "5xx carry no detail: {text}");
    // The server survives the panic.
    let res = client().get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
}
