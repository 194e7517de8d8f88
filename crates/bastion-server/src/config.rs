//! Layered configuration (figment): embedded `config/default.toml` -> `--config FILE` ->
//! `BASTION_*` environment (`__` nests) -> command-line flags. Unknown keys are errors.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bastion_api::{HttpConfig, RateLimitConfig, SecurityTxtConfig};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// The documented defaults, embedded in the binary.
pub const DEFAULT_TOML: &str = include_str!("../../../config/default.toml");

/// Environment variables with the `BASTION_` prefix that are not configuration keys.
const NOT_CONFIG_ENV: &[&str] = &[
    "master_key",
    "test_postgres_url",
    "test_require_postgres",
    "config",
    "smtp_password",
    "stripe_secret_key",
];

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: String,
    pub database_migrate_url: String,
    pub database_max_connections: u32,
    pub metrics_listen: String,
    pub http_redirect_listen: String,
    pub public_url: String,
    pub http: HttpConfig,
    pub rate_limit: RateLimitConfig,
    pub tls: TlsConfig,
    pub tokens: TokensConfig,
    pub auth: AuthConfig,
    pub keys: KeysConfig,
    pub licenses: LicensesConfig,
    pub payments: PaymentsConfig,
    pub webhooks: WebhooksConfig,
    pub audit: AuditConfig,
    pub email: EmailConfig,
    pub cleanup: CleanupConfig,
    /// Organization level name -> the permissions it adds (see `config/default.toml`).
    pub permissions: std::collections::BTreeMap<String, Vec<String>>,
    pub security_txt: SecurityTxtConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PaymentsConfig {
    pub stripe_api_base: String,
    pub stripe_secret_key_file: String,
    pub timeout_secs: u64,
    pub success_url: String,
    pub cancel_url: String,
    pub idempotency_ttl_hours: u64,
    pub wallet_optimistic_attempts: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    pub max_attempts: u32,
    pub retry_base_secs: u64,
    pub retry_max_secs: u64,
    pub lease_secs: u64,
    pub poll_interval_secs: u64,
}

