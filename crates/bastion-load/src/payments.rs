//! `payments`: verified webhook ingest and hot-wallet debits on a real `bastion serve` (release
//! binary, fresh data dir; SQLite, or PostgreSQL with `--database-url`), each figure beside
//! baselines taken in the same run:
//! - `/healthz` on the same server, same connections and duration, for every figure;
//! - for the debits, the raw database's rate for the same one-row work: as many concurrent
//!   connections, each running its own transaction around one conditional
//!   `UPDATE … SET balance = balance - 1 … WHERE id = $1 AND balance >= 1` on one row of a
//!   scratch table (in the same PostgreSQL database; with SQLite, in a scratch file opened the
//!   way Bastion opens its own).
//!
//! Set-up: one verified user signs in and creates an org, a Stripe webhook endpoint (inbox
//! handler) and a wallet credited with the largest amount one posting allows. Then:
//! - ingest: every request is a new Stripe `customer.updated` event (unique id, ~1 KB) signed
//!   with a fresh timestamp, so each one is verified, found new, stored and processed;
//! - replay: one stored event, signed once, sent again and again (the dedupe path);
//! - debit: every connection debits 1 from the same wallet with the owner's token.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use aws_lc_rs::hmac;
use clap::Args;
use http::header::{AUTHORIZATION, HeaderName};
use http::{Method, StatusCode};
use hyper::body::Bytes;
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::LoadArgs;
use crate::accounts::{Server, pct, write_json};
use crate::load::{self, LoadConfig, Stats, Target};
use crate::print_table;

/// The share of non-2xx (or failed) answers above which a run is reported as failed.
const MAX_ERROR_PCT: f64 = 1.0;
/// All clients share 127.0.0.1, so the per-IP request limit is turned off for the run.
const RATE_LIMIT_ENV: (&str, &str) = ("BASTION_RATE_LIMIT__PER_IP_PER_SECOND", "0");
/// The endpoint's signing secret (a bench-only value, printed nowhere).
const WHSEC: &str = "whsec_bN8cV3xZ6lK1jH9gF4dS7aP2oI5uY0tR";
/// The largest amount one posting accepts: enough for ~10^12 debits of 1, i.e. the wallet
/// never runs dry during a run and every debit takes the success path.
const CREDIT: i64 = 1_000_000_000_000;
/// The raw reference's row starts this high for the same reason.
const RAW_BALANCE: i64 = 1_000_000_000_000_000;
/// The scratch table of the raw reference (created and dropped by this run).
const RAW_TABLE: &str = "bastion_load_raw_wallet";
/// Bastion's SQLite pool size (`SqliteStore::open`); the SQLite reference queues on as many
/// connections, since more writers only add busy-waiting on SQLite's one write lock.
const SQLITE_POOL: u32 = 8;
/// Bastion's SQLite busy timeout, copied so contention is handled alike.
const SQLITE_BUSY: Duration = Duration::from_secs(10);
const STRIPE_SIGNATURE: HeaderName = HeaderName::from_static("stripe-signature");

#[derive(Args)]
pub struct PaymentsArgs {
    /// The Bastion binary, e.g. target/release/bastion.
    #[arg(long)]
    bastion_bin: PathBuf,
    /// PostgreSQL database for the server (given as BASTION_DATABASE_URL; the server migrates
    /// it at start), e.g. postgres://postgres@127.0.0.1:5432/bench. Use a fresh database; the
    /// raw reference creates and drops a scratch table in it. Without it the server uses SQLite
    /// in its temporary data dir and the reference a scratch SQLite file.
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
        Some(_) => bail!("--database-url must start with postgres:// or postgresql://"),
    }
}

/// One authenticated call as the owner; checks the status and returns the JSON answer.
async fn call(
    server: &Server,
    token: &str,
    method: Method,
    path: &str,
    body: Option<&Value>,
    expected: StatusCode,
) -> Result<Value> {
    let target = match body {
        Some(b) => Target::post_json(server.addr, path, b)?,
        None => Target::local(server.addr, path)?,
    };
    ensure!(
        (method == Method::POST) == body.is_some(),
        "{method} {path}: only POSTs carry a body here"
    );
    let target = target.with_header(AUTHORIZATION, &format!("Bearer {token}"))?;
    let (status, bytes) = load::fetch(&target).await?;
    ensure!(
        status == expected,
        "{method} {path}: {status} {}",
        String::from_utf8_lossy(&bytes)
    );
    serde_json::from_slice(&bytes).with_context(|| format!("{method} {path}: answer is not JSON"))
}

