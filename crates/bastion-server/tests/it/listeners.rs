//! The side listeners: HTTP -> HTTPS redirect (SPEC T2) and Prometheus metrics.

use std::net::SocketAddr;

use bastion_testkit::app::{Spawn, spawn_app};

use crate::tls::{connector, https_get, self_signed, use_tls};
use crate::{HSTS, assert_problem, client, free_port, raw_header, raw_http};

#[tokio::test]
async fn t2_redirect_listener_sends_308_to_the_https_origin_and_refuses_forged_hosts() {
    let certs = self_signed();
    let port = free_port();
    let app = spawn_app(Spawn::default(), |cfg| {
        use_tls(cfg, certs.path(), "1.3");
        cfg.http_redirect_listen = format!("127.0.0.1:{port}");
    })
    .await
    .unwrap();
    // The redirect listener is bound before the API serves; a served HTTPS request proves both.
    let tls = connector(certs.path(), &[&rustls::version::TLS13]);
    https_get(app.addr, &tls, "/healthz").await.unwrap();

    let plain = SocketAddr::from(([127, 0, 0, 1], port));
    let res = raw_http(
        plain,
        &format!(
            "GET /some/path?x=1 HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert!(res.starts_with("HTTP/1.1 308"), "{res}");
    let tls_port = app.addr.port();
    assert_eq!(
        raw_header(&res, "location"),
        Some(format!("https://localhost:{tls_port}/some/path?x=1").as_str()),
        "{res}"
    );
    assert_eq!(raw_header(&res, "strict-transport-security"), Some(HSTS));

    // A Host header that would turn into another origin (userinfo trick) is refused.
    let res = raw_http(
        plain,
        "GET /x HTTP/1.1\r\nHost: evil.test/@x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(res.starts_with("HTTP/1.1 400"), "{res}");
    assert_eq!(raw_header(&res, "location"), None, "{res}");

    // The same through an ordinary client, which must not be followed anywhere but HTTPS.
    let res = client()
        .get(format!("http://127.0.0.1:{port}/a/b?c=d"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 308);
    assert_eq!(
        res.headers()["location"],
        format!("https://127.0.0.1:{tls_port}/a/b?c=d").as_str()
    );
}

#[tokio::test]
async fn metrics_are_served_on_their_own_listener_and_not_on_the_api() {
    let port = free_port();
    let app = spawn_app(Spawn::default(), |cfg| {
        cfg.metrics_listen = format!("127.0.0.1:{port}");
    })
    .await
    .unwrap();
    let c = client();
    let res = c.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);

    let res = c
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    assert!(text.contains("bastion_http_requests_total"), "{text}");
    assert!(text.contains("route=\"/healthz\""), "{text}");

    let res = c.get(app.url("/metrics")).send().await.unwrap();
    assert_problem(res, 404, "not_found").await;
}