impl PaymentsConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let url = self.stripe_api_base.trim_end_matches('/');
        if !(url.starts_with("https://")
            || url.starts_with("http://127.0.0.1")
            || url.starts_with("http://localhost"))
        {
            return Err(ConfigError::Invalid(
                "payments.stripe_api_base must be https (plain http only to localhost, for tests)"
                    .into(),
            ));
        }
        if self.timeout_secs == 0
            || self.idempotency_ttl_hours == 0
            || self.wallet_optimistic_attempts == 0
        {
            return Err(ConfigError::Invalid(
                "payments: timeout_secs, idempotency_ttl_hours and wallet_optimistic_attempts must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

impl WebhooksConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_attempts == 0
            || self.retry_base_secs == 0
            || self.lease_secs == 0
            || self.poll_interval_secs == 0
            || self.retry_max_secs < self.retry_base_secs
        {
            return Err(ConfigError::Invalid(
                "webhooks: counts and intervals must be at least 1, retry_max_secs >= retry_base_secs".into(),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    pub reload_secs: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    pub transport: String,
    pub from: String,
    pub product_name: String,
    pub link_base_url: String,
    pub retry_base_secs: u64,
    pub retry_max_secs: u64,
    pub max_attempts: u32,
    pub poll_interval_ms: u64,
    pub retention_days: u64,
    pub smtp: SmtpConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub security: String,
    pub username: String,
    pub password_file: String,
    pub hello_name: String,
    pub timeout_secs: u64,
    pub ca_cert: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CleanupConfig {
    pub interval_secs: u64,
    pub batch_size: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: String,
    pub key: String,
    pub min_version: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TokensConfig {
    pub algorithm: String,
    pub access_ttl_secs: u64,
    pub rotate_after_days: u64,
    pub issuer: String,
    pub audience: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub password_algorithm: String,
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub argon2_parallelism: u32,
    pub bcrypt_cost: u32,
    pub hashing_pool_size: usize,
    pub password_deny_list: String,
    pub session_idle_days: u64,
    pub session_absolute_days: u64,
    pub refresh_grace_secs: u64,
    pub login_max_failures: u32,
    pub login_window_secs: u64,
    pub login_lockout_secs: u64,
    pub login_ip_max_failures: u32,
    pub login_ip_max_accounts: u32,
    pub require_verified_email: bool,
    pub link_ttl_secs: u64,
    pub mail_per_address_per_hour: u32,
    pub mail_per_requester_per_hour: u32,
}

impl AuthConfig {
    pub fn password_policy(&self) -> Result<bastion_crypto::password::PasswordPolicy, ConfigError> {
        use bastion_crypto::password::{PasswordAlgorithm, PasswordPolicy};
        let algorithm = match self.password_algorithm.as_str() {
            "argon2id" => PasswordAlgorithm::Argon2id,
            "bcrypt" => PasswordAlgorithm::Bcrypt,
            other => {
                return Err(ConfigError::Invalid(format!(
                    "auth.password_algorithm must be \"argon2id\" or \"bcrypt\", not {other:?}"
                )));
            }
        };
        if !(4..=31).contains(&self.bcrypt_cost)
            || self.argon2_memory_kib < 8
            || self.argon2_iterations == 0
            || self.argon2_parallelism == 0
        {
            return Err(ConfigError::Invalid(
                "auth: argon2/bcrypt parameters out of range".into(),
            ));
        }
        Ok(PasswordPolicy {
            algorithm,
            argon2_memory_kib: self.argon2_memory_kib,
            argon2_iterations: self.argon2_iterations,
            argon2_parallelism: self.argon2_parallelism,
            bcrypt_cost: self.bcrypt_cost,
        })
    }
}

impl TokensConfig {
    /// The validated signing algorithm.
    pub fn jwt_algorithm(&self) -> Result<bastion_crypto::jwt::JwtAlgorithm, ConfigError> {
        bastion_crypto::jwt::JwtAlgorithm::parse(&self.algorithm).ok_or_else(|| {
            ConfigError::Invalid(format!(
                "tokens.algorithm must be \"RS256\", \"ES256\" or \"EdDSA\", not {:?}",
                self.algorithm
            ))
        })
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LicensesConfig {
    pub algorithm: String,
    pub ip_max_failures: u32,
    pub ip_window_secs: u64,
    pub ip_lockout_secs: u64,
    pub key_max_failures: u32,
    pub default_lease_days: u64,
    pub deactivations_per_day: u32,
}

impl LicensesConfig {
    /// The validated license-signing algorithm.
    pub fn signing_algorithm(&self) -> Result<bastion_crypto::jwt::JwtAlgorithm, ConfigError> {
        use bastion_crypto::jwt::JwtAlgorithm;
        match JwtAlgorithm::parse(&self.algorithm) {
            Some(a @ (JwtAlgorithm::Rs256 | JwtAlgorithm::EdDsa)) => Ok(a),
            _ => Err(ConfigError::Invalid(format!(
                "licenses.algorithm must be \"RS256\" or \"EdDSA\", not {:?}",
                self.algorithm
            ))),
        }
    }

    /// Checks the limits: every count at least 1, every duration positive.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.signing_algorithm()?;
        if self.ip_max_failures == 0
            || self.key_max_failures == 0
            || self.ip_window_secs == 0
            || self.ip_lockout_secs == 0
            || self.default_lease_days == 0
            || self.deactivations_per_day == 0
        {
            return Err(ConfigError::Invalid(
                "licenses: failure counts, windows, lockouts, the lease and deactivations_per_day must be at least 1"
                    .to_owned(),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    pub checkpoint_every_events: u64,
    pub checkpoint_every_secs: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub level: String,
    pub format: String,
}

/// Flags that override configuration; `None` leaves the lower layers in force.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_redirect_listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsOverrides>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitOverrides>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TlsOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_version: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RateLimitOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_ip_per_second: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Invalid(String),
    #[error("configuration file {0}: not found")]
    FileMissing(PathBuf),
}

/// Which database a URL names. Anything but these two schemes is refused, so a typo never
/// silently creates a new database file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Sqlite(String),
    Postgres(String),
}

impl Config {
    /// Loads the layers; `file` is `--config`, `env` the process environment (injectable for tests).
    pub fn load(
        file: Option<&Path>,
        env: Option<Env>,
        overrides: &Overrides,
    ) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(f) = file {
            if !f.exists() {
                return Err(ConfigError::FileMissing(f.to_owned()));
            }
            fig = fig.merge(Toml::file(f));
        }
        let env = env.unwrap_or_else(|| Env::prefixed("BASTION_"));
        fig = fig.merge(
            env.filter(|k| {
                !NOT_CONFIG_ENV
                    .iter()
                    .any(|n| k.as_str().eq_ignore_ascii_case(n))
            })
            .split("__"),
        );
        fig = fig.merge(Serialized::defaults(overrides));
        let cfg: Config = fig
            .extract()
            .map_err(|e| ConfigError::Invalid(describe(e)))?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        self.database()?;
        if self.keys.reload_secs == 0 {
            return bad("keys.reload_secs must be at least 1".into());
        }
        let migrate_ok = self.database_migrate_url.is_empty()
            || (matches!(self.database()?, DatabaseUrl::Postgres(_))
                && self.database_migrate_url.starts_with("postgres"));
        if !migrate_ok {
            return bad(
                "database_migrate_url is for PostgreSQL: set it and database_url to postgres:// URLs"
                    .into(),
            );
        }
        self.tokens.jwt_algorithm()?;
        self.licenses.validate()?;
        self.payments.validate()?;
        self.webhooks.validate()?;
        self.auth.password_policy()?;
        self.permission_map()?;
        if self.auth.login_max_failures == 0
            || self.auth.login_ip_max_failures == 0
            || self.auth.login_ip_max_accounts == 0
            || self.auth.session_idle_days == 0
        {
            return bad("auth.login_max_failures, auth.login_ip_max_failures, auth.login_ip_max_accounts and auth.session_idle_days must be positive".into());
        }
        if !(60..=86_400).contains(&self.tokens.access_ttl_secs) {
            return bad(format!(
                "tokens.access_ttl_secs must be between 60 and 86400, not {}",
                self.tokens.access_ttl_secs
            ));
        }
        if !matches!(self.tls.min_version.as_str(), "1.2" | "1.3") {
            return bad(format!(
                "tls.min_version must be \"1.2\" or \"1.3\", not {:?}",
                self.tls.min_version
            ));
        }
        if self.tls.cert.is_empty() != self.tls.key.is_empty() {
            return bad("tls.cert and tls.key must be set together".into());
        }
        if !self.http_redirect_listen.is_empty() && self.tls.cert.is_empty() {
            return bad(
                "http_redirect_listen needs TLS (tls.cert and tls.key): it only redirects to HTTPS"
                    .into(),
            );
        }
        for (key, v) in [
            ("metrics_listen", &self.metrics_listen),
            ("http_redirect_listen", &self.http_redirect_listen),
        ] {
            if !v.is_empty() && v.parse::<SocketAddr>().is_err() {
                return bad(format!(
                    "{key} must be an address like 127.0.0.1:9090, not {v:?}"
                ));
            }
        }
        if !self.public_url.is_empty() && !self.public_url.starts_with("https://") {
            return bad(format!(
                "public_url must be an https:// origin, not {:?}",
                self.public_url
            ));
        }
        if self.http.request_timeout_ms == 0 || self.http.body_limit_bytes == 0 {
            return bad(
                "http.request_timeout_ms and http.body_limit_bytes must be positive".into(),
            );
        }
        if !matches!(self.email.transport.as_str(), "file" | "smtp") {
            return bad(format!(
                "email.transport must be \"file\" or \"smtp\", not {:?}",
                self.email.transport
            ));
        }
        if self.email.transport == "smtp" && self.email.smtp.host.is_empty() {
            return bad("email.transport = \"smtp\" needs email.smtp.host".into());
        }
        if !matches!(
            self.email.smtp.security.as_str(),
            "starttls" | "tls" | "none"
        ) {
            return bad(format!(
                "email.smtp.security must be \"starttls\", \"tls\" or \"none\", not {:?}",
                self.email.smtp.security
            ));
        }
        if self.email.from.parse::<lettre::message::Mailbox>().is_err() {
            return bad(format!(
                "email.from must be an address like \"Acme <no-reply@acme.example>\", not {:?}",
                self.email.from
            ));
        }
        let base = &self.email.link_base_url;
        if !(base.is_empty() || base.starts_with("https://") || base.starts_with("http://")) {
            return bad(format!(
                "email.link_base_url must be an http(s):// origin, not {base:?}"
            ));
        }
        if self.email.max_attempts == 0
            || self.email.retry_base_secs == 0
            || self.email.poll_interval_ms == 0
            || self.auth.link_ttl_secs == 0
            || self.auth.mail_per_address_per_hour == 0
            || self.auth.mail_per_requester_per_hour == 0
            || self.cleanup.interval_secs == 0
            || self.cleanup.batch_size == 0
        {
            return bad("email.max_attempts, email.retry_base_secs, email.poll_interval_ms, auth.link_ttl_secs, auth.mail_per_address_per_hour, auth.mail_per_requester_per_hour, cleanup.interval_secs and cleanup.batch_size must be positive".into());
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return bad(format!(
                "log.format must be \"text\" or \"json\", not {:?}",
                self.log.format
            ));
        }
        if self.audit.checkpoint_every_events == 0 || self.audit.checkpoint_every_secs == 0 {
            return bad(
                "audit.checkpoint_every_events and audit.checkpoint_every_secs must be positive"
                    .into(),
            );
        }
        Ok(())
    }

    /// The validated level -> permissions map.
    pub fn permission_map(&self) -> Result<bastion_core::orgs::PermissionMap, ConfigError> {
        let mut levels = self.permissions.clone();
        let publishable = levels.remove("publishable").unwrap_or_default();
        bastion_core::orgs::PermissionMap::from_additions(&levels)
            .and_then(|m| m.with_publishable(&publishable))
            .map_err(|e| ConfigError::Invalid(format!("permissions: {e}")))
    }

    /// Where magic links point: `email.link_base_url`, else `public_url`, else this server.
    pub fn link_base_url(&self) -> String {
        if !self.email.link_base_url.is_empty() {
            self.email.link_base_url.clone()
        } else if !self.public_url.is_empty() {
            self.public_url.clone()
        } else {
            format!("http://{}", self.listen)
        }
    }

    /// The database to open: `database_url`, or SQLite in the data directory when empty.
    pub fn database(&self) -> Result<DatabaseUrl, ConfigError> {
        let url = self.database_url.trim();
        if url.is_empty() {
            return Ok(DatabaseUrl::Sqlite(format!(
                "sqlite://{}",
                self.data_dir.join("bastion.db").display()
            )));
        }
        match url.split_once("://").map(|(s, _)| s) {
            Some("sqlite") => Ok(DatabaseUrl::Sqlite(url.to_owned())),
            Some("postgres" | "postgresql") => Ok(DatabaseUrl::Postgres(url.to_owned())),
            Some(other) => Err(ConfigError::Invalid(format!(
                "database_url: unknown scheme {other:?}; use sqlite://PATH or postgres://USER@HOST/DB"
            ))),
            None => Err(ConfigError::Invalid(
                "database_url: expected sqlite://PATH or postgres://USER@HOST/DB".into(),
            )),
        }
    }
}

/// figment's error, phrased for an operator (it names the key, e.g. `unknown field `listn``).
fn describe(e: figment::Error) -> String {
    e.into_iter()
        .map(|e| {
            let path = e.path.join(".");
            let src = e
                .metadata
                .as_ref()
                .map(|m| m.name.to_string())
                .unwrap_or_default();
            let mut s = e.kind.to_string();
            if !path.is_empty() {
                s = format!("{s} (at `{path}`)");
            }
            if !src.is_empty() {
                s = format!("{s} in {src}");
            }
            s
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail fixes the closures' error type.
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn defaults_load_and_are_zero_config() {
        Jail::expect_with(|_| {
            let c = Config::load(None, None, &Overrides::default()).unwrap();
            assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
            assert_eq!(c.data_dir, PathBuf::from("./bastion-data"));
            assert!(
                matches!(c.database().unwrap(), DatabaseUrl::Sqlite(u) if u.ends_with("bastion-data/bastion.db"))
            );
            assert_eq!(c.http.request_timeout_ms, 30_000);
            Ok(())
        });
    }

    #[test]
    fn layers_override_in_order_and_unknown_keys_are_named() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "b.toml",
                "listen = \"127.0.0.1:1\"\n[http]\nbody_limit_bytes = 5\n",
            )?;
            jail.set_env("BASTION_LISTEN", "127.0.0.1:2");
            jail.set_env("BASTION_HTTP__REQUEST_TIMEOUT_MS", "7");
            jail.set_env("BASTION_MASTER_KEY", "not a config key");
            let c = Config::load(Some(Path::new("b.toml")), None, &Overrides::default()).unwrap();
            assert_eq!(c.listen.to_string(), "127.0.0.1:2", "env beats file");
            assert_eq!(c.http.body_limit_bytes, 5);
            assert_eq!(c.http.request_timeout_ms, 7);
            let flags = Overrides {
                listen: Some("127.0.0.1:3".into()),
                ..Default::default()
            };
            assert_eq!(
                Config::load(Some(Path::new("b.toml")), None, &flags)
                    .unwrap()
                    .listen
                    .to_string(),
                "127.0.0.1:3"
            );

            jail.create_file("bad.toml", "[http]\nrequest_timeout_msec = 1\n")?;
            let err = Config::load(Some(Path::new("bad.toml")), None, &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("request_timeout_msec"), "{err}");
            jail.set_env("BASTION_LISTN", "x");
            let err = Config::load(None, None, &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("listn"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn unknown_database_scheme_is_refused_and_named() {
        Jail::expect_with(|jail| {
            jail.set_env("BASTION_DATABASE_URL", "mysql://root@localhost/db");
            let err = Config::load(None, None, &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("\"mysql\""), "{err}");
            Ok(())
        });
    }

    #[test]
    fn r3_the_default_permission_map_is_valid_and_overrides_are_checked() {
        Jail::expect_with(|jail| {
            let c = Config::load(None, None, &Overrides::default()).unwrap();
            let map = c.permission_map().unwrap();
            use bastion_core::orgs::Level;
            assert!(
                map.allows(Level::Admin, "secrets.reveal"),
                "Admin and above reveal"
            );
            assert!(!map.allows(Level::Manager, "secrets.reveal"));
            assert!(map.allows(Level::SuperAdmin, "audit.read"));
            assert!(!map.allows(Level::Admin, "org.delete"));

            jail.create_file("p.toml", "[permissions]\nmanager = [\"secrets.reveal\"]\n")?;
            let c = Config::load(Some(Path::new("p.toml")), None, &Overrides::default()).unwrap();
            assert!(
                c.permission_map()
                    .unwrap()
                    .allows(Level::Manager, "secrets.reveal")
            );

            jail.create_file("bad.toml", "[permissions]\nroot = [\"org.read\"]\n")?;
            let err = Config::load(Some(Path::new("bad.toml")), None, &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("root"), "{err}");
            jail.create_file("bad2.toml", "[permissions]\nviewer = [\"Org Read\"]\n")?;
            let err = Config::load(Some(Path::new("bad2.toml")), None, &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("Org Read"), "{err}");
            // R6: the publishable set is read-only, checked at start-up.
            assert!(map.publishable_allows("org.read"));
            jail.create_file(
                "bad3.toml",
                "[permissions]\npublishable = [\"org.read\", \"members.invite\"]\n",
            )?;
            let err = Config::load(Some(Path::new("bad3.toml")), None, &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("members.invite"), "{err}");
            Ok(())
        });
    }
}
