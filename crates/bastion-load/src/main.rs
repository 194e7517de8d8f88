//! bastion-load: the HTTP load driver. `compare` measures Bastion and a bare axum baseline in the
//! same run, because on a noisy machine only the ratio between them is worth reporting; the
//! account scenarios (`auth-me`, `login-storm`) and `licenses` likewise report each figure
//! beside a baseline taken in the same run.

mod accounts;
mod baseline;
mod licenses;
mod load;
mod payments;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::load::{LoadConfig, Stats, Target};

/// The same allocator as the `bastion` binary, so the baseline differs from Bastion only by
/// Bastion itself (this also serves the load generator).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How often a starting server is polled; small, because cold start is one of the figures.
const POLL: Duration = Duration::from_millis(2);
/// A fresh data dir means migrations and key generation, so allow a generous start-up.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Let start-up allocations settle before reading the idle RSS.
const SETTLE: Duration = Duration::from_millis(500);
/// How long a child gets to exit on SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

#[derive(Parser)]
#[command(
    name = "bastion-load",
    about = "HTTP load driver for Bastion (loopback only)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Load a bare axum baseline, then Bastion, with the same settings, and report both.
    Compare(CompareArgs),
    /// Load an already running server.
    Drive(DriveArgs),
    /// Authenticated `GET /v1/me` against `/healthz` on the same Bastion.
    AuthMe(accounts::AuthMeArgs),
    /// 16 clients signing in with the right password, round robin over 64 accounts, under
    /// production sign-in limits, while one connection probes `/healthz`; compared with
    /// `cores` threads hashing at once in this process. Fails if any sign-in is refused.
    LoginStorm(accounts::LoginStormArgs),
    /// License activation (renewal) and validation, one license per connection, against
    /// `/healthz` on the same Bastion and the raw RS256 sign rate measured in this process.
    Licenses(licenses::LicensesArgs),
    /// Verified Stripe webhook ingest (a new signed event per request, and a replay) and
    /// debits of one hot wallet, against `/healthz` on the same Bastion and, for the debits,
    /// the raw database's one-row conditional UPDATE rate measured in this process.
    Payments(payments::PaymentsArgs),
    /// The baseline server `compare` starts (re-executing this binary).
    #[command(hide = true)]
    BaselineServer {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        port_file: PathBuf,
    },
}

#[derive(Args)]
struct LoadArgs {
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Measured window.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Load applied before the window opens and not recorded.
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

impl LoadArgs {
    fn config(&self) -> LoadConfig {
        LoadConfig {
            connections: self.connections,
            warmup: Duration::from_secs(self.warmup_secs),
            duration: Duration::from_secs(self.duration_secs),
            pace: None,
        }
    }
}

#[derive(Args)]
struct CompareArgs {
    /// The Bastion binary, e.g. target/release/bastion.
    #[arg(long)]
    bastion_bin: PathBuf,
    /// Path loaded on both servers (the baseline only serves /healthz).
    #[arg(long, default_value = "/healthz")]
    path: String,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Args)]
struct DriveArgs {
    /// e.g. http://127.0.0.1:8080/healthz
    #[arg(long)]
    url: String,
    /// Extra request header, 'Name: value'; repeatable.
    #[arg(long = "header")]
    headers: Vec<String>,
    #[command(flatten)]
    load: LoadArgs,
}

fn main() -> Result<()> {
    // The client gets a multi-thread runtime too, or it would be the bottleneck, not the server.
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    };
    match Cli::parse().cmd {
        Cmd::Compare(args) => runtime()?.block_on(compare(args)),
        Cmd::Drive(args) => runtime()?.block_on(drive(args)),
        Cmd::AuthMe(args) => runtime()?.block_on(accounts::auth_me(args)),
        Cmd::LoginStorm(args) => runtime()?.block_on(accounts::login_storm(args)),
        Cmd::Licenses(args) => runtime()?.block_on(licenses::licenses(args)),
        Cmd::Payments(args) => runtime()?.block_on(payments::payments(args)),
        Cmd::BaselineServer { listen, port_file } => baseline::run(listen, &port_file),
    }
}

async fn drive(args: DriveArgs) -> Result<()> {
    let target = Target::from_url(&args.url, &args.headers)?;
    let stats = load::run(&target, &args.load.config()).await?;
    print_table(&[("target", &stats)]);
    if let Some(path) = &args.load.json {
        let report = serde_json::json!({
            "url": args.url,
            "connections": args.load.connections,
            "warmup_secs": args.load.warmup_secs,
            "duration_secs": args.load.duration_secs,
            "stats": stats,
        });
        write_json(path, &report)?;
    }
    Ok(())
}

#[derive(Serialize)]
struct ServerRun {
    #[serde(flatten)]
    stats: Stats,
    cold_start_ms: f64,
    idle_rss_mib: f64,
    peak_rss_mib: f64,
}

#[derive(Serialize)]
struct CompareReport<'a> {
    path: &'a str,
    connections: usize,
    warmup_secs: u64,
    duration_secs: u64,
    baseline: ServerRun,
    bastion: ServerRun,
    bastion_vs_baseline_rps_pct: f64,
}