/// The string at `pointer` (e.g. `/id`) in an answer.
fn string_at(v: &Value, pointer: &str) -> Result<String> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .with_context(|| format!("answer has no string at {pointer}: {v}"))
}

/// Lower-case hex, as Stripe writes `v1=` signatures.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes
        .iter()
        .flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0xf)]])
        .map(char::from)
        .collect()
}

fn unix_now() -> Result<u64> {
    Ok(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs())
}

/// Signs and builds Stripe deliveries to one endpoint: the event body is fixed apart from its
/// `id` and `created`, which are spliced in per request (no JSON serialisation per request).
struct Deliveries {
    target: Target,
    key: hmac::Key,
    /// The event after `"created":<t>,`, i.e. everything but the id and the time.
    rest: String,
}

impl Deliveries {
    fn new(server: &Server, path: &str) -> Result<Self> {
        // A customer.updated event as Stripe sends it (API 2024-06-20), ~1 KB once signed.
        let event = json!({
            "api_version": "2024-06-20",
            "data": {
                "object": {
                    "id": "cus_QbenchCustomer0001", "object": "customer",
                    "address": { "city": "Berlin", "country": "DE", "line1": "Benchstraße 1",
                        "line2": null, "postal_code": "10115", "state": null },
                    "balance": 0, "created": 1_764_460_800, "currency": "eur",
                    "default_source": null, "delinquent": false,
                    "description": "Bastion load-test customer", "discount": null,
                    "email": "buyer@bench.example", "invoice_prefix": "BENCH0001",
                    "invoice_settings": { "custom_fields": null,
                        "default_payment_method": "pm_1QbenchPaymentMethod01", "footer": null,
                        "rendering_options": null },
                    "livemode": false, "metadata": { "plan": "pro", "seats": "25" },
                    "name": "Bench Customer GmbH", "next_invoice_sequence": 7,
                    "phone": "+4930123456", "preferred_locales": ["de", "en"],
                    "shipping": null, "tax_exempt": "none", "test_clock": null,
                },
                "previous_attributes": {
                    "email": "old-buyer@bench.example",
                    "metadata": { "plan": "team", "seats": "10" },
                },
            },
            "livemode": false,
            "object": "event",
            "pending_webhooks": 1,
            "request": { "id": "req_benchRequest0001", "idempotency_key": null },
            "type": "customer.updated",
        });
        let text = event.to_string();
        let rest = text
            .strip_prefix('{')
            .context("an event serialises as an object")?
            .to_owned();
        Ok(Self {
            target: Target::local(server.addr, path)?,
            key: hmac::Key::new(hmac::HMAC_SHA256, WHSEC.as_bytes()),
            rest,
        })
    }

    /// The delivery of event `id`, signed now: `t=<now>,v1=HMAC-SHA256(secret, "{t}.{body}")`.
    fn delivery(&self, id: &str) -> Result<Target> {
        let t = unix_now()?;
        let body = format!("{{\"id\":\"{id}\",\"created\":{t},{}", self.rest);
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(t.to_string().as_bytes());
        ctx.update(b".");
        ctx.update(body.as_bytes());
        let signature = format!("t={t},v1={}", hex(ctx.sign().as_ref()));
        self.target
            .clone()
            .with_json_body(Bytes::from(body))
            .with_header(STRIPE_SIGNATURE, &signature)
    }
}

/// Delivers `target` once and checks the answer: 200 and `duplicate` as expected.
async fn deliver_once(target: &Target, duplicate: bool) -> Result<()> {
    let (status, body) = load::fetch(target).await?;
    let text = String::from_utf8_lossy(&body);
    ensure!(
        status == StatusCode::OK,
        "webhook delivery: {status} {text}"
    );
    let v: Value = serde_json::from_slice(&body).context("webhook answer is not JSON")?;
    ensure!(
        v["duplicate"] == duplicate,
        "webhook delivery: expected duplicate = {duplicate}, got {text}"
    );
    Ok(())
}

