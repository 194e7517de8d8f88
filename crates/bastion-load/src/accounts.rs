//! Account scenarios against a real `bastion serve` (release binary, fresh data dir, SQLite),
//! each figure beside a baseline taken in the same run:
//! - `auth-me`: authenticated `GET /v1/me` (JWT check, session liveness, user read) against
//!   `/healthz` on the same server, same connections and duration;
//! - `login-storm`: many clients signing in with the right password, round robin over many
//!   accounts, with production Argon2id and production sign-in limits, while one connection
//!   probes `/healthz`; honest sign-ins/s against the rate of `cores` threads hashing at once in
//!   this process, and against "cores ÷ single-hash time", the hash timed with the same
//!   parameters before and after the storm. Any refused sign-in fails the run.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use clap::Args;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use serde::Serialize;
use serde_json::json;
use tokio::time::timeout;

use crate::load::{self, LoadConfig, Stats, Target};
use crate::{Guard, LoadArgs, bastion_command, fmt_latency, free_port, print_table, wait_healthy};

/// The one account of the scenarios that need a single user (`auth-me`, `licenses`, `payments`).
const EMAIL: &str = "load@example.com";
const PASSWORD: &str = "correct horse battery staple";
/// Verification mail is written by the outbox dispatcher, which new mail wakes at once.
const MAIL_TIMEOUT: Duration = Duration::from_secs(30);
/// Access tokens live 15 minutes; a run must finish well inside one token's life.
const MAX_TOKEN_USE: Duration = Duration::from_secs(600);
/// Targets from the accounts issue, printed beside the figures.
const ME_TARGET_PCT: f64 = 40.0;
const STORM_PROBE_P99_TARGET_MS: f64 = 25.0;
const STORM_PARALLEL_TARGET_PCT: f64 = 90.0;
/// Printed and recorded in place of the sign-in limit overrides earlier versions applied: the
/// storm is honest traffic, which production's limits must never refuse.
const SIGN_IN_LIMITS: &str = "production defaults: auth.login_max_failures, \
     auth.login_ip_max_failures and auth.login_ip_max_accounts are not overridden";
/// `bastion_command` turns the generic per-IP HTTP limiter off for every scenario. It is not a
/// sign-in limit: it shapes all routes of one address, and since every client here is
/// 127.0.0.1, production's 50 requests/s would cap the storm before the hashing does.
const HTTP_RATE_LIMIT: &str = "rate_limit.per_ip_per_second = 0 (--rate-limit-per-ip 0; \
     every client is 127.0.0.1)";
/// A sign-in unanswered this long counts as unanswered (the load driver's request timeout).
const STORM_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a failed connect so a dead server does not turn a client into a busy loop.
const RECONNECT_PAUSE: Duration = Duration::from_millis(10);

#[derive(Args)]
pub struct AuthMeArgs {
    /// The Bastion binary, e.g. target/release/bastion.
    #[arg(long)]
    bastion_bin: PathBuf,
    /// Sessions (sign-ins) whose access tokens the connections use, round robin; 0 = one per
    /// connection.
    #[arg(long, default_value_t = 0)]
    sessions: usize,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Args)]