async fn compare(args: CompareArgs) -> Result<()> {
    let cfg = args.load.config();
    // Declared before the child guards so they outlive the children (locals drop in reverse).
    let scratch = tempfile::tempdir()?;
    let data_dir = tempfile::tempdir()?;

    // The baseline runs alone and is stopped before Bastion starts, so neither competes for the
    // two cores with the other's idle threads.
    let baseline = {
        let port_file = scratch.path().join("baseline.port");
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args(["baseline-server", "--listen", "127.0.0.1:0", "--port-file"])
            .arg(&port_file);
        let started = Instant::now();
        let mut child = Guard::spawn("baseline", cmd)?;
        let port = wait_port_file(&port_file, &mut child).await?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        measure(child, started, addr, &args.path, &cfg).await?
    };

    let bastion = {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
        let cmd = bastion_command(&args.bastion_bin, addr, data_dir.path());
        let started = Instant::now();
        let child = Guard::spawn("bastion", cmd)?;
        measure(child, started, addr, &args.path, &cfg).await?
    };

    let pct = 100.0 * bastion.stats.requests_per_sec / baseline.stats.requests_per_sec;
    print_table(&[("baseline", &baseline.stats), ("bastion", &bastion.stats)]);
    println!();
    println!("bastion/baseline requests/s: {pct:.1} %");
    for (what, b, a) in [
        (
            "cold start (ms)",
            baseline.cold_start_ms,
            bastion.cold_start_ms,
        ),
        (
            "idle RSS (MiB)",
            baseline.idle_rss_mib,
            bastion.idle_rss_mib,
        ),
        (
            "peak RSS (MiB)",
            baseline.peak_rss_mib,
            bastion.peak_rss_mib,
        ),
    ] {
        println!("{what:<28} bastion {a:>8.1}   baseline {b:>8.1}");
    }
    if let Some(path) = &args.load.json {
        let report = CompareReport {
            path: &args.path,
            connections: args.load.connections,
            warmup_secs: args.load.warmup_secs,
            duration_secs: args.load.duration_secs,
            baseline,
            bastion,
            bastion_vs_baseline_rps_pct: pct,
        };
        write_json(path, &report)?;
    }
    Ok(())
}

/// `bastion serve` on `addr` with its own data dir and the per-IP rate limit off (one client
/// IP sends everything); the caller adds configuration through the environment.
fn bastion_command(bin: &Path, addr: SocketAddr, data_dir: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("serve")
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--rate-limit-per-ip", "0"])
        .env("RUST_LOG", "warn");
    cmd
}

/// Polls /healthz until it answers 2xx; returns the time since `started` (the cold start).
async fn wait_healthy(child: &mut Guard, started: Instant, addr: SocketAddr) -> Result<Duration> {
    let health = Target::local(addr, "/healthz")?;
    loop {
        if matches!(load::probe(&health).await, Ok(s) if s.is_success()) {
            return Ok(started.elapsed());
        }
        child.check_running()?;
        if started.elapsed() > START_TIMEOUT {
            bail!("{} not healthy after {START_TIMEOUT:?}", child.name);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Cold start (spawn until /healthz first answers 200), idle RSS, then the load; stops the child.
async fn measure(
    mut child: Guard,
    started: Instant,
    addr: SocketAddr,
    path: &str,
    cfg: &LoadConfig,
) -> Result<ServerRun> {
    let cold_start_ms = wait_healthy(&mut child, started, addr).await?.as_secs_f64() * 1e3;
    tokio::time::sleep(SETTLE).await;
    let idle_rss_mib = proc_status_kib(child.pid(), "VmRSS")? / 1024.0;
    let stats = load::run(&Target::local(addr, path)?, cfg).await?;
    // The high-water mark must be read before the process goes away.
    let peak_rss_mib = proc_status_kib(child.pid(), "VmHWM")? / 1024.0;
    child.check_running()?;
    drop(child);
    Ok(ServerRun {
        stats,
        cold_start_ms,
        idle_rss_mib,
        peak_rss_mib,
    })
}

async fn wait_port_file(path: &Path, child: &mut Guard) -> Result<u16> {
    let started = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            return s
                .trim()
                .parse()
                .with_context(|| format!("bad port file content {s:?}"));
        }
        child.check_running()?;
        if started.elapsed() > START_TIMEOUT {
            bail!("{} wrote no port file within {START_TIMEOUT:?}", child.name);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Racy by nature (the port is free only until someone else binds it), which is acceptable on a
/// benchmark machine and is the only way to hand Bastion a known `--listen` address.
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// A field of /proc/<pid>/status, in KiB (the kernel's "kB").
fn proc_status_kib(pid: u32, field: &str) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

fn print_table(rows: &[(&str, &Stats)]) {
    let width = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(0).max(10);
    println!(
        "{:<width$} {:>12} {:>10} {:>10} {:>10} {:>10} {:>8}",
        "server", "requests/s", "p50", "p99", "p99.9", "max", "errors"
    );
    for (name, s) in rows {
        println!(
            "{:<width$} {:>12.0} {:>10} {:>10} {:>10} {:>10} {:>8}",
            name,
            s.requests_per_sec,
            fmt_latency(s.p50_us),
            fmt_latency(s.p99_us),
            fmt_latency(s.p999_us),
            fmt_latency(s.max_us),
            s.errors
        );
    }
}

fn fmt_latency(us: f64) -> String {
    if us < 1_000.0 {
        format!("{us:.0} µs")
    } else {
        format!("{:.2} ms", us / 1e3)
    }
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

/// Owns a server child: stops it on drop, so an error anywhere never leaves a server behind.
struct Guard {
    name: &'static str,
    child: Child,
}

impl Guard {
    fn spawn(name: &'static str, mut cmd: Command) -> Result<Self> {
        // stdout would interleave with the table; stderr stays visible for start-up failures.
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Self { name, child })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            Some(status) => bail!("{} exited early: {status}", self.name),
            None => Ok(()),
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        // SIGTERM first so Bastion takes its production shutdown path; SIGKILL if it lingers.
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
