//! SPEC T5: the per-IP rate limit, its 429 answer, and the client IP it is keyed by.

use bastion_testkit::app::{Spawn, TestApp, spawn_app};

use crate::{assert_hardened, assert_problem, client};

/// Allows a burst of 2, then 1 request per second.
async fn tight_limit(trusted_proxies: &[&str]) -> TestApp {
    let trusted: Vec<_> = trusted_proxies.iter().map(|n| n.parse().unwrap()).collect();
    spawn_app(Spawn::default(), move |cfg| {
        cfg.rate_limit.per_ip_per_second = 1;
        cfg.rate_limit.burst = 2;
        cfg.http.trusted_proxies = trusted;
    })
    .await
    .unwrap()
}

/// Sends GET /healthz (with `X-Forwarded-For: xff(i)` when given) until a 429 or `max`
/// requests; returns the 429.
async fn until_limited(
    app: &TestApp,
    max: usize,
    xff: impl Fn(usize) -> Option<String>,
) -> Option<reqwest::Response> {
    let c = client();
    for i in 0..max {
        let mut req = c.get(app.url("/healthz"));
        if let Some(v) = xff(i) {
            req = req.header("x-forwarded-for", v);
        }
        let res = req.send().await.unwrap();
        if res.status() == 429 {
            return Some(res);
        }
        assert_eq!(res.status(), 200);
        assert_hardened(&res);
        assert!(res.headers().contains_key("ratelimit"));
        assert!(res.headers().contains_key("ratelimit-policy"));
    }
    None
}

#[tokio::test]
async fn t5_rate_limit_answers_429_problem_with_retry_after_and_ratelimit_fields() {
    let app = tight_limit(&[]).await;
    let res = until_limited(&app, 50, |_| None)
        .await
        .expect("a burst of 2 at 1/s must end in 429");
    let retry_after: u64 = res
        .headers()
        .get("retry-after")
        .expect("retry-after")
        .to_str()
        .unwrap()
        .parse()
        .expect("retry-after is a number of seconds");
    assert!(retry_after >= 1, "retry-after {retry_after}");
    let ratelimit = res.headers()["ratelimit"].to_str().unwrap().to_owned();
    assert!(ratelimit.contains("r=0"), "{ratelimit}");
    let policy = res.headers()["ratelimit-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(policy.contains("q=2"), "{policy}");
    assert_problem(res, 429, "rate_limited").await;
}

#[tokio::test]
async fn t5_spoofed_forwarded_for_from_untrusted_peer_does_not_dodge_the_limit() {
    let app = tight_limit(&[]).await;
    let res = until_limited(&app, 50, |i| Some(format!("203.0.113.{}", i + 1)))
        .await
        .expect("a fresh X-Forwarded-For per request must not reset the limit");
    assert_problem(res, 429, "rate_limited").await;
}

#[tokio::test]
async fn t5_trusted_proxy_forwarded_clients_get_separate_buckets() {
    let app = tight_limit(&["127.0.0.1/32"]).await;
    let first = until_limited(&app, 50, |_| Some("198.51.100.1".into()))
        .await
        .expect("one forwarded client is limited");
    assert_problem(first, 429, "rate_limited").await;

    let c = client();
    // Another client behind the same proxy has its own bucket.
    let other = c
        .get(app.url("/healthz"))
        .header("x-forwarded-for", "198.51.100.2")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);

    // A spoofed left-most entry does not buy the limited client a fresh bucket: the proxy
    // appends the real address, and the right-most untrusted hop is the one that counts.
    let spoofed = c
        .get(app.url("/healthz"))
        .header("x-forwarded-for", "192.0.2.99, 198.51.100.1")
        .send()
        .await
        .unwrap();
    assert_problem(spoofed, 429, "rate_limited").await;
}