/// What the set-up made.
struct Setup {
    org: String,
    wallet: String,
    deliveries: Deliveries,
}

async fn set_up(server: &Server, token: &str) -> Result<Setup> {
    let created = StatusCode::CREATED;
    let post = |path: String, body: Value| async move {
        call(server, token, Method::POST, &path, Some(&body), created).await
    };
    let org = string_at(
        &post("/v1/orgs".into(), json!({ "name": "Bench" })).await?,
        "/id",
    )?;
    let endpoint = post(
        format!("/v1/orgs/{org}/webhooks/endpoints"),
        json!({ "name": "bench", "provider": "stripe", "secrets": [WHSEC],
                "config": { "handler": "inbox" } }),
    )
    .await?;
    let path = string_at(&endpoint, "/path")?;
    let wallet = string_at(
        &post(
            format!("/v1/orgs/{org}/wallets"),
            json!({ "currency": "CREDITS" }),
        )
        .await?,
        "/id",
    )?;
    post(
        format!("/v1/orgs/{org}/wallets/{wallet}/postings"),
        json!({ "kind": "credit", "amount": CREDIT, "memo": "bench" }),
    )
    .await?;
    let deliveries = Deliveries::new(server, &path)?;
    // The measured paths once each, so a misconfiguration fails here rather than as 100 %
    // errors: a new event is stored, the same one again is a duplicate.
    let first = deliveries.delivery("evt_bench_setup")?;
    deliver_once(&first, false).await?;
    deliver_once(&first, true).await?;
    Ok(Setup {
        org,
        wallet,
        deliveries,
    })
}

/// `tasks` concurrent loops of `op` for warm-up + window, like [`load::run`] but around a
/// database call: each op's latency counts if it completes inside the window.
async fn closed_loop<F, Fut>(tasks: usize, cfg: &LoadConfig, op: F) -> Result<Stats>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send,
{
    let warm_end = Instant::now() + cfg.warmup;
    let end = warm_end + cfg.duration;
    let op = Arc::new(op);
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let op = Arc::clone(&op);
            tokio::spawn(async move {
                let (mut latencies, mut errors, mut first_error) = (Vec::new(), 0u64, None);
                while Instant::now() < end {
                    let start = Instant::now();
                    let outcome = op().await;
                    let done = Instant::now();
                    if done < warm_end || done > end {
                        continue;
                    }
                    latencies.push(u64::try_from((done - start).as_nanos()).unwrap_or(u64::MAX));
                    if let Err(e) = outcome {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
                (latencies, errors, first_error)
            })
        })
        .collect();
    let (mut latencies, mut errors, mut first_error) = (Vec::new(), 0, None);
    for h in handles {
        let (l, e, f) = h.await.context("reference task panicked")?;
        latencies.extend(l);
        errors += e;
        if first_error.is_none() {
            first_error = f;
        }
    }
    if let Some(e) = first_error {
        eprintln!("raw reference: {errors} failed transactions, the first: {e:#}");
    }
    Ok(load::stats_from(latencies, errors, cfg.duration))
}

const RAW_UPDATE_PG: &str = "UPDATE bastion_load_raw_wallet SET balance = balance - 1, v = v + 1 WHERE id = $1 AND balance >= 1";
const RAW_UPDATE_SQLITE: &str = "UPDATE bastion_load_raw_wallet SET balance = balance - 1, v = v + 1 WHERE id = ?1 AND balance >= 1";

