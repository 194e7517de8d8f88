//! `licenses`: the public licensing endpoints of a real `bastion serve` (release binary, fresh
//! data dir; SQLite, or PostgreSQL with `--database-url`), each figure beside two baselines taken
//! in the same run:
//! - `/healthz` on the same server, same connections and duration;
//! - the raw RS256 signing rate of aws-lc-rs in this process, on as many threads as cores, since
//!   every activation and validation signs one machine certificate.
//!
//! Set-up: one verified user signs in, creates an org, a product and a policy, and issues one
//! license per connection; each connection's machine is activated once. Then connection `i`
//! repeats license `i` with machine `i`: `POST /v1/licenses/activate` (the machine is already
//! active, so this is the renewal path) and `POST /v1/licenses/validate`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::RSA_PKCS1_SHA256;
use clap::Args;
use http::StatusCode;
use http::header::AUTHORIZATION;
use serde::Serialize;
use serde_json::{Value, json};

use crate::LoadArgs;
use crate::accounts::{Server, pct, write_json};
use crate::load::{self, Stats, Target};
use crate::print_table;

/// How long the in-process RS256 reference signs on each thread.
const SIGN_WINDOW: Duration = Duration::from_secs(2);
/// The share of non-2xx (or failed) answers above which a run is reported as failed.
const MAX_ERROR_PCT: f64 = 1.0;
/// The policy's seat count: far more than the machines the scenario activates.
const MAX_MACHINES: u32 = 10_000;
/// All clients share 127.0.0.1, so the per-IP request limit is turned off for the run.
const RATE_LIMIT_ENV: (&str, &str) = ("BASTION_RATE_LIMIT__PER_IP_PER_SECOND", "0");

#[derive(Args)]
pub struct LicensesArgs {
    /// The Bastion binary, e.g. target/release/bastion.
    #[arg(long)]
    bastion_bin: PathBuf,
    /// PostgreSQL database for the server (given as BASTION_DATABASE_URL; the server migrates
    /// it at start), e.g. postgres://postgres@127.0.0.1:5432/bench. Use a fresh database.
    /// Without it the server uses SQLite in its temporary data dir.
    #[arg(long)]
    database_url: Option<String>,
    #[command(flatten)]
    load: LoadArgs,
}

/// The store a database URL selects (the URL itself may hold a password and is never printed).
fn backend_of(database_url: Option<&str>) -> Result<&'static str> {
    match database_url {
        None => Ok("sqlite"),
        Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => Ok("postgres"),
        Some(u) if u.starts_with("sqlite:") => Ok("sqlite"),
        Some(_) => bail!("--database-url must start with postgres://, postgresql:// or sqlite:"),
    }
}

/// One signed-in owner's authenticated POST; checks the status and returns the JSON answer.
async fn post_authed(
    server: &Server,
    token: &str,
    path: &str,
    body: &Value,
    expected: StatusCode,
) -> Result<Value> {
    let target = Target::post_json(server.addr, path, body)?
        .with_header(AUTHORIZATION, &format!("Bearer {token}"))?;
    let (status, bytes) = load::fetch(&target).await?;
    ensure!(
        status == expected,
        "POST {path}: {status} {}",
        String::from_utf8_lossy(&bytes)
    );
    serde_json::from_slice(&bytes).with_context(|| format!("POST {path}: answer is not JSON"))
}

/// The string at `pointer` (e.g. `/license/id`) in an answer.
fn string_at(v: &Value, pointer: &str) -> Result<String> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .with_context(|| format!("answer has no string at {pointer}: {v}"))
}

/// One connection's client: its license key, email and machine.
struct Client {
    activate: Target,
    validate: Target,
}

/// Creates an org, a product and a policy as the signed-in owner, then issues `n` licenses and
/// activates each one's machine once (so validation finds it).
async fn set_up(server: &Server, token: &str, n: usize) -> Result<Vec<Client>> {
    let created = StatusCode::CREATED;
    let org = post_authed(
        server,
        token,
        "/v1/orgs",
        &json!({ "name": "Bench" }),
        created,
    )
    .await?;
    let org = string_at(&org, "/id")?;
    let product = post_authed(
        server,
        token,
        &format!("/v1/orgs/{org}/products"),
        &json!({ "name": "Bench App" }),
        created,
    )
    .await?;
    let product = string_at(&product, "/id")?;
    let policy = post_authed(
        server,
        token,
        &format!("/v1/orgs/{org}/products/{product}/policies"),
        &json!({ "name": "Site", "max_machines": MAX_MACHINES }),
        created,
    )
    .await?;
    let policy = string_at(&policy, "/id")?;

    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let email = format!("buyer{i}@bench.example");
        let issued = post_authed(
            server,
            token,
            &format!("/v1/orgs/{org}/licenses"),
            &json!({ "policy_id": policy, "email": email }),
            created,
        )
        .await?;
        let key = string_at(&issued, "/key")?;
        string_at(&issued, "/license/id")?;
        let components = json!([format!("bench-machine-{i}"), "linux"]);
        let activate = Target::post_json(
            server.addr,
            "/v1/licenses/activate",
            &json!({
                "key": key,
                "email": email,
                "machine": { "components": components, "name": format!("m{i}") },
            }),
        )?;
        let validate = Target::post_json(
            server.addr,
            "/v1/licenses/validate",
            &json!({ "key": key, "email": email, "machine": { "components": components } }),
        )?;
        // The first activation creates the machine; the measured ones renew it.
        let (status, body) = load::fetch(&activate).await?;
        ensure!(
            status == StatusCode::OK,
            "first activation of license {i}: {status} {}",
            String::from_utf8_lossy(&body)
        );
        let (status, body) = load::fetch(&validate).await?;
        ensure!(
            status == StatusCode::OK,
            "first validation of license {i}: {status} {}",
            String::from_utf8_lossy(&body)
        );
        clients.push(Client { activate, validate });
    }
    Ok(clients)
}

