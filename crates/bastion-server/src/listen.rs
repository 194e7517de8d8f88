//! Accept loops: the API (plain or TLS), the HTTPS redirect listener and the metrics listener.
//! One loop serves every case, so plain and TLS connections get the same timeouts and
//! graceful shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `app` on `listener` until `shutdown` turns true, then drains open connections.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    header_read_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = crate::jobs::stopped(&mut shutdown) => break,
        };
        let _ = stream.set_nodelay(true);
        let svc = app.clone().map_request(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            req
        });
        let svc = TowerToHyperService::new(svc);
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => {
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                    let _ = watcher.watch(conn.into_owned()).await;
                }
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(tls_stream)) => {
                            let conn = builder
                                .serve_connection_with_upgrades(TokioIo::new(tls_stream), svc);
                            let _ = watcher.watch(conn.into_owned()).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain timeout; closing");
    }
}

/// Where a plain-HTTP request is sent: `public_url` if configured, else the request's host
/// name on the HTTPS port. Host names are checked so a header cannot inject a URL.
pub fn redirect_location(
    public_url: &str,
    host: Option<&str>,
    https_port: u16,
    path_and_query: &str,
) -> Option<String> {
    if !public_url.is_empty() {
        return Some(format!(
            "{}{path_and_query}",
            public_url.trim_end_matches('/')
        ));
    }
    let host = host?;
    let name = if let Some(rest) = host.strip_prefix('[') {
        let end = rest.find(']')?;
        let v6 = &rest[..end];
        v6.parse::<std::net::Ipv6Addr>().ok()?;
        format!("[{v6}]")
    } else {
        let name = host.split(':').next()?;
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        {
            return None;
        }
        name.to_ascii_lowercase()
    };
    let port = if https_port == 443 {
        String::new()
    } else {
        format!(":{https_port}")
    };
    Some(format!("https://{name}{port}{path_and_query}"))
}

/// The redirect-only listener (SPEC T2): every request gets a 308 to HTTPS, nothing else.
pub fn redirect_app(public_url: String, https_port: u16) -> Router {
    let public_url = Arc::new(public_url);
    Router::new().fallback(move |req: Request<Body>| {
        let public_url = public_url.clone();
        async move {
            let host = req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .or(req.uri().host());
            let pq = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            let mut res = Response::new(Body::empty());
            match redirect_location(&public_url, host, https_port, pq)
                .and_then(|l| HeaderValue::from_str(&l).ok())
            {
                Some(loc) => {
                    *res.status_mut() = StatusCode::PERMANENT_REDIRECT;
                    res.headers_mut().insert(header::LOCATION, loc);
                }
                None => *res.status_mut() = StatusCode::BAD_REQUEST,
            }
            res.headers_mut().insert(
                header::STRICT_TRANSPORT_SECURITY,
                HeaderValue::from_static(bastion_api::middleware::headers::HSTS),
            );
            Ok::<_, Infallible>(res)
        }
    })
}

/// The Prometheus scrape endpoint, on its own listener.
pub fn metrics_app(handle: metrics_exporter_prometheus::PrometheusHandle) -> Router {
    Router::new().route(
        "/metrics",
        axum::routing::get(move || async move { handle.render() }),
    )
}

/// Binds an address given in configuration.
pub async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    let addr: SocketAddr = addr.parse().map_err(|e| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{addr}: {e}"))
    })?;
    TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t2_redirect_targets_https_and_refuses_injected_hosts() {
        assert_eq!(
            redirect_location("", Some("Example.com:8080"), 8443, "/a?b=1").unwrap(),
            "https://example.com:8443/a?b=1"
        );
        assert_eq!(
            redirect_location("", Some("example.com"), 443, "/").unwrap(),
            "https://example.com/"
        );
        assert_eq!(
            redirect_location("", Some("[::1]:80"), 8443, "/").unwrap(),
            "https://[::1]:8443/"
        );
        assert_eq!(
            redirect_location("https://auth.example.com/", Some("evil.test"), 443, "/x").unwrap(),
            "https://auth.example.com/x"
        );
        assert!(redirect_location("", Some("evil.test/@x"), 443, "/").is_none());
        assert!(redirect_location("", None, 443, "/").is_none());
    }
}
