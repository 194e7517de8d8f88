//! Ingestion (verify → de-duplicate → store → acknowledge) and the processing state machine.

use bastion_store::{EndpointRow, EventRow, EventStatus, Finish, Recorded, SealedColumn};

use super::endpoints::{Handler, Provider, parse_endpoint};
use super::signature::{self, Delivery, WebhookSecret};
use super::{SYSTEM, WebhookError as E, Webhooks};
use crate::audit::{AuditEvent, Category, Outcome};
use crate::ids::new_id;
use crate::vault::Field;

/// Backoff of failed processing: `base * 2^(attempt-1)`, capped, for `max_attempts` in all.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_ms: i64,
    pub cap_ms: i64,
    /// How long one processing attempt holds its claim before another worker may take it.
    pub lease_ms: i64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            base_ms: 30_000,
            cap_ms: 6 * 3_600_000,
            lease_ms: 60_000,
        }
    }
}

impl RetryPolicy {
    /// When attempt `attempts` (1-based, just failed) is retried; `None` after the last.
    pub fn retry_at(&self, now_ms: i64, attempts: u32) -> Option<i64> {
        if attempts >= self.max_attempts {
            return None;
        }
        let exp = attempts.saturating_sub(1).min(30);
        let delay = self.base_ms.saturating_mul(1i64 << exp).min(self.cap_ms);
        Some(now_ms.saturating_add(delay))
    }
}

/// What an accepted delivery led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingested {
    pub event_id: String,
    /// The provider's id the inbox de-duplicates on.
    pub provider_event_id: String,
    /// True when the event was already in the inbox: nothing was stored or processed now.
    pub duplicate: bool,
    pub status: EventStatus,
}

/// Largest body an endpoint accepts (providers send far less).
pub const MAX_BODY: usize = 512 * 1024;

/// Where a verified body names its event id and type, per provider.
fn identify(
    provider: Provider,
    delivery: &Delivery<'_>,
    verified: &signature::Verified,
) -> (Option<String>, String) {
    let json: Option<serde_json::Value> = serde_json::from_slice(delivery.body).ok();
    let field = |path: &[&str]| -> Option<String> {
        let mut v = json.as_ref()?;
        for p in path {
            v = v.get(p)?;
        }
        v.as_str().map(str::to_owned)
    };
    let header = |name: &str| {
        delivery
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| (*v).to_owned())
    };
    let form = |name: &str| {
        form_urlencoded::parse(delivery.body)
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    match provider {
        Provider::Stripe => (field(&["id"]), field(&["type"]).unwrap_or_default()),
        Provider::Github => (
            verified.delivery_id.clone(),
            header("x-github-event").unwrap_or_default(),
        ),
        Provider::Slack => (
            field(&["event_id"]),
            field(&["event", "type"])
                .or_else(|| field(&["type"]))
                .unwrap_or_default(),
        ),
        Provider::Standard => (
            verified.delivery_id.clone(),
            field(&["type"]).unwrap_or_default(),
        ),
        Provider::Twilio => (
            verified
                .delivery_id
                .clone()
                .or_else(|| form("MessageSid"))
                .or_else(|| form("CallSid")),
            form("SmsStatus")
                .or_else(|| form("CallStatus"))
                .unwrap_or_default(),
        ),
        Provider::Generic => (
            field(&["id"]).or_else(|| header("x-webhook-id")),
            field(&["type"]).unwrap_or_default(),
        ),
    }
}

/// An event id the inbox accepts: printable, bounded. Without one, the body's digest stands in
/// (a provider that names no id still gets exact-replay protection).
fn event_key(named: Option<String>, body: &[u8]) -> String {
    match named {
        Some(id) if !id.is_empty() && id.len() <= 255 && id.chars().all(|c| !c.is_control()) => id,
        _ => format!("sha256:{}", hex::encode(body_digest(body))),
    }
}