/// The raw PostgreSQL reference: `connections` pooled connections, each looping
/// BEGIN; conditional UPDATE of the one row; COMMIT.
async fn raw_postgres(url: &str, cfg: &LoadConfig) -> Result<Stats> {
    // Statement logging would cost the reference what Bastion's quiet pool does not pay.
    let opts = url
        .parse::<PgConnectOptions>()
        .context("--database-url")?
        .disable_statement_logging();
    let pool = PgPoolOptions::new()
        .max_connections(u32::try_from(cfg.connections)?)
        .connect_with(opts)
        .await
        .context("connecting the raw reference to PostgreSQL")?;
    sqlx::query(&format!("DROP TABLE IF EXISTS {RAW_TABLE}"))
        .execute(&pool)
        .await?;
    sqlx::query(&format!(
        "CREATE TABLE {RAW_TABLE} (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL, \
         v BIGINT NOT NULL)"
    ))
    .execute(&pool)
    .await?;
    sqlx::query(&format!(
        "INSERT INTO {RAW_TABLE} (id, balance, v) VALUES (1, $1, 0)"
    ))
    .bind(RAW_BALANCE)
    .execute(&pool)
    .await?;
    let p = pool.clone();
    let stats = closed_loop(cfg.connections, cfg, move || {
        let pool = p.clone();
        async move {
            let mut tx = pool.begin().await?;
            let done = sqlx::query(RAW_UPDATE_PG)
                .bind(1_i64)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            ensure!(done.rows_affected() == 1, "the raw update changed no row");
            Ok(())
        }
    })
    .await?;
    sqlx::query(&format!("DROP TABLE {RAW_TABLE}"))
        .execute(&pool)
        .await?;
    pool.close().await;
    Ok(stats)
}

