//! Start-up: data directory, storage, master key, key ring, audit log; then the listeners.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use bastion_api::AppState;
use bastion_api::middleware::rate_limit::{ApiKeyRateLimit, IpRateLimit};
use bastion_core::accounts::{AccountDeps, AccountPolicy, Accounts};
use bastion_core::audit::{AuditEvent, AuditLog, Category, Outcome};
use bastion_core::cleanup::{Cleanup, CleanupPolicy};
use bastion_core::idempotency::Idempotency;
use bastion_core::keys::{KeyRing, KeyRingOptions, SharedKeyRing};
use bastion_core::licenses::{Licensing, LicensingConfig};
use bastion_core::links::MagicLinks;
use bastion_core::mail::{Branding, DispatchPolicy, Mailer};
use bastion_core::orgs::{OrgDeps, Orgs};
use bastion_core::passwords::{PasswordHashing, PasswordRules};
use bastion_core::payments::gateway::Unconfigured;
use bastion_core::payments::{PaymentGateway, Payments, PaymentsConfig};
use bastion_core::sessions::{SessionPolicy, Sessions};
use bastion_core::vault::Vault;
use bastion_core::vault::secrets::Secrets;
use bastion_core::wallet::{WalletConfig, Wallets};
use bastion_core::webhooks::{RetryPolicy, Webhooks};
use bastion_core::{Clock, SystemClock};
use bastion_crypto::keyring::Purpose;
use bastion_crypto::master::MasterKey;
use bastion_store::{Store, StoredKey, ThrottleRule};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::master_key::{self, MasterKeySource};
use crate::{jobs, listen, storage, tls};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("{0}")]
    Config(String),
    #[error("data directory: {0}")]
    DataDir(String),
    #[error("database: {0}")]
    Database(String),
    #[error("master key: {0}")]
    MasterKey(String),
    #[error(transparent)]
    Keys(#[from] bastion_core::keys::KeyError),
    #[error("audit log: {0}")]
    Audit(#[from] bastion_core::audit::AuditError),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("listener: {0}")]
    Listen(String),
}

/// An opened Bastion: storage, keys and audit log, shared by the server and the CLI.
pub struct Bastion {
    pub store: Arc<dyn Store>,
    pub keys: Arc<SharedKeyRing>,
    /// Seals and opens every stored secret, under the ring's purpose keys.
    pub vault: Arc<Vault>,
    pub audit: Arc<AuditLog>,
    pub clock: Arc<dyn Clock>,
    pub master_key_source: MasterKeySource,
    pub data_dir: PathBuf,
    /// Kept (zeroized on drop) to reload and rotate the key ring while running.
    master: MasterKey,
    key_options: KeyRingOptions,
}

impl Bastion {
    /// Opens everything; a wrong master key fails here, before anything is written.
    pub async fn open(cfg: &Config) -> Result<Self, StartupError> {
        Self::open_with_clock(cfg, Arc::new(SystemClock)).await
    }

    /// As [`Bastion::open`] on another clock (tests move time instead of sleeping).
    pub async fn open_with_clock(
        cfg: &Config,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StartupError> {
        master_key::ensure_data_dir(&cfg.data_dir)?;
        let store = storage::open(cfg).await?;
        let (master, source) = master_key::resolve(&cfg.data_dir, store.as_ref()).await?;
        let key_options = KeyRingOptions {
            token_algorithm: cfg
                .tokens
                .jwt_algorithm()
                .map_err(|e| StartupError::Config(e.to_string()))?,
            license_algorithm: cfg
                .licenses
                .signing_algorithm()
                .map_err(|e| StartupError::Config(e.to_string()))?,
        };
        let keys = SharedKeyRing::new(
            KeyRing::open_with(store.as_ref(), &master, clock.as_ref(), &key_options).await?,
        );
        let audit = Arc::new(AuditLog::new(
            store.clone(),
            keys.clone(),
            clock.clone(),
            cfg.audit.checkpoint_every_events,
        ));
        let vault = Arc::new(Vault::new(keys.clone(), store.clone()));
        Ok(Self {
            store,
            keys,
            vault,
            audit,
            clock,
            master_key_source: source,
            data_dir: cfg.data_dir.clone(),
            master,
            key_options,
        })
    }

    /// Re-reads the key ring (new versions from a rotation here or on another node).
    pub async fn reload_keys(&self) -> Result<(), StartupError> {
        let ring = KeyRing::open_with(
            self.store.as_ref(),
            &self.master,
            self.clock.as_ref(),
            &self.key_options,
        )
        .await?;
        self.keys.replace(ring);
        Ok(())
    }

    /// Re-wraps every purpose key under `new` (atomically) and, when the master key in use came
    /// from the data directory's file, replaces that file with `new`. Returns how many keys were
    /// re-wrapped. With `BASTION_MASTER_KEY`, the operator must set the new value before the
    /// next start: the old key no longer opens the key ring.
    pub async fn rotate_master(&self, new: &MasterKey) -> Result<usize, StartupError> {
        let n = KeyRing::rotate_master(self.store.as_ref(), &self.master, new, self.clock.as_ref())
            .await?;
        if let MasterKeySource::File(path) | MasterKeySource::Generated(path) =
            &self.master_key_source
        {
            master_key::replace_key_file(path, new)?;
        }
        Ok(n)
    }

    /// Adds the next version of `purpose`'s key and reloads the ring.
    pub async fn rotate_key(&self, purpose: Purpose) -> Result<StoredKey, StartupError> {
        let row = KeyRing::rotate(
            self.store.as_ref(),
            &self.master,
            self.clock.as_ref(),
            purpose,
            &self.key_options,
        )
        .await?;
        self.reload_keys().await?;
        Ok(row)
    }
}

fn metrics_handle() -> Result<PrometheusHandle, StartupError> {
    // Several servers may share a process (tests): install the recorder once, atomically.
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| PrometheusBuilder::new().install_recorder().ok())
        .clone()
        .ok_or_else(|| {
            StartupError::Listen("metrics: another metrics recorder is already installed".into())
        })
}

/// Serves the API on `listener` until `shutdown` completes. Tests bind `127.0.0.1:0`.
pub async fn run_with_listener(
    cfg: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), StartupError> {
    run_with_routes(cfg, listener, shutdown, None).await
}

/// As [`run_with_listener`], with extra routes mounted under the same middleware (tests).
pub async fn run_with_routes(
    cfg: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
    extra: Option<Router>,
) -> Result<(), StartupError> {
    run_app(cfg, listener, shutdown, extra, Arc::new(SystemClock)).await
}

/// As [`run_with_routes`] on `clock` (tests that move time: lockouts, leases, expiry).
pub async fn run_app(
    cfg: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
    extra: Option<Router>,
    clock: Arc<dyn Clock>,
) -> Result<(), StartupError> {
    let bastion = Arc::new(Bastion::open_with_clock(&cfg, clock).await?);
    let local = listener
        .local_addr()
        .map_err(|e| StartupError::Listen(e.to_string()))?;
    let tls = if cfg.tls.cert.is_empty() {
        tracing::warn!("TLS is off: serving plain HTTP (set tls.cert and tls.key in production)");
        None
    } else {
        let sc = tls::server_config(
            cfg.tls.cert.as_ref(),
            cfg.tls.key.as_ref(),
            &cfg.tls.min_version,
        )?;
        Some(tokio_rustls::TlsAcceptor::from(sc))
    };
    let security_txt = bastion_api::routes::well_known::render_security_txt(
        &cfg.security_txt,
        time::OffsetDateTime::now_utc(),
    )
    .map(Arc::from);
    let services = auth_services(&bastion, &cfg)?;
    // The database's has_permission() decides from the same map as bastion-core.
    services
        .orgs
        .sync_permissions()
        .await
        .map_err(|e| StartupError::Config(format!("permissions: {e}")))?;
    // Addresses stored under an older email rule, before the first request: a migration cannot
    // run the rule. Collisions are reported there, never merged; a failure does not stop the
    // server (the pass runs again at the next start).
    if let Err(e) = services.accounts.renormalize_emails().await {
        tracing::error!(error = %e, "email address renormalization failed");
    }
    let mail_transport = crate::mail::transport(&cfg)?;
    let key_limit = ApiKeyRateLimit::new(&cfg.rate_limit);
    let state = AppState {
        accounts: services.accounts.clone(),
        sessions: services.sessions.clone(),
        orgs: services.orgs.clone(),
        secrets: services.secrets.clone(),
        licensing: services.licensing.clone(),
        webhooks: services.webhooks.clone(),
        wallets: services.wallets.clone(),
        payments: services.payments.clone(),
        idempotency: services.idempotency.clone(),
        key_limit: key_limit.clone(),
        store: bastion.store.clone(),
        security_txt,
        keys: bastion.keys.clone(),
        // Retired token keys stay published while a token they signed can live (plus leeway).
        jwks_overlap_ms: i64::try_from(
            cfg.tokens
                .access_ttl_secs
                .saturating_add(60)
                .saturating_mul(1000),
        )
        .unwrap_or(i64::MAX),
    };
    let rate_limit = IpRateLimit::new(&cfg.rate_limit);
    let app = bastion_api::app(
        state,
        &cfg.http,
        bastion_api::AppOptions {
            rate_limit: rate_limit.clone(),
            metrics: !cfg.metrics_listen.is_empty(),
            extra,
        },
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    if !cfg.metrics_listen.is_empty() {
        let l = listen::bind(&cfg.metrics_listen)
            .await
            .map_err(|e| StartupError::Listen(format!("metrics_listen: {e}")))?;
        tracing::info!(addr = %cfg.metrics_listen, "metrics listener");
        let handle = metrics_handle()?;
        tasks.spawn(jobs::metrics_upkeep(handle.clone(), stop_rx.clone()));
        tasks.spawn(listen::serve(
            l,
            listen::metrics_app(handle),
            None,
            Duration::from_secs(10),
            stop_rx.clone(),
        ));
    }
    if !cfg.http_redirect_listen.is_empty() {
        let l = listen::bind(&cfg.http_redirect_listen)
            .await
            .map_err(|e| StartupError::Listen(format!("http_redirect_listen: {e}")))?;
        tracing::info!(addr = %cfg.http_redirect_listen, "HTTP -> HTTPS redirect listener");
        let redirect = listen::redirect_app(cfg.public_url.clone(), local.port());
        tasks.spawn(listen::serve(
            l,
            redirect,
            None,
            Duration::from_secs(10),
            stop_rx.clone(),
        ));
    }
    tasks.spawn(jobs::audit_checkpoints(
        bastion.audit.clone(),
        Duration::from_secs(cfg.audit.checkpoint_every_secs),
        stop_rx.clone(),
    ));
    if let Some(rl) = rate_limit {
        tasks.spawn(jobs::sweep_rate_limiter(rl, stop_rx.clone()));
    }
    if let Some(kl) = key_limit {
        tasks.spawn(jobs::sweep_key_limiter(kl, stop_rx.clone()));
    }
    tasks.spawn(jobs::mail_dispatcher(
        services.mailer.clone(),
        mail_transport,
        Duration::from_millis(cfg.email.poll_interval_ms),
        stop_rx.clone(),
    ));
    tasks.spawn(jobs::cleanup(
        services.cleanup.clone(),
        Duration::from_secs(cfg.cleanup.interval_secs),
        stop_rx.clone(),
    ));
    tasks.spawn(jobs::payments_upkeep(
        services.webhooks.clone(),
        services.idempotency.clone(),
        Duration::from_secs(cfg.webhooks.poll_interval_secs),
        stop_rx.clone(),
    ));
    tasks.spawn(jobs::key_ring_upkeep(
        bastion.clone(),
        cfg.tokens.rotate_after_days,
        Duration::from_secs(cfg.keys.reload_secs.max(1)),
        stop_rx.clone(),
    ));
    bastion
        .audit
        .record(
            AuditEvent::new(Category::Admin, "server.started", Outcome::Success)
                .details(serde_json::json!({ "version": env!("CARGO_PKG_VERSION"), "backend": bastion.store.backend() })),
        )
        .await?;
    tracing::info!(
        addr = %local,
        tls = tls.is_some(),
        backend = bastion.store.backend(),
        master_key = %bastion.master_key_source,
        "Bastion is serving"
    );
    let header_timeout = Duration::from_millis(cfg.http.header_read_timeout_ms);
    let api = tokio::spawn(listen::serve(listener, app, tls, header_timeout, stop_rx));
    shutdown.await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = api.await;
    while tasks.join_next().await.is_some() {}
    bastion.store.close().await;
    Ok(())
}

/// The account services, built from `[auth]`, `[tokens]`, `[email]` and `[cleanup]`.
pub struct AuthServices {
    pub accounts: Arc<Accounts>,
    pub sessions: Arc<Sessions>,
    pub mailer: Arc<Mailer>,
    pub cleanup: Arc<Cleanup>,
    pub orgs: Arc<Orgs>,
    pub secrets: Arc<Secrets>,
    pub licensing: Arc<Licensing>,
    pub webhooks: Arc<Webhooks>,
    pub wallets: Arc<Wallets>,
    pub payments: Arc<Payments>,
    pub idempotency: Arc<Idempotency>,
}

fn ms(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

/// Sign-up, sign-in, sessions, links, mail, cleanup and organizations, configured from
/// `[auth]`, `[tokens]`, `[email]`, `[cleanup]` and `[permissions]`.
pub fn auth_services(b: &Bastion, cfg: &Config) -> Result<AuthServices, StartupError> {
    let a = &cfg.auth;
    let policy = a
        .password_policy()
        .map_err(|e| StartupError::Config(e.to_string()))?;
    let hashing = Arc::new(
        PasswordHashing::new(policy, a.hashing_pool_size)
            .map_err(|e| StartupError::Config(e.to_string()))?,
    );
    let mut rules = PasswordRules::default();
    if !a.password_deny_list.is_empty() {
        let text = std::fs::read_to_string(&a.password_deny_list).map_err(|e| {
            StartupError::Config(format!(
                "auth.password_deny_list {}: {e}",
                a.password_deny_list
            ))
        })?;
        rules = rules.with_deny_list(&text);
    }
    let day = 86_400_000i64;
    let session_policy = SessionPolicy {
        access_ttl_ms: ms(cfg.tokens.access_ttl_secs),
        idle_ttl_ms: i64::try_from(a.session_idle_days)
            .unwrap_or(i64::MAX / day)
            .saturating_mul(day),
        absolute_ttl_ms: i64::try_from(a.session_absolute_days)
            .unwrap_or(i64::MAX / day)
            .saturating_mul(day),
        grace_ms: ms(a.refresh_grace_secs),
        issuer: cfg.tokens.issuer.clone(),
        audience: cfg.tokens.audience.clone(),
        ..SessionPolicy::default()
    };
    let sessions = Arc::new(Sessions::new(
        b.store.clone(),
        b.keys.clone(),
        b.audit.clone(),
        b.clock.clone(),
        session_policy,
    ));
    let sign_in_failures = |max_attempts| ThrottleRule {
        max_attempts,
        window_ms: ms(a.login_window_secs),
        lockout_ms: ms(a.login_lockout_secs),
    };
    let policy = AccountPolicy {
        per_account: sign_in_failures(a.login_max_failures),
        per_ip: sign_in_failures(a.login_ip_max_failures),
        per_ip_accounts: sign_in_failures(a.login_ip_max_accounts),
        mail_per_address: ThrottleRule {
            max_attempts: a.mail_per_address_per_hour,
            window_ms: 3_600_000,
            lockout_ms: 3_600_000,
        },
        mail_per_requester: ThrottleRule {
            max_attempts: a.mail_per_requester_per_hour,
            window_ms: 3_600_000,
            lockout_ms: 3_600_000,
        },
        require_verified_email: a.require_verified_email,
    };
    let e = &cfg.email;
    let mailer = Arc::new(Mailer::new(
        b.store.clone(),
        b.vault.clone(),
        b.clock.clone(),
        Branding {
            product: e.product_name.clone(),
            link_ttl_minutes: i64::try_from(a.link_ttl_secs / 60).unwrap_or(i64::MAX),
        },
        DispatchPolicy {
            retry_base_ms: ms(e.retry_base_secs),
            retry_max_ms: ms(e.retry_max_secs.max(e.retry_base_secs)),
            max_attempts: e.max_attempts,
            lease_ms: ms(e.smtp.timeout_secs.saturating_mul(4).max(60)),
            ..DispatchPolicy::default()
        },
    ));
    let links = Arc::new(MagicLinks::new(
        b.store.clone(),
        mailer.clone(),
        b.clock.clone(),
        ms(a.link_ttl_secs),
        &cfg.link_base_url(),
    ));
    let license_links = links.clone();
    let accounts = Arc::new(Accounts::new(
        AccountDeps {
            store: b.store.clone(),
            hashing,
            rules,
            sessions: sessions.clone(),
            audit: b.audit.clone(),
            clock: b.clock.clone(),
            links: links.clone(),
            mailer: mailer.clone(),
        },
        policy,
    ));
    let permissions = cfg
        .permission_map()
        .map_err(|e| StartupError::Config(e.to_string()))?;
    let orgs = Arc::new(Orgs::new(OrgDeps {
        store: b.store.clone(),
        audit: b.audit.clone(),
        clock: b.clock.clone(),
        links,
        permissions: Arc::new(permissions),
        mail_per_org_and_address: policy.mail_per_requester,
    }));
    let cleanup = Arc::new(Cleanup::new(
        b.store.clone(),
        b.clock.clone(),
        CleanupPolicy {
            // The longest window any counter uses: login counters and the hourly mail throttle.
            attempt_window_ms: ms(a.login_window_secs)
                .max(3_600_000)
                .max(ms(cfg.licenses.ip_window_secs)),
            mail_retention_ms: ms(e.retention_days.saturating_mul(86_400)),
            batch: cfg.cleanup.batch_size,
        },
    ));
    let secrets = Arc::new(Secrets::new(
        orgs.clone(),
        b.store.clone(),
        b.vault.clone(),
        b.audit.clone(),
        b.clock.clone(),
    ));
    let l = &cfg.licenses;
    let licensing = Arc::new(Licensing::new(
        orgs.clone(),
        b.store.clone(),
        b.keys.clone(),
        mailer.clone(),
        license_links,
        b.audit.clone(),
        b.clock.clone(),
        LicensingConfig {
            ip_failures: l.ip_max_failures,
            ip_window_ms: ms(l.ip_window_secs),
            ip_lockout_ms: ms(l.ip_lockout_secs),
            key_failures: l.key_max_failures,
            default_lease_ms: ms(l.default_lease_days.saturating_mul(86_400)),
            deactivations_per_day: l.deactivations_per_day,
        },
    ));
    let p = &cfg.payments;
    let wallets = Arc::new(Wallets::new(
        orgs.clone(),
        b.store.clone(),
        b.audit.clone(),
        b.clock.clone(),
        WalletConfig {
            optimistic_attempts: p.wallet_optimistic_attempts,
            ..WalletConfig::default()
        },
    ));
    let gateway: Arc<dyn PaymentGateway> = match stripe_secret_key(cfg)? {
        Some(key) => Arc::new(
            crate::stripe::StripeGateway::new(
                p.stripe_api_base.clone(),
                key,
                Duration::from_secs(p.timeout_secs),
            )
            .map_err(|e| StartupError::Config(format!("payments: {e}")))?,
        ),
        None => Arc::new(Unconfigured),
    };
    let payments = Arc::new(Payments::new(
        orgs.clone(),
        gateway,
        licensing.clone(),
        wallets.clone(),
        PaymentsConfig {
            success_url: p.success_url.clone(),
            cancel_url: p.cancel_url.clone(),
        },
    ));
    let w = &cfg.webhooks;
    let webhooks = Arc::new(
        Webhooks::new(
            orgs.clone(),
            b.store.clone(),
            b.vault.clone(),
            b.audit.clone(),
            b.clock.clone(),
            RetryPolicy {
                max_attempts: w.max_attempts,
                base_ms: ms(w.retry_base_secs),
                cap_ms: ms(w.retry_max_secs),
                lease_ms: ms(w.lease_secs),
            },
        )
        .with_payments(payments.clone()),
    );
    let idempotency = Arc::new(Idempotency::new(
        b.store.clone(),
        b.vault.clone(),
        b.clock.clone(),
        b.audit.clone(),
        ms(p.idempotency_ttl_hours.saturating_mul(3600)),
    ));
    Ok(AuthServices {
        accounts,
        sessions,
        mailer,
        cleanup,
        orgs,
        secrets,
        licensing,
        webhooks,
        wallets,
        payments,
        idempotency,
    })
}

/// Stripe's secret key: `payments.stripe_secret_key_file`, else `BASTION_STRIPE_SECRET_KEY`.
fn stripe_secret_key(cfg: &Config) -> Result<Option<secrecy::SecretString>, StartupError> {
    let file = &cfg.payments.stripe_secret_key_file;
    if !file.is_empty() {
        let text = std::fs::read_to_string(file).map_err(|e| {
            StartupError::Config(format!("payments.stripe_secret_key_file {file}: {e}"))
        })?;
        return Ok(Some(secrecy::SecretString::from(text.trim().to_owned())));
    }
    Ok(std::env::var("BASTION_STRIPE_SECRET_KEY")
        .ok()
        .filter(|k| !k.trim().is_empty())
        .map(secrecy::SecretString::from))
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