/// A digest of what the signature covered: the signed timestamp where the scheme signs one, and
/// the body. A delivery re-sent under a fresh delivery id that no signature covers (GitHub's
/// `X-GitHub-Delivery`, Twilio's idempotency token, a generic `x-webhook-id`) has the same
/// digest, so it is the same event (SPEC P3).
fn signed_digest(verified: &signature::Verified, body: &[u8]) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let ts = verified
        .timestamp
        .map(|t| t.to_string())
        .unwrap_or_default();
    for part in [b"bastion-webhook-v1".as_slice(), ts.as_bytes(), body] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn body_digest(body: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, body)
        .as_ref()
        .to_vec()
}

impl Webhooks {
    /// Verifies a delivery to `endpoint_id`, stores it once, processes it, and says what
    /// happened. Every refusal is audited; nothing unverified is stored.
    #[tracing::instrument(skip_all, fields(endpoint_id))]
    pub async fn ingest(&self, endpoint_id: &str, delivery: &Delivery<'_>) -> Result<Ingested, E> {
        if delivery.body.len() > MAX_BODY {
            return Err(E::Invalid(format!("body over {MAX_BODY} bytes")));
        }
        let endpoint = match self.store.endpoint(&SYSTEM, endpoint_id).await? {
            Some(e) if e.disabled_ms.is_none() => e,
            _ => return Err(E::NotFound),
        };
        let (provider, config) = parse_endpoint(&endpoint)?;
        let scheme = config.scheme(provider)?;
        let now = self.clock.now_ms();
        let secrets = self.secrets(&endpoint, &scheme, now).await;
        let secrets = match secrets {
            Ok(s) if !s.is_empty() => s,
            outcome => {
                let reason = match &outcome {
                    Ok(_) => "no live secret".to_owned(),
                    Err(e) => e.to_string(),
                };
                self.refused(&endpoint, "webhook.secret_missing", &reason)
                    .await;
                return Err(E::SecretMissing);
            }
        };
        let verified = match signature::verify(
            &scheme,
            &secrets,
            delivery,
            now.div_euclid(1000),
            config.tolerance(),
        ) {
            Ok(v) => v,
            Err(e) => {
                self.refused(&endpoint, "webhook.rejected", &e.to_string())
                    .await;
                return Err(E::Rejected(e));
            }
        };
        let (named, event_type) = identify(provider, delivery, &verified);
        let row = EventRow {
            id: new_id("wev").map_err(|_| E::Random)?,
            endpoint_id: endpoint.id.clone(),
            org_id: endpoint.org_id.clone(),
            provider: endpoint.provider.clone(),
            event_id: event_key(named, delivery.body),
            event_type: event_type.chars().take(200).collect(),
            payload: delivery.body.to_vec(),
            received_ms: now,
            status: EventStatus::Received,
            attempts: 0,
            next_attempt_ms: Some(now),
            last_error: None,
            processed_ms: None,
        };
        let digest = signed_digest(&verified, delivery.body);
        match self
            .store
            .record_event(&SYSTEM, &row, Some(&digest))
            .await?
        {
            Recorded::Duplicate(existing) => {
                self.record(
                    AuditEvent::new(Category::Webhook, "webhook.replayed", Outcome::Success)
                        .org(endpoint.org_id.clone())
                        .details(serde_json::json!({
                            "endpoint_id": endpoint.id,
                            "provider": endpoint.provider,
                            "event_id": existing.event_id,
                            "type": existing.event_type,
                        })),
                )
                .await;
                Ok(Ingested {
                    event_id: existing.id,
                    provider_event_id: existing.event_id,
                    duplicate: true,
                    status: existing.status,
                })
            }
            Recorded::New(stored) => {
                let status = self.process(&stored.id).await?;
                self.record(
                    AuditEvent::new(Category::Webhook, "webhook.received", Outcome::Success)
                        .org(endpoint.org_id.clone())
                        .details(serde_json::json!({
                            "endpoint_id": endpoint.id,
                            "provider": endpoint.provider,
                            "event_id": stored.event_id,
                            "type": stored.event_type,
                            "status": status.as_str(),
                            "secret_index": verified.secret_index,
                        })),
                )
                .await;
                Ok(Ingested {
                    event_id: stored.id,
                    provider_event_id: stored.event_id,
                    duplicate: false,
                    status,
                })
            }
        }
    }

