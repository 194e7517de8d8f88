//! The command line (clap). Flags override the configuration layers below them.

use std::path::PathBuf;

use bastion_server::config::{Overrides, RateLimitOverrides, TlsOverrides};
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "bastion",
    version,
    about = "The security core of a small software company, in one binary."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Configuration file (TOML), layered over the built-in defaults.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory [env: BASTION_DATA_DIR] (default ./bastion-data).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database URL, sqlite://PATH or postgres://… [env: BASTION_DATABASE_URL].
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate,
    /// Configuration helpers.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Exit 0 if the server at URL answers 2xx, else 1 (for orchestrators).
    Healthcheck(HealthcheckArgs),
    /// Key ring administration.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// The tamper-evident audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// TLS helpers.
    #[command(subcommand)]
    Tls(TlsCommand),
    /// Purge ended sessions, spent links, stale lockout counters and old mail now.
    Cleanup {
        /// Only count what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Account administration.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Licensing: products, policies, issuing, freezing, revoking, and offline verification.
    #[command(subcommand)]
    License(LicenseCommand),
}

#[derive(Debug, Subcommand)]
pub enum LicenseCommand {
    /// Create a product in an organization.
    ProductCreate {
        #[arg(long)]
        org: String,
        #[arg(long)]
        name: String,
    },
    /// Create a policy (the terms licenses are issued under) for a product.
    PolicyCreate {
        #[arg(long)]
        org: String,
        #[arg(long)]
        product: String,
        #[arg(long)]
        name: String,
        /// Machines one license may be active on at once.
        #[arg(long)]
        max_machines: u32,
        /// Term from issue in days (default: perpetual).
        #[arg(long)]
        duration_days: Option<u32>,
        /// Offline lease of machine certificates in days (default: `licenses.default_lease_days`).
        #[arg(long)]
        lease_days: Option<u32>,
        /// An entitlement; repeat for several.
        #[arg(long = "entitlement", value_name = "NAME")]
        entitlements: Vec<String>,
    },
    /// Issue a license to an email address: prints the key and mails it to the licensee.
    Issue {
        #[arg(long)]
        org: String,
        #[arg(long)]
        policy: String,
        #[arg(long)]
        email: String,
    },
    /// List an organization's licenses, newest first.
    List {
        #[arg(long)]
        org: String,
        #[arg(long)]
        product: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Show a license and its machines.
    Show { license: String },
    /// Freeze a license key (activations refused until unfrozen).
    Freeze { license: String },
    /// Unfreeze a license key and reset its failed-activation count.
    Unfreeze { license: String },
    /// Revoke a license for good (it joins its product's revocation list).
    Revoke { license: String },
    /// Print every license public key as JSON ({"keys": [...]}), to ship in the app.
    PublicKeys,
    /// Verify a license key offline: no server, no database, only the public key file.
    Verify {
        /// JSON from `bastion license public-keys` (or one key).
        #[arg(long, value_name = "FILE")]
        public_key: PathBuf,
        /// Also check the key is bound to this email.
        #[arg(long)]
        email: Option<String>,
        /// The license key (`BSTL1.…`).
        key: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create an account with no password and print a one-time link that sets it (passwords
    /// never go on a command line).
    CreateUser {
        #[arg(long)]
        email: String,
        /// Make the account a platform Super Admin.
        #[arg(long)]
        super_admin: bool,
    },
}

#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// Listen address [env: BASTION_LISTEN] (default 127.0.0.1:8080).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Prometheus metrics listener, off unless set [env: BASTION_METRICS_LISTEN].
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// Plain-HTTP listener that only redirects to HTTPS [env: BASTION_HTTP_REDIRECT_LISTEN].
    #[arg(long, value_name = "ADDR")]
    pub http_redirect_listen: Option<String>,
    /// PEM certificate chain [env: BASTION_TLS__CERT].
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<String>,
    /// PEM private key [env: BASTION_TLS__KEY].
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<String>,
    /// Lowest TLS version: 1.2 or 1.3 [env: BASTION_TLS__MIN_VERSION].
    #[arg(long, value_name = "VERSION")]
    pub tls_min_version: Option<String>,
    /// Requests per second per client IP; 0 turns the limiter off (benchmarks).
    #[arg(long, value_name = "N")]
    pub rate_limit_per_ip: Option<u32>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the documented default configuration.
    PrintDefault,
}

#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// The URL to probe, e.g. http://127.0.0.1:8080/readyz.
    #[arg(long)]
    pub url: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 5)]
    pub timeout_secs: u64,
    /// PEM CA certificate to trust for https:// URLs (e.g. a self-signed development certificate).
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Show the key ring (purposes, versions, key ids; never key material), the rows each data
    /// key seals and the encryptions each has used.
    Status,
    /// Add the next version of a purpose's key; new work uses it, older versions keep opening
    /// and verifying until rewrapped and retired.
    Rotate {
        #[arg(long)]
        purpose: String,
    },
    /// Re-seal rows sealed by older data keys under the newest one, online, in batches.
    /// Resumable: run it again after an interruption and it continues where it stopped.
    Rewrap {
        /// Only this purpose's columns (default: every sealed column).
        #[arg(long)]
        purpose: Option<String>,
        /// Rows per transaction.
        #[arg(long, default_value_t = 500)]
        batch: u32,
        /// Pause between batches, to spare a busy database.
        #[arg(long, default_value_t = 0)]
        pause_ms: u64,
    },
    /// Retire every version of a data key below N; refused while a row still uses one.
    Retire {
        #[arg(long)]
        purpose: String,
        #[arg(long, value_name = "N")]
        below_version: u32,
    },
    /// Re-wrap every purpose key under the master key in FILE, in one transaction; the
    /// data-directory key file (if that is where the key comes from) is replaced with it.
    RotateMaster {
        #[arg(long, value_name = "FILE")]
        new_key_file: PathBuf,
    },
    /// Write a fresh random master key to a new file (mode 0600), e.g. for rotate-master.
    GenerateMaster {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Re-derive the hash chain and check every checkpoint; exit 1 on any finding.
    Verify {
        /// A checkpoint file kept off the box; the log must still contain what it certifies.
        #[arg(long, value_name = "FILE")]
        checkpoint: Vec<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Export every event with its chain fields.
    Export {
        #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
        format: ExportFormat,
        /// Write here instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Sign a checkpoint of the current head and write it to FILE, to keep elsewhere.
    Checkpoint {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    Jsonl,
}

#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// Write a self-signed development certificate (cert.pem, key.pem) into DIR.
    SelfSigned {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Names the certificate covers.
        #[arg(long = "name", default_values_t = vec!["localhost".to_owned(), "127.0.0.1".to_owned()])]
        names: Vec<String>,
    },
}

impl Cli {
    /// The flag layer of the configuration.
    pub fn overrides(&self) -> Overrides {
        let mut o = Overrides {
            data_dir: self.global.data_dir.clone(),
            database_url: self.global.database_url.clone(),
            ..Default::default()
        };
        if let Command::Serve(s) = &self.command {
            o.listen = s.listen.clone();
            o.metrics_listen = s.metrics_listen.clone();
            o.http_redirect_listen = s.http_redirect_listen.clone();
            if s.tls_cert.is_some() || s.tls_key.is_some() || s.tls_min_version.is_some() {
                o.tls = Some(TlsOverrides {
                    cert: s.tls_cert.clone(),
                    key: s.tls_key.clone(),
                    min_version: s.tls_min_version.clone(),
                });
            }
            if let Some(n) = s.rate_limit_per_ip {
                o.rate_limit = Some(RateLimitOverrides {
                    per_ip_per_second: Some(n),
                });
            }
        }
        o
    }
}