/// The `alg` of every license signing key the server publishes.
async fn license_algorithms(server: &Server) -> Result<Vec<String>> {
    let (status, body) =
        load::fetch(&Target::local(server.addr, "/v1/licenses/public-keys")?).await?;
    ensure!(
        status == StatusCode::OK,
        "GET /v1/licenses/public-keys: {status}"
    );
    let v: Value = serde_json::from_slice(&body).context("public keys answer")?;
    let keys = v["keys"]
        .as_array()
        .context("public keys answer has no keys")?;
    keys.iter().map(|k| string_at(k, "/alg")).collect()
}

/// Signatures per second with `threads` threads each signing for `window` with one 2048-bit
/// key: RSASSA-PKCS1-v1_5 SHA-256 over a message the size of a machine certificate's signed part.
fn rs256_sign_rate(threads: usize, window: Duration) -> Result<f64> {
    let key = KeyPair::generate(KeySize::Rsa2048)
        .map_err(|_| anyhow!("generating an RSA-2048 key failed"))?;
    let rng = SystemRandom::new();
    // `BSTM1.` + base64url of a ~300-byte JSON payload; the private-key operation dominates.
    let message = format!("BSTM1.{}", "eyJ2IjoxLCJraWQiOiJr".repeat(20));
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> Result<f64> {
                    let mut signature = vec![0; key.public_modulus_len()];
                    let started = Instant::now();
                    let mut signed = 0u64;
                    loop {
                        key.sign(&RSA_PKCS1_SHA256, &rng, message.as_bytes(), &mut signature)
                            .map_err(|_| anyhow!("RS256 signing failed"))?;
                        signed += 1;
                        let elapsed = started.elapsed();
                        if elapsed >= window {
                            return Ok(signed as f64 / elapsed.as_secs_f64());
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow!("signing thread panicked"))?)
            .sum()
    })
}

/// Non-2xx or failed answers as a share of all answers (100 % when nothing answered).
fn error_pct(s: &Stats) -> f64 {
    if s.requests == 0 {
        100.0
    } else {
        pct(s.errors as f64, s.requests as f64)
    }
}

#[derive(Serialize)]
struct LicensesReport {
    backend: &'static str,
    connections: usize,
    licenses: usize,
    warmup_secs: u64,
    duration_secs: u64,
    license_algorithms: Vec<String>,
    healthz: Stats,
    activate: Stats,
    validate: Stats,
    rs256_threads: usize,
    rs256_signs_per_sec: f64,
    activate_vs_healthz_rps_pct: f64,
    activate_vs_rs256_pct: f64,
    validate_vs_healthz_rps_pct: f64,
    validate_vs_rs256_pct: f64,
}