pub struct LoginStormArgs {
    /// The Bastion binary, e.g. target/release/bastion.
    #[arg(long)]
    bastion_bin: PathBuf,
    /// Concurrent sign-in clients (one keep-alive connection each). Each cycles round robin
    /// through the accounts, starting at its own offset.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Verified accounts signed up before the storm (not measured): load-0@example.com, …
    #[arg(long, default_value_t = 64)]
    accounts: usize,
    /// Measured window.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Storm applied before the window opens and not recorded.
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
    /// The /healthz probe's pace: 0 = back to back on its one connection (it then takes a
    /// large share of the cores the hashes need); N = one request every N ms at most.
    #[arg(long, default_value_t = 0)]
    probe_interval_ms: u64,
    /// Single-thread hashes timed in this process before the storm, and again after it.
    #[arg(long, default_value_t = 10)]
    hash_samples: usize,
    /// Argon2id parameters, given to the server and to the in-process baseline alike
    /// (defaults: production, OWASP).
    #[arg(long, default_value_t = 19_456)]
    argon2_memory_kib: u32,
    #[arg(long, default_value_t = 2)]
    argon2_iterations: u32,
    #[arg(long, default_value_t = 1)]
    argon2_parallelism: u32,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// A running `bastion serve` with its data dir. Fields drop in order: the server stops before
/// its directory is removed.
pub(crate) struct Server {
    pub(crate) guard: Guard,
    pub(crate) addr: SocketAddr,
    data_dir: tempfile::TempDir,
}

impl Server {
    pub(crate) async fn start(bin: &Path, env: &[(&str, String)]) -> Result<Self> {
        let data_dir = tempfile::tempdir()?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
        let mut cmd = bastion_command(bin, addr, data_dir.path());
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        let started = Instant::now();
        let mut guard = Guard::spawn("bastion", cmd)?;
        wait_healthy(&mut guard, started, addr).await?;
        Ok(Self {
            guard,
            addr,
            data_dir,
        })
    }

