//! The HTTP client against a local one-shot server: bodies, paths and error mapping.

use bastion_client::{Activated, Client, ClientError};
use secrecy::SecretString;

use crate::support::*;

const KEY: &str = "BSTL1.eyJ0ZXN0IjoidGVzdCJ9.c2lnbmF0dXJl";

#[tokio::test]
async fn activation_sends_the_key_and_email_only_in_the_body_and_returns_the_certificate() {
    let body = serde_json::json!({
        "license_id": LICENSE_ID,
        "machine_id": "mch_01test",
        "certificate": "BSTM1.x.y",
        "lease_expires_at": "2027-01-01T00:00:00Z",
        "entitlements": ["pro"],
    })
    .to_string();
    let (url, request) = serve_once(response("200 OK", "application/json", "", &body)).await;
    let client = Client::new(&format!("{url}/")).unwrap();
    let activated = client
        .activate(KEY, EMAIL, &machine_a(), "Ann's laptop")
        .await
        .unwrap();
    assert_eq!(
        activated,
        Activated {
            license_id: LICENSE_ID.into(),
            machine_id: "mch_01test".into(),
            certificate: "BSTM1.x.y".into(),
            lease_expires_at: "2027-01-01T00:00:00Z".into(),
            entitlements: vec!["pro".into()],
        }
    );

    let raw = request.await.unwrap();
    let (head, json) = split_request(&raw);
    assert!(
        head.starts_with("POST /v1/licenses/activate HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(!head.contains(KEY) && !head.contains(EMAIL), "{head}");
    assert_eq!(
        json,
        serde_json::json!({
            "key": KEY,
            "email": EMAIL,
            "machine": { "components": machine_a().components(), "name": "Ann's laptop" },
        })
    );
}

#[tokio::test]
async fn validate_deactivate_and_machines_post_the_documented_bodies() {
    let cert = serde_json::json!({
        "license_id": LICENSE_ID, "machine_id": "mch_1", "certificate": "BSTM1.a.b",
        "lease_expires_at": "2027-01-01T00:00:00Z", "entitlements": [],
    })
    .to_string();
    let (url, request) = serve_once(response("200 OK", "application/json", "", &cert)).await;
    Client::new(&url)
        .unwrap()
        .validate(KEY, EMAIL, &machine_a())
        .await
        .unwrap();
    let raw = request.await.unwrap();
    let (head, json) = split_request(&raw);
    assert!(head.starts_with("POST /v1/licenses/validate "), "{head}");
    assert_eq!(
        json,
        serde_json::json!({ "key": KEY, "email": EMAIL, "machine": { "components": machine_a().components() } })
    );

    let (url, request) = serve_once(response("204 No Content", "text/plain", "", "")).await;
    Client::new(&url)
        .unwrap()
        .deactivate(KEY, EMAIL, "mch_1")
        .await
        .unwrap();
    let raw = request.await.unwrap();
    let (head, json) = split_request(&raw);
    assert!(head.starts_with("POST /v1/licenses/deactivate "), "{head}");
    assert_eq!(
        json,
        serde_json::json!({ "key": KEY, "email": EMAIL, "machine_id": "mch_1" })
    );

    let list = r#"{"machines":[{"id":"mch_1","name":"laptop","activated_at":"2026-01-01T00:00:00Z","last_seen_at":"2026-02-01T00:00:00Z"}]}"#;
    let (url, request) = serve_once(response("200 OK", "application/json", "", list)).await;
    let machines = Client::new(&url)
        .unwrap()
        .machines(KEY, EMAIL)
        .await
        .unwrap();
    assert_eq!(machines.len(), 1);
    assert_eq!(machines[0].id, "mch_1");
    assert_eq!(machines[0].name, "laptop");
    let raw = request.await.unwrap();
    let (head, json) = split_request(&raw);
    assert!(head.starts_with("POST /v1/licenses/machines "), "{head}");
    assert_eq!(json, serde_json::json!({ "key": KEY, "email": EMAIL }));
}

#[tokio::test]
async fn problem_responses_become_server_errors_with_code_and_retry_after() {
    let problem = r#"{"type":"urn:bastion:problem:rate_limited","title":"Too Many Requests","status":429,"code":"rate_limited","detail":"too many requests; retry after 17 s"}"#;
    let (url, _req) = serve_once(response(
        "429 Too Many Requests",
        "application/problem+json",
        "retry-after: 17\r\n",
        problem,
    ))
    .await;
    let err = Client::new(&url)
        .unwrap()
        .activate(KEY, EMAIL, &machine_a(), "laptop")
        .await
        .unwrap_err();
    match &err {
        ClientError::Server {
            status,
            code,
            retry_after_secs,
        } => {
            assert_eq!(*status, 429);
            assert_eq!(code, "rate_limited");
            assert_eq!(*retry_after_secs, Some(17));
        }
        other => panic!("expected a server error, got {other:?}"),
    }
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(KEY) && !shown.contains(EMAIL), "{shown}");

    let problem = r#"{"type":"urn:bastion:problem:license_suspended","title":"Forbidden","status":403,"code":"license_suspended"}"#;
    let (url, _req) = serve_once(response(
        "403 Forbidden",
        "application/problem+json",
        "",
        problem,
    ))
    .await;
    assert!(matches!(
        Client::new(&url).unwrap().machines(KEY, EMAIL).await,
        Err(ClientError::Server { status: 403, ref code, retry_after_secs: None }) if code == "license_suspended"
    ));

    // A body that is not a problem document still gives the status.
    let (url, _req) = serve_once(response("502 Bad Gateway", "text/html", "", "<html>")).await;
    assert!(matches!(
        Client::new(&url).unwrap().public_keys().await,
        Err(ClientError::Server { status: 502, ref code, .. }) if code == "unknown"
    ));

    // A 2xx with a body of the wrong shape.
    let (url, _req) = serve_once(response("200 OK", "application/json", "", "{}")).await;
    assert!(matches!(
        Client::new(&url)
            .unwrap()
            .validate(KEY, EMAIL, &machine_a())
            .await,
        Err(ClientError::UnexpectedResponse(_))
    ));
}

#[test]
fn the_client_refuses_plain_http_to_remote_hosts_and_odd_product_ids() {
    for bad in [
        "http://licenses.example.com",
        "ftp://127.0.0.1",
        "not a url",
        "https://h/?q=1",
    ] {
        assert!(
            matches!(Client::new(bad), Err(ClientError::InvalidArgument(_))),
            "{bad} accepted"
        );
    }
    for good in [
        "https://licenses.example.com/base/",
        "http://localhost:8080",
        "http://[::1]:1",
    ] {
        assert!(Client::new(good).is_ok(), "{good} refused");
    }
    // Keeps the app's key a secret in its own types too.
    let _key = SecretString::from(KEY);
}

#[tokio::test]
async fn a_product_id_cannot_change_the_request_path() {
    let client = Client::new("http://127.0.0.1:9").unwrap();
    for bad in ["../public-keys", "prd_1/x", "", "prd_1?x=1"] {
        assert!(matches!(
            client.revocations(bad).await,
            Err(ClientError::InvalidArgument(_))
        ));
    }
}
