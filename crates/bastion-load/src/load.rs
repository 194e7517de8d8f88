//! Closed-loop HTTP/1.1 load: N keep-alive connections, each sending its next request as soon as
//! the previous answer has been read, so requests/s is the server's capacity at that concurrency.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::time::timeout;

/// A whole body in memory; `Bytes` clones by reference count, so a POST body costs no copy.
type Body = Full<Bytes>;

/// A request unanswered this long counts as an error; it also bounds how far a run can overrun.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a failed connect so a dead server does not turn the driver into a busy loop.
const RECONNECT_PAUSE: Duration = Duration::from_millis(10);

/// Where requests go and what they carry.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

impl Target {
    pub fn local(addr: SocketAddr, path: &str) -> Result<Self> {
        let uri: Uri = path.parse().with_context(|| format!("bad path {path:?}"))?;
        let mut headers = HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_str(&addr.to_string())?);
        Ok(Self {
            addr,
            method: Method::GET,
            uri,
            headers,
            body: Bytes::new(),
        })
    }

    /// A POST of `json` (serialised once; every request sends the same bytes).
    pub fn post_json(addr: SocketAddr, path: &str, json: &serde_json::Value) -> Result<Self> {
        Ok(Self::local(addr, path)?.with_json_body(Bytes::from(serde_json::to_vec(json)?)))
    }

    /// This target as a POST of `body`, already serialised JSON (e.g. the exact bytes a
    /// signature covers).
    pub fn with_json_body(mut self, body: Bytes) -> Self {
        self.method = Method::POST;
        self.headers
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        self.body = body;
        self
    }

    /// Adds a header, e.g. `Authorization: Bearer …`.
    pub fn with_header(mut self, name: HeaderName, value: &str) -> Result<Self> {
        self.headers.append(name, HeaderValue::from_str(value)?);
        Ok(self)
    }

    /// The bytes each request carries.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// A header's value, if set and visible ASCII.
    #[cfg(test)]
    pub fn header(&self, name: &HeaderName) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }

    /// Only loopback targets are accepted: this tool saturates whatever it points at.
    pub fn from_url(url: &str, extra_headers: &[String]) -> Result<Self> {
        let uri: Uri = url.parse().with_context(|| format!("bad url {url:?}"))?;
        ensure!(
            uri.scheme_str() == Some("http"),
            "only http:// urls are supported"
        );
        let host = uri.host().context("url has no host")?;
        let ip = if host.eq_ignore_ascii_case("localhost") {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .with_context(|| format!("host {host:?} is not an IP literal or localhost"))?
        };
        ensure!(
            ip.is_loopback(),
            "refusing to load a non-loopback address ({ip})"
        );
        let addr = SocketAddr::new(ip, uri.port_u16().unwrap_or(80));
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let mut target = Self::local(addr, path)?;
        for h in extra_headers {
            let (name, value) = h
                .split_once(':')
                .with_context(|| format!("header {h:?} is not 'Name: value'"))?;
            target.headers.append(
                HeaderName::from_bytes(name.trim().as_bytes())?,
                HeaderValue::from_str(value.trim())?,
            );
        }
        Ok(target)
    }

    fn request(&self) -> Result<Request<Body>> {
        let mut req = Request::builder()
            .method(self.method.clone())
            .uri(self.uri.clone())
            .body(Body::new(self.body.clone()))?;
        *req.headers_mut() = self.headers.clone();
        Ok(req)
    }
}

pub struct LoadConfig {
    pub connections: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// `None`: closed loop (the next request as soon as the answer is read). `Some(p)`: each
    /// connection starts a request every `p` at most, i.e. a probe that measures latency
    /// without itself taking much of the machine.
    pub pace: Option<Duration>,
}

