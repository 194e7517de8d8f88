//! Background jobs: periodic audit checkpoints and rate-limiter sweeping. Each stops on shutdown.

use std::sync::Arc;
use std::time::Duration;

use bastion_api::middleware::rate_limit::IpRateLimit;
use bastion_core::audit::AuditLog;
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