    async fn post(&self, path: &str, body: &serde_json::Value) -> Result<(StatusCode, String)> {
        let (status, bytes) = load::fetch(&Target::post_json(self.addr, path, body)?).await?;
        Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// Signs up [`EMAIL`], follows the verification link from the mail outbox, and checks
    /// sign-in works.
    pub(crate) async fn create_verified_user(&mut self) -> Result<()> {
        self.create_verified_users(&[EMAIL.to_owned()]).await
    }

    /// Signs up every address, follows each one's verification link from the mail outbox, and
    /// checks each can sign in. Sequential: this is set-up, never measured.
    async fn create_verified_users(&mut self, emails: &[String]) -> Result<()> {
        for email in emails {
            let (status, body) = self
                .post(
                    "/v1/auth/signup",
                    &json!({ "email": email, "password": PASSWORD }),
                )
                .await?;
            ensure!(
                status == StatusCode::ACCEPTED,
                "sign-up of {email}: {status} {body}"
            );
        }
        let mut tokens = self.wait_for_links(emails).await?;
        for email in emails {
            let token = tokens
                .remove(&email.to_ascii_lowercase())
                .with_context(|| format!("no verification link for {email}"))?;
            let (status, body) = self
                .post("/v1/auth/verify-email", &json!({ "token": token }))
                .await?;
            ensure!(
                status == StatusCode::NO_CONTENT,
                "verify-email of {email}: {status} {body}"
            );
        }
        for email in emails {
            self.login_as(email).await?;
        }
        Ok(())
    }

    /// The verification link token mailed to each address (keyed by the lower-cased address),
    /// read from the file outbox.
    async fn wait_for_links(&mut self, emails: &[String]) -> Result<HashMap<String, String>> {
        let outbox = self.data_dir.path().join("outbox");
        let mut tokens = HashMap::with_capacity(emails.len());
        let started = Instant::now();
        loop {
            if let Ok(dir) = std::fs::read_dir(&outbox) {
                for entry in dir.flatten() {
                    let path = entry.path();
                    if path.extension().is_none_or(|e| e != "eml") {
                        continue;
                    }
                    let Ok(eml) = std::fs::read_to_string(&path) else {
                        continue;
                    };
                    if let (Some(to), Some(token)) = (recipient(&eml), link_token(&eml)) {
                        tokens.insert(to, token);
                    }
                }
            }
            let missing = emails
                .iter()
                .filter(|e| !tokens.contains_key(&e.to_ascii_lowercase()))
                .count();
            if missing == 0 {
                return Ok(tokens);
            }
            self.guard.check_running()?;
            if started.elapsed() > MAIL_TIMEOUT {
                bail!(
                    "{missing} of {} addresses got no verification mail with a #token= link in \
                     {} after {MAIL_TIMEOUT:?}",
                    emails.len(),
                    outbox.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Signs in as [`EMAIL`]; returns the access token.
    pub(crate) async fn login(&self) -> Result<String> {
        self.login_as(EMAIL).await
    }

    /// Signs in as `email` with the benchmark password; returns the access token.
    async fn login_as(&self, email: &str) -> Result<String> {
        let (status, body) = self
            .post(
                "/v1/auth/login",
                &json!({ "email": email, "password": PASSWORD }),
            )
            .await?;
        ensure!(
            status == StatusCode::OK,
            "login as {email}: {status} {body}"
        );
        let v: serde_json::Value = serde_json::from_str(&body).context("login answer")?;
        v["access_token"]
            .as_str()
            .map(str::to_owned)
            .context("login answer has no access_token")
    }
}

/// The address in a mail's `To:` header, lower-cased (`Name <addr>` or a bare address), so a
/// link is only ever used by the account it was sent to.
fn recipient(eml: &str) -> Option<String> {
    let value = eml
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.trim().eq_ignore_ascii_case("to").then_some(value)
        })?;
    let addr = match value.split_once('<') {
        Some((_, rest)) => rest.split_once('>')?.0,
        None => value,
    };
    let addr = addr.trim();
    (!addr.is_empty()).then(|| addr.to_ascii_lowercase())
}

/// The `bml_…` token after `#token=` in a mail. The body is quoted-printable: soft line breaks
/// (`=` at a line end) are undone and `=3D` decoded before searching.
fn link_token(eml: &str) -> Option<String> {
    let text = eml
        .replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=");
    text.match_indices("#token=").find_map(|(i, m)| {
        let rest = text.get(i + m.len()..)?;
        let body = rest.strip_prefix("bml_")?;
        let n = body
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
            .count();
        (n == 43).then(|| format!("bml_{}", &body[..43]))
    })
}

pub(crate) fn pct(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        100.0 * part / whole
    } else {
        0.0
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

pub(crate) fn write_json(path: Option<&PathBuf>, value: &impl Serialize) -> Result<()> {
    match path {
        Some(p) => crate::write_json(p, value),
        None => Ok(()),
    }
}

#[derive(Serialize)]
struct AuthMeReport {
    connections: usize,
    sessions: usize,
    warmup_secs: u64,
    duration_secs: u64,
    healthz: Stats,
    me: Stats,
    me_vs_healthz_rps_pct: f64,
}

pub async fn auth_me(args: AuthMeArgs) -> Result<()> {
    let cfg = args.load.config();
    ensure!(
        cfg.warmup + cfg.duration <= MAX_TOKEN_USE,
        "warm-up + duration must stay under {MAX_TOKEN_USE:?}: access tokens live 15 minutes"
    );
    let mut server = Server::start(&args.bastion_bin, &[]).await?;
    server.create_verified_user().await?;

    let healthz = load::run(&Target::local(server.addr, "/healthz")?, &cfg).await?;
    server.guard.check_running()?;
    // One session per connection, as separate clients would have, signed in right before the
    // run so every token is valid throughout. Sequential: this is set-up, not measured.
    let sessions = if args.sessions == 0 {
        cfg.connections
    } else {
        args.sessions
    };
    let mut me = Vec::with_capacity(sessions);
    for _ in 0..sessions {
        let token = server.login().await?;
        let target = Target::local(server.addr, "/v1/me")?
            .with_header(AUTHORIZATION, &format!("Bearer {token}"))?;
        let status = load::probe(&target).await?;
        ensure!(status == StatusCode::OK, "GET /v1/me answered {status}");
        me.push(target);
    }
    let me_stats = load::run_each(&me, &cfg).await?;
    server.guard.check_running()?;

    let ratio = pct(me_stats.requests_per_sec, healthz.requests_per_sec);
    println!(
        "same Bastion, {} keep-alive connections, {} s warm-up, {} s measured each; \
         /v1/me with {sessions} sessions' access tokens (one user)",
        cfg.connections,
        cfg.warmup.as_secs(),
        cfg.duration.as_secs()
    );
    println!("server config for this run: sign-in limits at {SIGN_IN_LIMITS}; {HTTP_RATE_LIMIT}");
    print_table(&[("/healthz", &healthz), ("/v1/me", &me_stats)]);
    println!();
    println!(
        "/v1/me vs /healthz requests/s: {ratio:.1} % (target ≥ {ME_TARGET_PCT:.0} %: {})",
        verdict(ratio >= ME_TARGET_PCT)
    );
    if me_stats.errors > 0 {
        println!("warning: {} /v1/me answers were not 2xx", me_stats.errors);
    }
    write_json(
        args.load.json.as_ref(),
        &AuthMeReport {
            connections: cfg.connections,
            sessions,
            warmup_secs: args.load.warmup_secs,
            duration_secs: args.load.duration_secs,
            healthz,
            me: me_stats,
            me_vs_healthz_rps_pct: ratio,
        },
    )
}

/// A PHC hash of the benchmark password made with `params`, as the server stores it.
fn stored_hash(params: &Params) -> Result<String> {
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let salt = SaltString::encode_b64(b"bastion-load-salt").map_err(|e| anyhow!("salt: {e}"))?;
    Ok(argon
        .hash_password(PASSWORD.as_bytes(), &salt)
        .map_err(|e| anyhow!("argon2: {e}"))?
        .to_string())
}

/// Times `samples` verifications of the right password against `phc`: exactly the server's
/// per-login work (`Argon2::default().verify_password`), on this thread.
fn time_hashes(phc: &str, samples: usize) -> Result<Vec<Duration>> {
    let parsed = PasswordHash::new(phc).map_err(|e| anyhow!("argon2: {e}"))?;
    let verifier = Argon2::default();
    (0..samples)
        .map(|_| {
            let t = Instant::now();
            verifier
                .verify_password(PASSWORD.as_bytes(), &parsed)
                .map_err(|e| anyhow!("argon2 verify: {e}"))?;
            Ok(t.elapsed())
        })
        .collect()
}

/// Hashes per second with `threads` threads verifying at once, `samples` each: what the
/// machine's cores, shared cache and memory allow when hashing alone (a diagnostic beside the
/// bound, which assumes hashes on different cores do not slow each other).
async fn parallel_hash_rate(phc: &str, threads: usize, samples: usize) -> Result<f64> {
    let phc = phc.to_owned();
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|_| s.spawn(|| time_hashes(&phc, samples)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().map_err(|_| anyhow!("hash thread panicked"))?)
                .collect::<Result<Vec<_>>>()
        })?;
        Ok((threads * samples) as f64 / started.elapsed().as_secs_f64())
    })
    .await
    .context("hash timing panicked")?
}

async fn time_hashes_blocking(phc: &str, samples: usize) -> Result<Vec<Duration>> {
    let phc = phc.to_owned();
    tokio::task::spawn_blocking(move || time_hashes(&phc, samples))
        .await
        .context("hash timing panicked")?
}

fn median_ms(samples: &[Duration]) -> f64 {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    match ms.len() {
        0 => 0.0,
        n if n % 2 == 1 => ms[n / 2],
        n => (ms[n / 2 - 1] + ms[n / 2]) / 2.0,
    }
}

#[derive(Serialize)]
struct HashTiming {
    samples: usize,
    median_ms: f64,
    min_ms: f64,
    max_ms: f64,
}

impl HashTiming {
    fn of(samples: &[Duration]) -> Self {
        let ms = || samples.iter().map(|d| d.as_secs_f64() * 1e3);
        Self {
            samples: samples.len(),
            median_ms: median_ms(samples),
            min_ms: ms().fold(f64::INFINITY, f64::min),
            max_ms: ms().fold(0.0, f64::max),
        }
    }
}

#[derive(Serialize)]
struct StormReport {
    clients: usize,
    accounts: usize,
    warmup_secs: u64,
    duration_secs: u64,
    argon2_memory_kib: u32,
    argon2_iterations: u32,
    argon2_parallelism: u32,
    sign_in_limits: &'static str,
    http_rate_limit: &'static str,
    probe_interval_ms: u64,
    cores: usize,
    hash_before: HashTiming,
    hash_after: HashTiming,
    hash_median_ms: f64,
    bound_logins_per_sec: f64,
    parallel_hashes_per_sec: f64,
    /// Every answer in the window, as the other scenarios report it.
    logins: Stats,
    /// 2xx answers in the window, per second.
    honest_logins_per_sec: f64,
    logins_vs_parallel_pct: f64,
    logins_vs_bound_pct: f64,
    /// Non-2xx answers over the whole storm, warm-up included.
    refused: u64,
    refused_429: u64,
    refused_in_warmup: u64,
    refused_by_status: BTreeMap<u16, u64>,
    /// Sign-ins with no answer (connection failure or timeout), whole storm.
    unanswered: u64,
    probe_idle: Stats,
    probe_during_storm: Stats,
}

/// What the storm's clients saw. Latencies and `window_errors` cover the measured window only,
/// as `load::run` counts them; refusals and unanswered sign-ins cover the whole storm, because
/// one refused honest sign-in is the failure this scenario guards against, warm-up or not.
#[derive(Default)]
struct StormTally {
    latencies_ns: Vec<u64>,
    ok_in_window: u64,
    window_errors: u64,
    refused_by_status: BTreeMap<u16, u64>,
    refused_in_warmup: u64,
    unanswered: u64,
}

impl StormTally {
    fn add(&mut self, other: Self) {
        self.latencies_ns.extend(other.latencies_ns);
        self.ok_in_window += other.ok_in_window;
        self.window_errors += other.window_errors;
        for (status, n) in other.refused_by_status {
            *self.refused_by_status.entry(status).or_default() += n;
        }
        self.refused_in_warmup += other.refused_in_warmup;
        self.unanswered += other.unanswered;
    }

