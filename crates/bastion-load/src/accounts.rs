//! Account scenarios against a real `bastion serve` (release binary, fresh data dir, SQLite),
//! each figure beside a baseline taken in the same run:
//! - `auth-me`: authenticated `GET /v1/me` (JWT check, session liveness, user read) against
//!   `/healthz` on the same server, same connections and duration;
//! - `login-storm`: many clients signing in to one account with production Argon2id while one
//!   connection probes `/healthz`; logins/s against "cores ÷ single-hash time", the hash timed
//!   in this process with the same parameters before and after the storm.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use clap::Args;
use http::StatusCode;
use http::header::AUTHORIZATION;
use serde::Serialize;
use serde_json::json;

use crate::load::{self, LoadConfig, Stats, Target};
use crate::{Guard, LoadArgs, bastion_command, fmt_latency, free_port, print_table, wait_healthy};

const EMAIL: &str = "load@example.com";
const PASSWORD: &str = "correct horse battery staple";
/// Verification mail is written by the outbox dispatcher, which new mail wakes at once.
const MAIL_TIMEOUT: Duration = Duration::from_secs(30);
/// Access tokens live 15 minutes; a run must finish well inside one token's life.
const MAX_TOKEN_USE: Duration = Duration::from_secs(600);
/// Targets from the accounts issue, printed beside the figures.
const ME_TARGET_PCT: f64 = 40.0;
const STORM_PROBE_P99_TARGET_MS: f64 = 25.0;
const STORM_BOUND_TARGET_PCT: f64 = 90.0;
/// Every sign-in attempt counts against the client IP (all clients share 127.0.0.1), and the
/// default of 100 per 15 minutes would end a storm within a second.
const IP_MAX_ATTEMPTS: &str = "100000000";

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
    /// Concurrent sign-in clients (one keep-alive connection each).
    #[arg(long, default_value_t = 64)]
    clients: usize,
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
    /// auth.login_max_failures for the server. Each sign-in counts against the account *before*
    /// its hash is checked (race-proof lockout) and the count is cleared by a success, so when
    /// the storm starts, more concurrent sign-ins than this lock the account until the first
    /// one succeeds (a few hundred ms of 429s, inside the warm-up). Later, successes clear the
    /// count faster than it grows. Production's 10 is kept by default.
    #[arg(long, default_value_t = 10)]
    login_max_failures: u32,
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

    /// Signs up, follows the verification link from the mail outbox, and checks sign-in works.
    pub(crate) async fn create_verified_user(&mut self) -> Result<()> {
        let (status, body) = self
            .post(
                "/v1/auth/signup",
                &json!({ "email": EMAIL, "password": PASSWORD }),
            )
            .await?;
        ensure!(status == StatusCode::ACCEPTED, "sign-up: {status} {body}");
        let token = self.wait_for_link().await?;
        let (status, body) = self
            .post("/v1/auth/verify-email", &json!({ "token": token }))
            .await?;
        ensure!(
            status == StatusCode::NO_CONTENT,
            "verify-email: {status} {body}"
        );
        self.login().await.map(drop)
    }

    async fn wait_for_link(&mut self) -> Result<String> {
        let outbox = self.data_dir.path().join("outbox");
        let started = Instant::now();
        loop {
            if let Ok(dir) = std::fs::read_dir(&outbox) {
                for entry in dir.flatten() {
                    let path = entry.path();
                    if path.extension().is_some_and(|e| e == "eml")
                        && let Some(token) = std::fs::read_to_string(&path)
                            .ok()
                            .as_deref()
                            .and_then(link_token)
                    {
                        return Ok(token);
                    }
                }
            }
            self.guard.check_running()?;
            if started.elapsed() > MAIL_TIMEOUT {
                bail!(
                    "no verification mail with a #token= link in {} after {MAIL_TIMEOUT:?}",
                    outbox.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Signs in; returns the access token.
    pub(crate) async fn login(&self) -> Result<String> {
        let (status, body) = self
            .post(
                "/v1/auth/login",
                &json!({ "email": EMAIL, "password": PASSWORD }),
            )
            .await?;
        ensure!(status == StatusCode::OK, "login: {status} {body}");
        let v: serde_json::Value = serde_json::from_str(&body).context("login answer")?;
        v["access_token"]
            .as_str()
            .map(str::to_owned)
            .context("login answer has no access_token")
    }
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
    let env = [(
        "BASTION_AUTH__LOGIN_IP_MAX_ATTEMPTS",
        IP_MAX_ATTEMPTS.to_owned(),
    )];
    let mut server = Server::start(&args.bastion_bin, &env).await?;
    server.create_verified_user().await?;

    let healthz = load::run(&Target::local(server.addr, "/healthz")?, &cfg).await?;
    server.guard.check_running()?;
    // One session per connection, as separate clients would have, signed in right before the
    // run so every token is valid throughout. Sequential: concurrent sign-ins to one account
    // would trip its lockout, which counts attempts in flight.
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
    println!(
        "server config for this run: auth.login_ip_max_attempts = {IP_MAX_ATTEMPTS} \
         (the sign-ins before the /v1/me run all come from 127.0.0.1)"
    );
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
    warmup_secs: u64,
    duration_secs: u64,
    argon2_memory_kib: u32,
    argon2_iterations: u32,
    argon2_parallelism: u32,
    login_ip_max_attempts: &'static str,
    login_max_failures: u32,
    probe_interval_ms: u64,
    cores: usize,
    hash_before: HashTiming,
    hash_after: HashTiming,
    hash_median_ms: f64,
    bound_logins_per_sec: f64,
    parallel_hashes_per_sec: f64,
    logins: Stats,
    logins_vs_bound_pct: f64,
    probe_idle: Stats,
    probe_during_storm: Stats,
}

pub async fn login_storm(args: LoginStormArgs) -> Result<()> {
    ensure!(args.hash_samples > 0, "need at least one hash sample");
    let params = Params::new(
        args.argon2_memory_kib,
        args.argon2_iterations,
        args.argon2_parallelism,
        None,
    )
    .map_err(|e| anyhow!("argon2 parameters: {e}"))?;
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
        (
            "BASTION_AUTH__LOGIN_IP_MAX_ATTEMPTS",
            IP_MAX_ATTEMPTS.to_owned(),
        ),
        (
            "BASTION_AUTH__LOGIN_MAX_FAILURES",
            args.login_max_failures.to_string(),
        ),
    ];
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut server = Server::start(&args.bastion_bin, &env).await?;
    server.create_verified_user().await?;

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

    let login = Target::post_json(
        server.addr,
        "/v1/auth/login",
        &json!({ "email": EMAIL, "password": PASSWORD }),
    )?;
    let warmup = Duration::from_secs(args.warmup_secs);
    let duration = Duration::from_secs(args.duration_secs);
    let storm_cfg = LoadConfig {
        connections: args.clients,
        warmup,
        duration,
        pace: None,
    };
    let during = probe_cfg(warmup, duration);
    let (logins, probe) = tokio::join!(load::run(&login, &storm_cfg), load::run(&health, &during));
    let (logins, probe) = (logins?, probe?);
    server.guard.check_running()?;
    let hash_after = time_hashes_blocking(&phc, args.hash_samples).await?;
    // Three times the samples: threads start and finish a little apart, which a short run
    // would over-weight.
    let parallel = parallel_hash_rate(&phc, cores, 3 * args.hash_samples).await?;

    let all: Vec<Duration> = hash_before.iter().chain(&hash_after).copied().collect();
    let hash_ms = median_ms(&all);
    let bound = cores as f64 * 1e3 / hash_ms;
    let ratio = pct(logins.requests_per_sec, bound);
    let (before, after) = (HashTiming::of(&hash_before), HashTiming::of(&hash_after));

    println!(
        "login storm: {} clients, one account, argon2id m={} KiB t={} p={}, {} s warm-up, {} s measured",
        args.clients,
        args.argon2_memory_kib,
        args.argon2_iterations,
        args.argon2_parallelism,
        args.warmup_secs,
        args.duration_secs
    );
    println!(
        "server config for this run: auth.login_ip_max_attempts = {IP_MAX_ATTEMPTS} \
         (BASTION_AUTH__LOGIN_IP_MAX_ATTEMPTS; production default 100 per 15 min), \
         auth.login_max_failures = {} (production default 10)",
        args.login_max_failures
    );
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
        "bound: {cores} cores ÷ {hash_ms:.2} ms = {bound:.1} logins/s; measured {:.1} logins/s \
         = {ratio:.1} % of the bound (target ≥ {STORM_BOUND_TARGET_PCT:.0} %: {})",
        logins.requests_per_sec,
        verdict(ratio >= STORM_BOUND_TARGET_PCT)
    );
    println!(
        "diagnostic: {cores} threads hashing at once in this process: {parallel:.1} hashes/s \
         ({:.1} % of the bound); logins/s = {:.1} % of that",
        pct(parallel, bound),
        pct(logins.requests_per_sec, parallel)
    );
    let p99_ms = probe.p99_us / 1e3;
    println!(
        "/healthz p99 during the storm: {} (idle: {}; target ≤ {STORM_PROBE_P99_TARGET_MS:.0} ms: {})",
        fmt_latency(probe.p99_us),
        fmt_latency(probe_idle.p99_us),
        verdict(p99_ms <= STORM_PROBE_P99_TARGET_MS)
    );
    if logins.errors > 0 {
        println!(
            "warning: {} sign-ins were not 2xx (locked or refused); they count in requests/s \
             above but did no hashing",
            logins.errors
        );
    }
    write_json(
        args.json.as_ref(),
        &StormReport {
            clients: args.clients,
            warmup_secs: args.warmup_secs,
            duration_secs: args.duration_secs,
            argon2_memory_kib: args.argon2_memory_kib,
            argon2_iterations: args.argon2_iterations,
            argon2_parallelism: args.argon2_parallelism,
            login_ip_max_attempts: IP_MAX_ATTEMPTS,
            login_max_failures: args.login_max_failures,
            probe_interval_ms: args.probe_interval_ms,
            cores,
            hash_before: before,
            hash_after: after,
            hash_median_ms: hash_ms,
            bound_logins_per_sec: bound,
            parallel_hashes_per_sec: parallel,
            logins,
            logins_vs_bound_pct: ratio,
            probe_idle,
            probe_during_storm: probe,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
