//! Integration tests of the Bastion process: the hardened HTTP stack, TLS, the redirect and
//! metrics listeners, readiness, graceful shutdown and the start-up audit event.
//! Each test starts its own server on a free port with a fresh data directory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod auth;
mod email_forms;
mod endpoints;
mod hardening;
mod jobs;
mod licenses;
mod lifecycle;
mod links;
mod listeners;
mod mail_budget;
mod orgs;
mod payments;
mod rate_limit;
mod secrets;
mod signin_limits;
mod stripe;
mod tls;
mod tokens;

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const HSTS: &str = "max-age=63072000; includeSubDomains; preload";
pub const CSP: &str = "default-src 'self'; frame-ancestors 'none'";

/// reqwest is built without a crypto provider of its own; it uses the process default.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// A client that talks to the test server only: no proxy from the environment, no redirects.
pub fn client() -> reqwest::Client {
    install_crypto_provider();
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn header<'a>(res: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    res.headers().get(name).map(|v| v.to_str().unwrap())
}

/// SPEC T2 / T4: the security headers and a request id are on every response.
pub fn assert_hardened(res: &reqwest::Response) {
    let status = res.status();
    assert_eq!(
        header(res, "strict-transport-security"),
        Some(HSTS),
        "HSTS on {status}"
    );
    assert_eq!(
        header(res, "content-security-policy"),
        Some(CSP),
        "CSP on {status}"
    );
    assert_eq!(
        header(res, "x-content-type-options"),
        Some("nosniff"),
        "nosniff on {status}"
    );
    assert_eq!(
        header(res, "referrer-policy"),
        Some("no-referrer"),
        "referrer on {status}"
    );
    let id = header(res, "x-request-id").unwrap_or_default();
    assert!(!id.is_empty(), "x-request-id on {status}");
}

/// An RFC 9457 problem with the given status and stable code; returns the document.
pub async fn assert_problem(res: reqwest::Response, status: u16, code: &str) -> serde_json::Value {
    assert_eq!(res.status().as_u16(), status);
    assert_hardened(&res);
    assert_eq!(
        header(&res, "content-type"),
        Some("application/problem+json"),
        "on {status}"
    );
    let request_id = header(&res, "x-request-id").unwrap().to_owned();
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["status"], status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(
        body["type"],
        format!("urn:bastion:problem:{code}"),
        "{body}"
    );
    assert!(
        body["title"].as_str().is_some_and(|t| !t.is_empty()),
        "{body}"
    );
    assert_eq!(body["request_id"], request_id, "{body}");
    body
}

/// A port that was free a moment ago (bind `:0`, read, release).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends `request` as written on a fresh connection and returns everything the server answers.
/// For requests a well-behaved client library would refuse to send (a forged `Host`).
pub async fn raw_http(addr: SocketAddr, request: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

/// The value of header `name` in a raw HTTP/1.1 response (names compared case-insensitively).
pub fn raw_header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    let head = response.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}