/// Figures over the measured window. `requests` counts every answer (any status) completed in the
/// window; `errors` counts non-2xx answers plus transport failures and timeouts.
#[derive(Debug, Serialize)]
pub struct Stats {
    pub requests: u64,
    pub errors: u64,
    pub requests_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

#[derive(Default)]
struct Tally {
    latencies_ns: Vec<u64>,
    errors: u64,
}

/// Drives `target` for warm-up + duration and reports the duration window only.
pub async fn run(target: &Target, cfg: &LoadConfig) -> Result<Stats> {
    run_each(std::slice::from_ref(target), cfg).await
}

/// Like [`run`], connection `i` sending `targets[i % targets.len()]` (e.g. one session's
/// token per connection, as separate clients would).
pub async fn run_each(targets: &[Target], cfg: &LoadConfig) -> Result<Stats> {
    ensure!(!targets.is_empty(), "need at least one target");
    let workers = targets
        .iter()
        .cycle()
        .take(cfg.connections)
        .map(|t| {
            let t = t.clone();
            (t.addr, move |_: u64| t.request())
        })
        .collect();
    run_workers(workers, cfg).await
}

/// Like [`run`], connection `i`'s `n`-th request (from 0, warm-up included) being
/// `make(i, n)`, for scenarios where no two requests may be alike (e.g. a fresh signed webhook
/// event each time). Building the request is counted in its latency.
pub async fn run_generated<F>(addr: SocketAddr, cfg: &LoadConfig, make: F) -> Result<Stats>
where
    F: Fn(usize, u64) -> Result<Target> + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let workers = (0..cfg.connections)
        .map(|i| {
            let make = Arc::clone(&make);
            (addr, move |n: u64| make(i, n)?.request())
        })
        .collect();
    run_workers(workers, cfg).await
}

/// One connection per `(addr, next)`; `next(n)` builds that connection's `n`-th request.
async fn run_workers<F>(workers: Vec<(SocketAddr, F)>, cfg: &LoadConfig) -> Result<Stats>
where
    F: FnMut(u64) -> Result<Request<Body>> + Send + 'static,
{
    ensure!(cfg.connections > 0, "need at least one connection");
    ensure!(!cfg.duration.is_zero(), "duration must be positive");
    let warm_end = Instant::now() + cfg.warmup;
    let end = warm_end + cfg.duration;
    let workers: Vec<_> = workers
        .into_iter()
        .map(|(addr, next)| tokio::spawn(worker(addr, next, warm_end, end, cfg.pace)))
        .collect();
    let mut all = Tally::default();
    for w in workers {
        let t = w.await.context("load worker panicked")?;
        all.latencies_ns.extend(t.latencies_ns);
        all.errors += t.errors;
    }
    Ok(summarize(all, cfg.duration))
}

