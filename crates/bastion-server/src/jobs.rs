//! Background jobs: audit checkpoints, rate-limiter sweeping, key-ring upkeep, mail dispatch
//! and cleanup. Each stops on shutdown.

use std::sync::Arc;
use std::time::Duration;

use bastion_api::middleware::rate_limit::{ApiKeyRateLimit, IpRateLimit};
use bastion_core::audit::AuditLog;
use bastion_core::cleanup::Cleanup;
use bastion_core::mail::{MailTransport, Mailer};
use tokio::sync::watch;

/// Signs a checkpoint every `every` while events arrive (SPEC U2).
pub async fn audit_checkpoints(
    audit: Arc<AuditLog>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = audit.checkpoint().await {
                    tracing::error!(error = %e, "audit checkpoint failed");
                }
            }
            _ = crate::jobs::stopped(&mut shutdown) => break,
        }
    }
    // A last checkpoint on the way out, so a clean stop leaves the tail covered.
    if let Err(e) = audit.checkpoint().await {
        tracing::warn!(error = %e, "final audit checkpoint failed");
    }
}

/// Forgets idle clients of the per-IP limiter every minute.
pub async fn sweep_rate_limiter(rl: Arc<IpRateLimit>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = tick.tick() => rl.sweep(),
            _ = crate::jobs::stopped(&mut shutdown) => break,
        }
    }
}

/// Every minute: forgets idle API keys' rate-limit state.
pub async fn sweep_key_limiter(kl: Arc<ApiKeyRateLimit>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = tick.tick() => kl.sweep(),
            _ = crate::jobs::stopped(&mut shutdown) => break,
        }
    }
}

/// Every `reload` (a minute by default): reloads the key ring (rotations made by the CLI or another node), and rotates
/// the token-signing key once it is `rotate_after_days` old (SPEC A5; 0 = never). Two nodes
/// rotating at once collide on the version's uniqueness and one of them simply reloads.
pub async fn key_ring_upkeep(
    bastion: Arc<crate::Bastion>,
    rotate_after_days: u64,
    reload: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let max_age_ms =
        i64::try_from(rotate_after_days.saturating_mul(86_400_000)).unwrap_or(i64::MAX);
    let mut tick = tokio::time::interval(reload);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let now = bastion.clock.now_ms();
                let newest = bastion.keys.current().newest_created_ms(bastion_crypto::keyring::Purpose::Tokens);
                if rotate_after_days > 0 && newest.is_some_and(|t| now - t >= max_age_ms) {
                    match bastion.rotate_key(bastion_crypto::keyring::Purpose::Tokens).await {
                        Ok(k) => tracing::info!(key_id = %k.key_id, "token signing key rotated on schedule"),
                        Err(e) => tracing::warn!(error = %e, "scheduled token key rotation did not happen"),
                    }
                }
                if let Err(e) = bastion.reload_keys().await {
                    tracing::error!(error = %e, "key ring reload failed; keeping the keys in use");
                }
            }
            _ = stopped(&mut shutdown) => break,
        }
    }
}

/// Delivers queued mail: at once when mail is queued on this node, and every `poll` for mail
/// queued elsewhere or due for a retry. Leases keep two nodes from sending one message twice.
pub async fn mail_dispatcher(
    mailer: Arc<Mailer>,
    transport: Arc<dyn MailTransport>,
    poll: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = mailer.wait_for_mail() => {}
            _ = stopped(&mut shutdown) => break,
        }
        if let Err(e) = mailer.dispatch_due(transport.as_ref()).await {
            tracing::error!(error = %e, "mail dispatch failed; will retry");
        }
    }
}

/// Purges what has ended every `every` (SPEC A6).
pub async fn cleanup(cleanup: Arc<Cleanup>, every: Duration, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = cleanup.run().await {
                    tracing::error!(error = %e, "cleanup failed; will retry");
                }
            }
            _ = stopped(&mut shutdown) => break,
        }
    }
}

/// Processes webhook events that are due (retries, lapsed claims) and purges expired
/// idempotency keys (SPEC P3, P4).
pub async fn payments_upkeep(
    webhooks: Arc<bastion_core::webhooks::Webhooks>,
    idempotency: Arc<bastion_core::idempotency::Idempotency>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = webhooks.run_due(100).await {
                    tracing::error!(error = %e, "webhook processing failed; will retry");
                }
                if let Err(e) = idempotency.purge(1000).await {
                    tracing::error!(error = %e, "idempotency purge failed; will retry");
                }
            }
            _ = stopped(&mut shutdown) => break,
        }
    }
}

/// Drains histogram samples even when nobody scrapes, so memory stays bounded.
pub async fn metrics_upkeep(
    handle: metrics_exporter_prometheus::PrometheusHandle,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tick.tick() => handle.run_upkeep(),
            _ = stopped(&mut shutdown) => break,
        }
    }
}

/// Completes once the shutdown flag is set (or its sender is gone).
pub async fn stopped(rx: &mut watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}