/// The raw SQLite reference: a scratch file opened as Bastion opens its database, `tasks`
/// loops sharing Bastion's pool size, each looping BEGIN IMMEDIATE (as Bastion's postings
/// do); conditional UPDATE; COMMIT.
async fn raw_sqlite(tasks: usize, cfg: &LoadConfig) -> Result<Stats> {
    let dir = tempfile::tempdir()?;
    let opts = SqliteConnectOptions::new()
        .filename(dir.path().join("raw.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(SQLITE_BUSY)
        .disable_statement_logging();
    let pool = SqlitePoolOptions::new()
        .max_connections(SQLITE_POOL)
        .connect_with(opts)
        .await
        .context("opening the raw SQLite reference")?;
    sqlx::query(&format!(
        "CREATE TABLE {RAW_TABLE} (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL, \
         v INTEGER NOT NULL)"
    ))
    .execute(&pool)
    .await?;
    sqlx::query(&format!(
        "INSERT INTO {RAW_TABLE} (id, balance, v) VALUES (1, ?1, 0)"
    ))
    .bind(RAW_BALANCE)
    .execute(&pool)
    .await?;
    let p = pool.clone();
    let stats = closed_loop(tasks, cfg, move || {
        let pool = p.clone();
        async move {
            let mut conn = pool.acquire().await?;
            sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
            let done = sqlx::query(RAW_UPDATE_SQLITE)
                .bind(1_i64)
                .execute(&mut *conn)
                .await;
            let done = match done {
                Ok(d) => d,
                Err(e) => {
                    // Best effort: the connection goes back to the pool either way, and the
                    // update's error is the one worth reporting.
                    let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                    return Err(e.into());
                }
            };
            sqlx::query("COMMIT").execute(&mut *conn).await?;
            ensure!(done.rows_affected() == 1, "the raw update changed no row");
            Ok(())
        }
    })
    .await?;
    pool.close().await;
    Ok(stats)
}

/// Events the PostgreSQL server stored (superuser or owner: row-level security does not hide
/// them), to show every measured delivery was new.
async fn stored_events(url: &str) -> Result<i64> {
    let opts = url
        .parse::<PgConnectOptions>()
        .context("--database-url")?
        .disable_statement_logging();
    let mut conn = opts.connect().await?;
    let n = sqlx::query_scalar("SELECT count(*) FROM bastion.webhook_events")
        .fetch_one(&mut conn)
        .await?;
    Ok(n)
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
struct PaymentsReport {
    backend: &'static str,
    connections: usize,
    warmup_secs: u64,
    duration_secs: u64,
    event_body_bytes: usize,
    healthz: Stats,
    ingest: Stats,
    replay: Stats,
    debit: Stats,
    raw_update_connections: usize,
    raw_update: Stats,
    debits_applied: i64,
    events_stored: Option<i64>,
    ingest_vs_healthz_rps_pct: f64,
    replay_vs_healthz_rps_pct: f64,
    debit_vs_healthz_rps_pct: f64,
    debit_vs_raw_update_pct: f64,
}

pub async fn payments(args: PaymentsArgs) -> Result<()> {
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
    let setup = set_up(&server, &token).await?;
    let event_body_bytes = setup.deliveries.delivery("evt_bench_size")?.body().len();

    let healthz = load::run(&Target::local(server.addr, "/healthz")?, &cfg).await?;
    server.guard.check_running()?;
    let deliveries = Arc::new(setup.deliveries);
    let gen_deliveries = Arc::clone(&deliveries);
    // Connection i's n-th event is evt_bench_i_n: no two requests of a run share an id.
    let ingest = load::run_generated(server.addr, &cfg, move |i, n| {
        gen_deliveries.delivery(&format!("evt_bench_{i}_{n}"))
    })
    .await?;
    server.guard.check_running()?;
    // Signed once; the run is far shorter than Stripe's 300 s timestamp tolerance.
    let replayed = deliveries.delivery("evt_bench_replay")?;
    deliver_once(&replayed, false).await?;
    let replay = load::run(&replayed, &cfg).await?;
    server.guard.check_running()?;
    let (org, wallet) = (&setup.org, &setup.wallet);
    let wallet_path = format!("/v1/orgs/{org}/wallets/{wallet}");
    let debit_target = Target::post_json(
        server.addr,
        &format!("{wallet_path}/postings"),
        &json!({ "kind": "debit", "amount": 1 }),
    )?
    .with_header(AUTHORIZATION, &format!("Bearer {token}"))?;
    let debit = load::run(&debit_target, &cfg).await?;
    server.guard.check_running()?;

    // What the server says it did: the wallet's balance counts every debit applied (warm-up
    // and stragglers included), so it must cover the successes in the window.
    let w = call(
        &server,
        &token,
        Method::GET,
        &wallet_path,
        None,
        StatusCode::OK,
    )
    .await?;
    let balance = w["balance"].as_i64().context("wallet has no balance")?;
    let debits_applied = CREDIT - balance;
    ensure!(
        debits_applied >= i64::try_from(debit.requests - debit.errors)?,
        "the wallet shows {debits_applied} debits, fewer than the {} answered 201",
        debit.requests - debit.errors
    );
    let events_stored = match &args.database_url {
        Some(url) => Some(stored_events(url).await?),
        None => None,
    };
    if let Some(n) = events_stored {
        ensure!(
            n >= i64::try_from(ingest.requests - ingest.errors)?,
            "{n} events stored, fewer than the {} deliveries answered 200: not all were new",
            ingest.requests - ingest.errors
        );
    }
    // The references run with the server stopped, so its idle pool neither competes for the
    // cores nor holds PostgreSQL connections the reference needs.
    drop(server);
    let (raw_connections, raw_update) = match &args.database_url {
        Some(url) => (cfg.connections, raw_postgres(url, &cfg).await?),
        None => (
            SQLITE_POOL as usize,
            raw_sqlite(cfg.connections, &cfg).await?,
        ),
    };

    let h = healthz.requests_per_sec;
    let raw = raw_update.requests_per_sec;
    println!(
        "payments: same Bastion ({backend}), {} keep-alive connections, {} s warm-up, {} s \
         measured each; rate_limit.per_ip_per_second = 0 ({}; all clients share 127.0.0.1)",
        cfg.connections,
        cfg.warmup.as_secs(),
        cfg.duration.as_secs(),
        RATE_LIMIT_ENV.0,
    );
    println!(
        "ingest: each request a new Stripe customer.updated event ({event_body_bytes} bytes, \
         unique id, Stripe-Signature over a fresh timestamp) to one endpoint (inbox handler): \
         verify, dedupe (new), store, process, 200"
    );
    println!("replay: one stored event, signed once, again and again: verify, dedupe (found), 200");
    println!(
        "debit: every connection POSTs {{\"kind\":\"debit\",\"amount\":1}} to the same wallet \
         (owner's bearer token): one row, so every debit serialises on it"
    );
    print_table(&[
        ("GET /healthz", &healthz),
        ("POST /v1/webhooks/{id} (new event)", &ingest),
        ("POST /v1/webhooks/{id} (replay)", &replay),
        ("POST …/wallets/{id}/postings (debit)", &debit),
        ("raw conditional UPDATE, one row", &raw_update),
    ]);
    println!();
    println!(
        "raw reference: {raw_connections} {backend} connections, each looping BEGIN{}; UPDATE \
         {RAW_TABLE} SET balance = balance - 1, v = v + 1 WHERE id = 1 AND balance >= 1; \
         COMMIT{}",
        if backend == "sqlite" {
            " IMMEDIATE"
        } else {
            ""
        },
        if backend == "sqlite" {
            format!(
                " ({} tasks sharing Bastion's SQLite pool size, scratch file, WAL, synchronous \
                 = NORMAL)",
                cfg.connections
            )
        } else {
            " (scratch table in the same database, server stopped)".to_owned()
        }
    );
    println!(
        "ingested events/s: {:.0} = {:.1} % of /healthz requests/s",
        ingest.requests_per_sec,
        pct(ingest.requests_per_sec, h)
    );
    println!(
        "replayed events/s: {:.0} = {:.1} % of /healthz requests/s",
        replay.requests_per_sec,
        pct(replay.requests_per_sec, h)
    );
    println!(
        "debits/s: {:.0} = {:.1} % of /healthz requests/s, {:.1} % of the raw one-row update \
         rate ({raw:.0}/s)",
        debit.requests_per_sec,
        pct(debit.requests_per_sec, h),
        pct(debit.requests_per_sec, raw)
    );
    println!(
        "checks: wallet debited {debits_applied} times in all (warm-up included){}",
        events_stored.map_or(String::new(), |n| format!(
            "; {n} webhook events stored (set-up included)"
        ))
    );
    let runs = [
        ("/healthz", &healthz),
        ("ingest", &ingest),
        ("replay", &replay),
        ("debit", &debit),
        ("raw update", &raw_update),
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
        &PaymentsReport {
            backend,
            connections: cfg.connections,
            warmup_secs: args.load.warmup_secs,
            duration_secs: args.load.duration_secs,
            event_body_bytes,
            ingest_vs_healthz_rps_pct: pct(ingest.requests_per_sec, h),
            replay_vs_healthz_rps_pct: pct(replay.requests_per_sec, h),
            debit_vs_healthz_rps_pct: pct(debit.requests_per_sec, h),
            debit_vs_raw_update_pct: pct(debit.requests_per_sec, raw),
            healthz,
            ingest,
            replay,
            debit,
            raw_update_connections: raw_connections,
            raw_update,
            debits_applied,
            events_stored,
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
        assert!(backend_of(Some("sqlite:///tmp/x.db")).is_err());
    }

    #[test]
    fn hex_is_lower_case_and_two_digits_a_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
    }

    #[test]
    fn deliveries_are_signed_the_stripe_way_over_the_exact_body() {
        let rest = r#""object":"event","type":"customer.updated"}"#.to_owned();
        let d = Deliveries {
            target: Target::local(([127, 0, 0, 1], 9).into(), "/v1/webhooks/whe_x").unwrap(),
            key: hmac::Key::new(hmac::HMAC_SHA256, WHSEC.as_bytes()),
            rest,
        };
        let delivery = d.delivery("evt_1").unwrap();
        let body = delivery.body();
        let v: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v["id"], "evt_1");
        let t = v["created"].as_u64().unwrap();
        let signature = delivery.header(&STRIPE_SIGNATURE).unwrap();
        let (ts, v1) = signature
            .strip_prefix("t=")
            .unwrap()
            .split_once(",v1=")
            .unwrap();
        assert_eq!(ts, t.to_string());
        let mut signed = format!("{t}.").into_bytes();
        signed.extend_from_slice(body);
        let key = hmac::Key::new(hmac::HMAC_SHA256, WHSEC.as_bytes());
        assert_eq!(v1, hex(hmac::sign(&key, &signed).as_ref()));
    }
}
