//! Per-client-IP rate limit on every route (SPEC T5): GCRA via `governor`, answering 429 with
//! `Retry-After` and the IETF `RateLimit` / `RateLimit-Policy` fields.
//! The state is per process; limits shared across nodes come with the Redis counters (SPEC X3).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use crate::middleware::ClientIp;
use crate::{ApiError, RateLimitConfig};

type Limiter =
    RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, DefaultClock, StateInformationMiddleware>;

/// The per-IP limiter and its published policy.
pub struct IpRateLimit {
    limiter: Limiter,
    burst: u32,
    window_secs: u64,
}

impl IpRateLimit {
    /// `None` when the configuration turns limiting off (`per_ip_per_second = 0`).
    pub fn new(cfg: &RateLimitConfig) -> Option<Arc<Self>> {
        let rate = NonZeroU32::new(cfg.per_ip_per_second)?;
        let burst = NonZeroU32::new(cfg.burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_second(rate).allow_burst(burst);
        let limiter = RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>();
        let window_secs = u64::from(burst.get())
            .div_ceil(u64::from(rate.get()))
            .max(1);
        Some(Arc::new(Self {
            limiter,
            burst: burst.get(),
            window_secs,
        }))
    }

    /// Forgets idle clients so memory stays bounded (called by a background job).
    pub fn sweep(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    fn policy(&self) -> HeaderValue {
        HeaderValue::from_str(&format!(
            "\"per-ip\";q={};w={}",
            self.burst, self.window_secs
        ))
        .unwrap_or(HeaderValue::from_static("\"per-ip\""))
    }
}

pub async fn per_ip(State(rl): State<Arc<IpRateLimit>>, req: Request, next: Next) -> Response {
    let ip = req
        .extensions()
        .get::<ClientIp>()
        .map(|c| c.0)
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    match rl.limiter.check_key(&ip) {
        Ok(snapshot) => {
            let mut res = next.run(req).await;
            let h = res.headers_mut();
            h.insert("ratelimit-policy", rl.policy());
            if let Ok(v) = HeaderValue::from_str(&format!(
                "\"per-ip\";r={}",
                snapshot.remaining_burst_capacity()
            )) {
                h.insert("ratelimit", v);
            }
            res
        }
        Err(not_until) => {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let retry_after_secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            tracing::debug!(%ip, retry_after_secs, "rate limited");
            metrics::counter!("bastion_rate_limited_total").increment(1);
            let mut res = ApiError::RateLimited { retry_after_secs }.into_response();
            let h = res.headers_mut();
            h.insert("ratelimit-policy", rl.policy());
            if let Ok(v) = HeaderValue::from_str(&format!("\"per-ip\";r=0;t={retry_after_secs}")) {
                h.insert("ratelimit", v);
            }
            res
        }
    }
}

type KeyLimiter = RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock>;

/// The per-API-key limiter (SPEC R6): each key has its own budget, whatever IP it comes from.
pub struct ApiKeyRateLimit {
    limiter: KeyLimiter,
}

impl ApiKeyRateLimit {
    /// `None` when the configuration turns it off (`per_api_key_per_second = 0`).
    pub fn new(cfg: &RateLimitConfig) -> Option<Arc<Self>> {
        let rate = NonZeroU32::new(cfg.per_api_key_per_second)?;
        let burst = NonZeroU32::new(cfg.api_key_burst.max(1)).unwrap_or(NonZeroU32::MIN);
        Some(Arc::new(Self {
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
        }))
    }

    /// Spends one request of `key_id`'s budget, or says how long to wait.
    pub fn check(&self, key_id: &str) -> Result<(), ApiError> {
        self.limiter
            .check_key(&key_id.to_owned())
            .map_err(|not_until| {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                metrics::counter!("bastion_rate_limited_total").increment(1);
                ApiError::RateLimited {
                    retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
                }
            })
    }

    /// Forgets idle keys so memory stays bounded (called by a background job).
    pub fn sweep(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}