pub async fn licenses(args: LicensesArgs) -> Result<()> {
    let cfg = args.load.config();
    ensure!(cfg.connections > 0, "need at least one connection");
    let backend = backend_of(args.database_url.as_deref())?;
    let mut env = vec![(RATE_LIMIT_ENV.0, RATE_LIMIT_ENV.1.to_owned())];
    if let Some(url) = &args.database_url {
        env.push(("BASTION_DATABASE_URL", url.clone()));
    }
    let mut server = Server::start(&args.bastion_bin, &env).await?;
    server.create_verified_user().await?;
    let token = server.login().await?;
    let clients = set_up(&server, &token, cfg.connections).await?;
    let algorithms = license_algorithms(&server).await?;

    let healthz = load::run(&Target::local(server.addr, "/healthz")?, &cfg).await?;
    server.guard.check_running()?;
    let activations: Vec<Target> = clients.iter().map(|c| c.activate.clone()).collect();
    let activate = load::run_each(&activations, &cfg).await?;
    server.guard.check_running()?;
    let validations: Vec<Target> = clients.iter().map(|c| c.validate.clone()).collect();
    let validate = load::run_each(&validations, &cfg).await?;
    server.guard.check_running()?;

    // With the server idle: what this machine's cores can sign when doing nothing else.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rs256 = tokio::task::spawn_blocking(move || rs256_sign_rate(threads, SIGN_WINDOW))
        .await
        .context("RS256 timing panicked")??;

    let (a, v, h) = (
        activate.requests_per_sec,
        validate.requests_per_sec,
        healthz.requests_per_sec,
    );
    println!(
        "licenses: same Bastion ({backend}), {} keep-alive connections, {} s warm-up, {} s \
         measured each; {} licenses (one per connection, policy max_machines {MAX_MACHINES}), \
         license signing keys: {}",
        cfg.connections,
        cfg.warmup.as_secs(),
        cfg.duration.as_secs(),
        clients.len(),
        algorithms.join(", ")
    );
    println!(
        "server config for this run: rate_limit.per_ip_per_second = 0 ({}; all clients share \
         127.0.0.1), database: {backend}{}",
        RATE_LIMIT_ENV.0,
        if args.database_url.is_some() {
            " (BASTION_DATABASE_URL, migrated at start)"
        } else {
            " (in the fresh data dir)"
        }
    );
    println!(
        "activate: connection i repeats license i + machine i, already active, i.e. the renewal \
         path: verify the key's signature, keyed-hash lookup, email check, machine-limit \
         transaction (finds the machine), sign a fresh machine certificate"
    );
    println!(
        "validate: connection i validates its machine: verify the key, keyed-hash lookups \
         (license, machine), touch last-seen, sign a fresh machine certificate"
    );
    print_table(&[
        ("GET /healthz", &healthz),
        ("POST /v1/licenses/activate (renewal)", &activate),
        ("POST /v1/licenses/validate", &validate),
    ]);
    println!();
    println!(
        "raw RS256 in this process (aws-lc-rs, RSA-2048, RSA_PKCS1_SHA256), {threads} threads × \
         {} s: {rs256:.0} signs/s ({:.3} ms per sign per thread)",
        SIGN_WINDOW.as_secs(),
        if rs256 > 0.0 {
            threads as f64 * 1e3 / rs256
        } else {
            0.0
        }
    );
    for (what, rate) in [("activations/s", a), ("validations/s", v)] {
        println!(
            "{what}: {rate:.0} = {:.1} % of /healthz requests/s, {:.1} % of the parallel raw \
             RS256 sign rate (each answer signs once)",
            pct(rate, h),
            pct(rate, rs256)
        );
    }
    let runs = [
        ("/healthz", &healthz),
        ("activate", &activate),
        ("validate", &validate),
    ];
    println!(
        "errors (non-2xx or failed): {}",
        runs.iter()
            .map(|(n, s)| format!("{n} {} of {} ({:.2} %)", s.errors, s.requests, error_pct(s)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let failed: Vec<&str> = runs
        .iter()
        .filter(|(_, s)| error_pct(s) > MAX_ERROR_PCT)
        .map(|(n, _)| *n)
        .collect();

    write_json(
        args.load.json.as_ref(),
        &LicensesReport {
            backend,
            connections: cfg.connections,
            licenses: clients.len(),
            warmup_secs: args.load.warmup_secs,
            duration_secs: args.load.duration_secs,
            license_algorithms: algorithms,
            activate_vs_healthz_rps_pct: pct(a, h),
            activate_vs_rs256_pct: pct(a, rs256),
            validate_vs_healthz_rps_pct: pct(v, h),
            validate_vs_rs256_pct: pct(v, rs256),
            healthz,
            activate,
            validate,
            rs256_threads: threads,
            rs256_signs_per_sec: rs256,
        },
    )?;
    ensure!(
        failed.is_empty(),
        "more than {MAX_ERROR_PCT} % of answers were errors in: {}",
        failed.join(", ")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_follows_the_url_scheme() {
        assert_eq!(backend_of(None).unwrap(), "sqlite");
        assert_eq!(
            backend_of(Some("postgres://postgres@127.0.0.1:5432/b")).unwrap(),
            "postgres"
        );
        assert_eq!(backend_of(Some("postgresql://h/b")).unwrap(), "postgres");
        assert_eq!(backend_of(Some("sqlite:///tmp/x.db")).unwrap(), "sqlite");
        assert!(backend_of(Some("mysql://h/b")).is_err());
    }

    #[test]
    fn error_share_counts_silence_as_failure() {
        let stats = |requests, errors| Stats {
            requests,
            errors,
            requests_per_sec: 0.0,
            p50_us: 0.0,
            p99_us: 0.0,
            p999_us: 0.0,
            max_us: 0.0,
        };
        assert_eq!(error_pct(&stats(0, 0)), 100.0);
        assert_eq!(error_pct(&stats(200, 2)), 1.0);
        assert_eq!(error_pct(&stats(1000, 0)), 0.0);
    }
}