    fn refused(&self) -> u64 {
        self.refused_by_status.values().sum()
    }

    fn refused_with(&self, status: StatusCode) -> u64 {
        self.refused_by_status
            .get(&status.as_u16())
            .copied()
            .unwrap_or(0)
    }
}

/// The login body for each account, serialised once.
fn login_bodies(emails: &[String]) -> Result<Arc<[Bytes]>> {
    emails
        .iter()
        .map(|email| {
            Ok(Bytes::from(serde_json::to_vec(
                &json!({ "email": email, "password": PASSWORD }),
            )?))
        })
        .collect()
}

/// Client `c`'s first account: the clients spread evenly over the accounts, so with no more
/// clients than accounts each starts at a different one.
fn start_offset(client: usize, clients: usize, accounts: usize) -> usize {
    client * accounts / clients.max(1) % accounts.max(1)
}

/// `clients` closed-loop keep-alive connections signing in for warm-up + duration, client `c`
/// taking the accounts in turn from its own offset. `load::run` only counts non-2xx answers
/// together with transport failures, so the storm has its own driver that tells them apart.
async fn storm(
    addr: SocketAddr,
    bodies: Arc<[Bytes]>,
    clients: usize,
    warmup: Duration,
    duration: Duration,
) -> Result<StormTally> {
    ensure!(clients > 0, "need at least one client");
    ensure!(!bodies.is_empty(), "need at least one account");
    ensure!(!duration.is_zero(), "duration must be positive");
    let warm_end = Instant::now() + warmup;
    let end = warm_end + duration;
    let host = HeaderValue::from_str(&addr.to_string())?;
    let workers: Vec<_> = (0..clients)
        .map(|c| {
            let offset = start_offset(c, clients, bodies.len());
            tokio::spawn(storm_client(
                addr,
                host.clone(),
                Arc::clone(&bodies),
                offset,
                warm_end,
                end,
            ))
        })
        .collect();
    let mut all = StormTally::default();
    for w in workers {
        all.add(w.await.context("storm client panicked")?);
    }
    Ok(all)
}

async fn storm_client(
    addr: SocketAddr,
    host: HeaderValue,
    bodies: Arc<[Bytes]>,
    offset: usize,
    warm_end: Instant,
    end: Instant,
) -> StormTally {
    let mut tally = StormTally::default();
    let mut conn: Option<SendRequest<Full<Bytes>>> = None;
    let mut next = offset;
    // Answers are attributed to the window by completion time, as in `load::run`.
    let in_window = |t: Instant| t >= warm_end && t <= end;
    while Instant::now() < end {
        // A server may close a keep-alive connection legitimately; reconnecting is not an error.
        if conn.as_ref().is_none_or(|c| c.is_closed()) {
            match timeout(STORM_REQUEST_TIMEOUT, load::connect(addr)).await {
                Ok(Ok(c)) => conn = Some(c),
                _ => {
                    tally.unanswered += 1;
                    tally.window_errors += u64::from(in_window(Instant::now()));
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                    continue;
                }
            }
        }
        let Some(sender) = conn.as_mut() else {
            continue;
        };
        let body = bodies[next % bodies.len()].clone();
        next += 1;
        let start = Instant::now();
        let outcome = timeout(
            STORM_REQUEST_TIMEOUT,
            send_login(sender, host.clone(), body),
        )
        .await;
        let done = Instant::now();
        match outcome {
            Ok(Ok(status)) => {
                if in_window(done) {
                    tally.latencies_ns.push(saturating_ns(done - start));
                    tally.ok_in_window += u64::from(status.is_success());
                    tally.window_errors += u64::from(!status.is_success());
                }
                if !status.is_success() {
                    *tally.refused_by_status.entry(status.as_u16()).or_default() += 1;
                    tally.refused_in_warmup += u64::from(done < warm_end);
                }
            }
            _ => {
                tally.unanswered += 1;
                tally.window_errors += u64::from(in_window(done));
                conn = None;
            }
        }
    }
    tally
}

async fn send_login(
    sender: &mut SendRequest<Full<Bytes>>,
    host: HeaderValue,
    body: Bytes,
) -> Result<StatusCode> {
    let request = Request::builder()
        .method(Method::POST)
        .uri("/v1/auth/login")
        .header(HOST, host)
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .body(Full::new(body))?;
    load::send(sender, request).await
}

fn saturating_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// "none", or e.g. "429 ×3, 401 ×1".
fn fmt_statuses(by_status: &BTreeMap<u16, u64>) -> String {
    if by_status.is_empty() {
        return "none".to_owned();
    }
    let mut v: Vec<_> = by_status.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    v.iter()
        .map(|(s, n)| format!("{s} ×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub async fn login_storm(args: LoginStormArgs) -> Result<()> {
    ensure!(args.hash_samples > 0, "need at least one hash sample");
    ensure!(args.accounts > 0, "need at least one account");
    ensure!(args.clients > 0, "need at least one client");
    let params = Params::new(
        args.argon2_memory_kib,
        args.argon2_iterations,
        args.argon2_parallelism,
        None,
    )
    .map_err(|e| anyhow!("argon2 parameters: {e}"))?;
    // Only the hashing cost is set; every sign-in limit stays at its production default.
    let env = [
        (
            "BASTION_AUTH__ARGON2_MEMORY_KIB",
            args.argon2_memory_kib.to_string(),
        ),
        (
            "BASTION_AUTH__ARGON2_ITERATIONS",
            args.argon2_iterations.to_string(),
        ),
        (
            "BASTION_AUTH__ARGON2_PARALLELISM",
            args.argon2_parallelism.to_string(),
        ),
    ];
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut server = Server::start(&args.bastion_bin, &env).await?;
    let emails: Vec<String> = (0..args.accounts)
        .map(|i| format!("load-{i}@example.com"))
        .collect();
    server.create_verified_users(&emails).await?;

    // Baselines before the storm, on an idle server: the hash, and the probe's own latency.
    let phc = stored_hash(&params)?;
    let hash_before = time_hashes_blocking(&phc, args.hash_samples).await?;
    let health = Target::local(server.addr, "/healthz")?;
    let pace = (args.probe_interval_ms > 0).then(|| Duration::from_millis(args.probe_interval_ms));
    let probe_cfg = |warmup, duration| LoadConfig {
        connections: 1,
        warmup,
        duration,
        pace,
    };
    let probe_idle = load::run(
        &health,
        &probe_cfg(Duration::from_secs(1), Duration::from_secs(3)),
    )
    .await?;

    let warmup = Duration::from_secs(args.warmup_secs);
    let duration = Duration::from_secs(args.duration_secs);
    let during = probe_cfg(warmup, duration);
    let (tally, probe) = tokio::join!(
        storm(
            server.addr,
            login_bodies(&emails)?,
            args.clients,
            warmup,
            duration
        ),
        load::run(&health, &during)
    );
    let (tally, probe) = (tally?, probe?);
    server.guard.check_running()?;
    let hash_after = time_hashes_blocking(&phc, args.hash_samples).await?;
    // Three times the samples: threads start and finish a little apart, which a short run
    // would over-weight.
    let parallel = parallel_hash_rate(&phc, cores, 3 * args.hash_samples).await?;

    let refused = tally.refused();
    let refused_429 = tally.refused_with(StatusCode::TOO_MANY_REQUESTS);
    let (refused_in_warmup, unanswered) = (tally.refused_in_warmup, tally.unanswered);
    let honest = tally.ok_in_window as f64 / duration.as_secs_f64();
    let refused_by_status = tally.refused_by_status;
    let refused_summary = fmt_statuses(&refused_by_status);
    let logins = load::stats_from(tally.latencies_ns, tally.window_errors, duration);

    let all: Vec<Duration> = hash_before.iter().chain(&hash_after).copied().collect();
    let hash_ms = median_ms(&all);
    let bound = cores as f64 * 1e3 / hash_ms;
    let ratio = pct(honest, bound);
    let vs_parallel = pct(honest, parallel);
    let (before, after) = (HashTiming::of(&hash_before), HashTiming::of(&hash_after));

    println!(
        "login storm: {} clients over {} accounts (round robin, each client from its own \
         offset), correct password, argon2id m={} KiB t={} p={}, {} s warm-up, {} s measured",
        args.clients,
        args.accounts,
        args.argon2_memory_kib,
        args.argon2_iterations,
        args.argon2_parallelism,
        args.warmup_secs,
        args.duration_secs
    );
    println!("server config for this run: sign-in limits at {SIGN_IN_LIMITS}; {HTTP_RATE_LIMIT}");
    match pace {
        None => println!("/healthz probe: one connection, back to back"),
        Some(p) => println!("/healthz probe: one connection, one request every {p:?}"),
    }
    print_table(&[
        ("POST /v1/auth/login (storm)", &logins),
        ("GET /healthz probe, during storm", &probe),
        ("GET /healthz probe, idle (before)", &probe_idle),
    ]);
    println!();
    println!(
        "single hash in this process, 1 thread: median {:.2} ms before (min {:.2}, n={}), \
         {:.2} ms after (min {:.2}, n={})",
        before.median_ms,
        before.min_ms,
        before.samples,
        after.median_ms,
        after.min_ms,
        after.samples
    );
    println!(
        "bound: {cores} cores ÷ {hash_ms:.2} ms = {bound:.1} logins/s; honest sign-ins reach \
         {ratio:.1} % of it"
    );
    println!(
        "same-run parallel hashing bound: {cores} threads hashing at once in this process: \
         {parallel:.1} hashes/s ({:.1} % of cores ÷ hash time)",
        pct(parallel, bound)
    );
    println!(
        "honest sign-ins/s {honest:.1} ({vs_parallel:.1} % of the same-run parallel hashing \
         bound), refused: {refused} (target ≥ {STORM_PARALLEL_TARGET_PCT:.0} % with 0 refused: {})",
        verdict(vs_parallel >= STORM_PARALLEL_TARGET_PCT && refused == 0 && unanswered == 0)
    );
    if refused > 0 {
        println!(
            "refused sign-ins by status: {refused_summary} ({refused_in_warmup} of them in the \
             warm-up)"
        );
    }
    if unanswered > 0 {
        println!("{unanswered} sign-ins got no answer (connection failure or timeout)");
    }
    let p99_ms = probe.p99_us / 1e3;
    println!(
        "/healthz p99 during the storm: {} (idle: {}; target ≤ {STORM_PROBE_P99_TARGET_MS:.0} ms: {})",
        fmt_latency(probe.p99_us),
        fmt_latency(probe_idle.p99_us),
        verdict(p99_ms <= STORM_PROBE_P99_TARGET_MS)
    );
    write_json(
        args.json.as_ref(),
        &StormReport {
            clients: args.clients,
            accounts: args.accounts,
            warmup_secs: args.warmup_secs,
            duration_secs: args.duration_secs,
            argon2_memory_kib: args.argon2_memory_kib,
            argon2_iterations: args.argon2_iterations,
            argon2_parallelism: args.argon2_parallelism,
            sign_in_limits: SIGN_IN_LIMITS,
            http_rate_limit: HTTP_RATE_LIMIT,
            probe_interval_ms: args.probe_interval_ms,
            cores,
            hash_before: before,
            hash_after: after,
            hash_median_ms: hash_ms,
            bound_logins_per_sec: bound,
            parallel_hashes_per_sec: parallel,
            logins,
            honest_logins_per_sec: honest,
            logins_vs_parallel_pct: vs_parallel,
            logins_vs_bound_pct: ratio,
            refused,
            refused_429,
            refused_in_warmup,
            refused_by_status,
            unanswered,
            probe_idle,
            probe_during_storm: probe,
        },
    )?;
    // The figures are printed and saved first, so a failing run still shows what happened.
    ensure!(
        refused == 0,
        "{refused} honest sign-ins were refused ({refused_429} with 429; {}): production \
         sign-in limits must never refuse correct passwords",
        refused_summary
    );
    ensure!(
        unanswered == 0,
        "{unanswered} honest sign-ins got no answer (connection failure or timeout)"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_are_exact_addresses() {
        let eml = "From: Bastion <no-reply@localhost>\r\nTo: load-10@example.com\r\n\
                   Subject: Verify\r\n\r\nTo: someone@else.example\r\n";
        assert_eq!(recipient(eml).as_deref(), Some("load-10@example.com"));
        assert_eq!(
            recipient("to: \"Load\" <Load-1@Example.com>\r\n\r\n").as_deref(),
            Some("load-1@example.com")
        );
        assert_eq!(recipient("Subject: x\r\n\r\nTo: a@b.example\r\n"), None);
    }

    #[test]
    fn clients_start_on_different_accounts() {
        for (clients, accounts) in [(16, 64), (64, 64), (3, 10), (1, 1)] {
            let mut starts: Vec<_> = (0..clients)
                .map(|c| start_offset(c, clients, accounts))
                .collect();
            assert!(starts.iter().all(|&s| s < accounts));
            starts.dedup();
            assert_eq!(
                starts.len(),
                clients,
                "{clients} clients, {accounts} accounts"
            );
        }
        assert!((0..32).all(|c| start_offset(c, 32, 8) < 8));
    }

    #[test]
    fn link_tokens_are_found_through_quoted_printable() {
        let token = format!("bml_{}", "aB-_".repeat(10) + "xyz");
        let soft = format!(
            "Subject: Verify\r\n\r\n<a href=3D\"https://x.example/verify-email#token=3D{}=\r\n{}\">",
            &token[..20],
            &token[20..]
        );
        assert_eq!(link_token(&soft), Some(token.clone()));
        assert_eq!(
            link_token(&format!("see /verify-email#token={token}\n")),
            Some(token)
        );
        assert_eq!(link_token("#token=bml_short"), None);
        assert_eq!(link_token("nothing here"), None);
    }
}