    /// The endpoint's live secrets, opened. A secret that fails to open fails the whole
    /// delivery (closed), never silently drops to fewer secrets.
    async fn secrets(
        &self,
        endpoint: &EndpointRow,
        scheme: &signature::Scheme,
        now_ms: i64,
    ) -> Result<Vec<WebhookSecret>, E> {
        let rows = self
            .store
            .live_secrets(&SYSTEM, &endpoint.id, now_ms)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let plain = self
                .vault
                .open(&Field::of(SealedColumn::WebhookSecret, &r.id), &r.secret)?;
            let text = std::str::from_utf8(&plain).map_err(|_| E::Corrupt("secret".into()))?;
            out.push(WebhookSecret::parse(scheme, text).map_err(|_| E::Corrupt("secret".into()))?);
        }
        Ok(out)
    }

    async fn refused(&self, endpoint: &EndpointRow, action: &str, reason: &str) {
        tracing::warn!(endpoint_id = %endpoint.id, action, reason, "webhook refused");
        self.record(
            AuditEvent::new(Category::Webhook, action, Outcome::Failure)
                .org(endpoint.org_id.clone())
                .details(serde_json::json!({
                    "endpoint_id": endpoint.id,
                    "provider": endpoint.provider,
                    "reason": reason,
                })),
        )
        .await;
    }

    /// Runs one event if it can be claimed now; returns its status afterwards.
    #[tracing::instrument(skip_all, fields(event_id))]
    pub async fn process(&self, event_id: &str) -> Result<EventStatus, E> {
        let now = self.clock.now_ms();
        let Some(event) = self
            .store
            .claim_event(&SYSTEM, event_id, now, self.retry.lease_ms)
            .await?
        else {
            // Another worker has it, or it is not due: report where it stands.
            return Ok(self
                .store
                .event(&SYSTEM, event_id)
                .await?
                .map_or(EventStatus::Received, |e| e.status));
        };
        let outcome = match self.store.endpoint(&SYSTEM, &event.endpoint_id).await? {
            Some(endpoint) => self.run(&endpoint, &event).await,
            None => Err("the endpoint is gone".to_owned()),
        };
        let now = self.clock.now_ms();
        let finish = match &outcome {
            Ok(()) => Finish::Processed,
            Err(error) => Finish::Failed {
                error: error.chars().take(500).collect(),
                retry_at_ms: self.retry.retry_at(now, event.attempts),
            },
        };
        self.store
            .finish_event(&SYSTEM, event_id, now, &finish)
            .await?;
        Ok(match finish {
            Finish::Processed => EventStatus::Processed,
            Finish::Failed {
                retry_at_ms: Some(_),
                ..
            } => EventStatus::Failed,
            Finish::Failed { .. } => EventStatus::Dead,
        })
    }

    async fn run(&self, endpoint: &EndpointRow, event: &EventRow) -> Result<(), String> {
        let (_, config) = parse_endpoint(endpoint).map_err(|e| e.to_string())?;
        match config.handler {
            Handler::Inbox => Ok(()),
            Handler::Payments => match &self.payments {
                Some(p) => p.process(endpoint, event).await,
                None => Err("payments are not configured on this server".to_owned()),
            },
        }
    }

    /// Processes up to `limit` due events (received, failed and due, or with a lapsed claim);
    /// the background job calls this. Returns how many it ran.
    pub async fn run_due(&self, limit: u32) -> Result<usize, E> {
        let ids = self
            .store
            .due_events(&SYSTEM, self.clock.now_ms(), limit)
            .await?;
        let mut ran = 0;
        for id in ids {
            match self.process(&id).await {
                Ok(_) => ran += 1,
                Err(e) => tracing::error!(event_id = %id, error = %e, "webhook processing failed"),
            }
        }
        Ok(ran)
    }
}