async fn worker<F>(
    addr: SocketAddr,
    mut next: F,
    warm_end: Instant,
    end: Instant,
    pace: Option<Duration>,
) -> Tally
where
    F: FnMut(u64) -> Result<Request<Body>>,
{
    let mut tally = Tally::default();
    let mut sent = 0u64;
    let mut conn: Option<SendRequest<Body>> = None;
    // Answers are attributed to the window by completion time, so nothing after `end` counts.
    let counts = |t: Instant| t >= warm_end && t <= end;
    let mut ticks = pace.map(|p| {
        let mut i = tokio::time::interval(p);
        // A slow answer delays the next request rather than triggering a catch-up burst.
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    while Instant::now() < end {
        if let Some(t) = ticks.as_mut() {
            t.tick().await;
        }
        // A server may close a keep-alive connection legitimately; reconnecting is not an error.
        if conn.as_ref().is_none_or(|c| c.is_closed()) {
            match timeout(REQUEST_TIMEOUT, connect(addr)).await {
                Ok(Ok(c)) => conn = Some(c),
                _ => {
                    tally.errors += u64::from(counts(Instant::now()));
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                    continue;
                }
            }
        }
        let Some(sender) = conn.as_mut() else {
            continue;
        };
        let start = Instant::now();
        let request = next(sent);
        sent += 1;
        let outcome = timeout(REQUEST_TIMEOUT, async { send(sender, request?).await }).await;
        let done = Instant::now();
        match outcome {
            Ok(Ok(status)) => {
                if counts(done) {
                    tally.latencies_ns.push(saturating_ns(done - start));
                    tally.errors += u64::from(!status.is_success());
                }
            }
            _ => {
                tally.errors += u64::from(counts(done));
                conn = None;
            }
        }
    }
    tally
}

pub(crate) async fn connect(addr: SocketAddr) -> Result<SendRequest<Body>> {
    let stream = TcpStream::connect(addr).await?;
    // Without it, Nagle plus delayed ACK adds tens of ms to small keep-alive requests.
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    // The connection task ends by itself when the sender is dropped or the peer closes.
    tokio::spawn(conn);
    Ok(sender)
}

pub(crate) async fn send(
    sender: &mut SendRequest<Body>,
    request: Request<Body>,
) -> Result<StatusCode> {
    sender.ready().await?;
    let resp = sender.send_request(request).await?;
    let status = resp.status();
    // The body must be drained before the connection can carry the next request.
    resp.into_body().collect().await?;
    Ok(status)
}

/// One request on a fresh connection; used to poll a starting server.
pub async fn probe(target: &Target) -> Result<StatusCode> {
    timeout(REQUEST_TIMEOUT, async {
        let mut sender = connect(target.addr).await?;
        send(&mut sender, target.request()?).await
    })
    .await
    .context("probe timed out")?
}

/// One request on a fresh connection, returning the status and the whole body (set-up steps:
/// sign-up, sign-in).
pub async fn fetch(target: &Target) -> Result<(StatusCode, Bytes)> {
    timeout(REQUEST_TIMEOUT, async {
        let mut sender = connect(target.addr).await?;
        sender.ready().await?;
        let resp = sender.send_request(target.request()?).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, body))
    })
    .await
    .context("request timed out")?
}

fn saturating_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Figures from latencies measured outside this module (e.g. a database reference loop).
pub fn stats_from(latencies_ns: Vec<u64>, errors: u64, window: Duration) -> Stats {
    summarize(
        Tally {
            latencies_ns,
            errors,
        },
        window,
    )
}

fn summarize(mut t: Tally, window: Duration) -> Stats {
    t.latencies_ns.sort_unstable();
    let l = &t.latencies_ns;
    // Nearest-rank percentile: the smallest sample with at least q of all samples at or below it.
    let pct = |q: f64| -> f64 {
        if l.is_empty() {
            return 0.0;
        }
        let rank = ((q * l.len() as f64).ceil() as usize).clamp(1, l.len());
        l[rank - 1] as f64 / 1_000.0
    };
    let requests = l.len() as u64;
    Stats {
        requests,
        errors: t.errors,
        requests_per_sec: requests as f64 / window.as_secs_f64(),
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        p999_us: pct(0.999),
        max_us: l.last().map_or(0.0, |&v| v as f64 / 1_000.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let t = Tally {
            latencies_ns: (1..=1000).rev().map(|v| v * 1_000).collect(),
            errors: 2,
        };
        let s = summarize(t, Duration::from_secs(2));
        assert_eq!(s.requests, 1000);
        assert_eq!(s.errors, 2);
        assert_eq!(s.requests_per_sec, 500.0);
        assert_eq!(
            (s.p50_us, s.p99_us, s.p999_us, s.max_us),
            (500.0, 990.0, 999.0, 1000.0)
        );
    }

    #[test]
    fn urls_must_be_loopback_http() {
        assert!(Target::from_url("http://127.0.0.1:8080/healthz", &[]).is_ok());
        assert!(
            Target::from_url(
                "http://localhost/x?y=1",
                &["Authorization: Bearer t".into()]
            )
            .is_ok()
        );
        assert!(Target::from_url("http://[::1]:9/", &[]).is_ok());
        assert!(Target::from_url("http://10.0.0.1/", &[]).is_err());
        assert!(Target::from_url("http://example.com/", &[]).is_err());
        assert!(Target::from_url("https://127.0.0.1/", &[]).is_err());
        assert!(Target::from_url("http://127.0.0.1/", &["no-colon".into()]).is_err());
    }
}
