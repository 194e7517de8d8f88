//! The payment gateway on Stripe's API (SPEC P1, P4): hosted Checkout Sessions and refunds,
//! form-encoded as Stripe wants them, and the sessions and charges that events name, read back.
//! Each POST carries an `Idempotency-Key` so that a retry after
//! a timeout never charges or refunds twice. The secret key lives in a `SecretString` and never
//! reaches a log, a `Debug` rendering or an error.

use std::error::Error as _;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use std::collections::BTreeMap;

use bastion_core::payments::{
    ChargeRecord, CheckoutRequest, CheckoutSession, GatewayError, PaymentGateway, SessionRecord,
};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The API version every request is pinned to, so that an account upgrade on Stripe's side
/// never changes the shapes Bastion reads.
pub const STRIPE_VERSION: &str = "2024-06-20";

/// Stripe's production API.
pub const STRIPE_API_BASE: &str = "https://api.stripe.com";

/// Talks to Stripe (or anything speaking its API at `api_base`).
pub struct StripeGateway {
    api_base: String,
    secret_key: SecretString,
    timeout: Duration,
    http: reqwest::Client,
}

impl fmt::Debug for StripeGateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeGateway")
            .field("api_base", &self.api_base)
            .field("secret_key", &"[redacted]")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct SessionBody {
    id: String,
    url: String,
}

#[derive(Deserialize)]
struct RefundBody {
    id: String,
}

#[derive(Deserialize)]
struct SessionRecordBody {
    id: String,
    payment_status: String,
    payment_intent: Option<String>,
    amount_total: Option<i64>,
    currency: Option<String>,
    client_reference_id: Option<String>,
    metadata: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct ChargeBody {
    id: String,
    payment_intent: Option<String>,
    refunded: bool,
    metadata: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "type")]
    kind: Option<String>,
    code: Option<String>,
}

/// A transport error's message: reqwest's chain of causes, never the URL (which could carry
/// credentials) nor anything of the request.
fn transport(e: reqwest::Error) -> GatewayError {
    let e = e.without_url();
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    GatewayError::Transport(message)
}

fn request_error(e: reqwest::Error) -> GatewayError {
    if e.is_timeout() {
        GatewayError::Timeout
    } else {
        transport(e)
    }
}

impl StripeGateway {
    /// A gateway for the API at `api_base` (e.g. [`STRIPE_API_BASE`]); `timeout` bounds each
    /// whole request, connection to last byte (production: 30 s).
    pub fn new(
        api_base: String,
        secret_key: SecretString,
        timeout: Duration,
    ) -> Result<Self, GatewayError> {
        let base = api_base.trim_end_matches('/').to_owned();
        let url = reqwest::Url::parse(&base).map_err(|_| GatewayError::NotConfigured)?;
        if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
            return Err(GatewayError::NotConfigured);
        }
        if secret_key.expose_secret().is_empty() {
            return Err(GatewayError::NotConfigured);
        }
        // The workspace's reqwest has no crypto provider of its own: it uses the process
        // default, installed here unless the process chose one already.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none());
        // A local stand-in (tests) is never reached through a proxy from the environment.
        let host = url.host_str().unwrap_or_default();
        let loopback = host == "localhost"
            || host
                .trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if loopback {
            builder = builder.no_proxy();
        }
        let http = builder.build().map_err(transport)?;
        Ok(Self {
            api_base: base,
            secret_key,
            timeout,
            http,
        })
    }

    /// POSTs `form` to `path` with the key, the version and the idempotency key; a 2xx answer's
    /// body is parsed as `T`.
    async fn post<T: for<'de> Deserialize<'de>>(
        &self,
        path: &str,
        form: &[(String, String)],
        idempotency_key: &str,
    ) -> Result<T, GatewayError> {
        let key = reqwest::header::HeaderValue::from_str(idempotency_key).map_err(|_| {
            GatewayError::Transport("the idempotency key is not a header value".into())
        })?;
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form.iter())
            .finish();
        let request = self
            .http
            .post(format!("{}{path}", self.api_base))
            .header("Idempotency-Key", key)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body);
        self.send(request).await
    }

    /// GETs `path` (ids in it were checked by the caller) with the key and the version.
    async fn get<T: for<'de> Deserialize<'de>>(&self, path: &str) -> Result<T, GatewayError> {
        let request = self.http.get(format!("{}{path}", self.api_base));
        self.send(request).await
    }

    /// Adds the key and the version, sends, and parses a 2xx answer's body as `T`.
    async fn send<T: for<'de> Deserialize<'de>>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, GatewayError> {
        let mut auth = reqwest::header::HeaderValue::from_str(&format!(
            "Bearer {}",
            self.secret_key.expose_secret()
        ))
        .map_err(|_| GatewayError::NotConfigured)?;
        auth.set_sensitive(true);
        let res = request
            .header(reqwest::header::AUTHORIZATION, auth)
            .header("Stripe-Version", STRIPE_VERSION)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(request_error)?;
        let status = res.status();
        let bytes = res.bytes().await.map_err(request_error)?;
        if !status.is_success() {
            let code = serde_json::from_slice::<ErrorEnvelope>(&bytes)
                .ok()
                .and_then(|e| e.error.code.or(e.error.kind))
                .filter(|c| {
                    !c.is_empty()
                        && c.len() <= 100
                        && c.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
                })
                .unwrap_or_else(|| "unknown".to_owned());
            return Err(GatewayError::Rejected {
                status: status.as_u16(),
                code,
            });
        }
        serde_json::from_slice(&bytes).map_err(|_| GatewayError::Malformed)
    }
}

/// The form of a Checkout Session for one item paid once; the metadata goes on the session and
/// on its PaymentIntent (so the charge, and its refund events, carry it too).
fn checkout_form(request: &CheckoutRequest) -> Vec<(String, String)> {
    let mut form: Vec<(String, String)> = vec![
        ("mode".into(), "payment".into()),
        (
            "line_items[0][price_data][currency]".into(),
            request.currency.clone(),
        ),
        (
            "line_items[0][price_data][unit_amount]".into(),
            request.unit_amount.to_string(),
        ),
        (
            "line_items[0][price_data][product_data][name]".into(),
            request.product_name.clone(),
        ),
        ("line_items[0][quantity]".into(), "1".into()),
        ("success_url".into(), request.success_url.clone()),
        ("cancel_url".into(), request.cancel_url.clone()),
    ];
    if let Some(email) = &request.customer_email {
        form.push(("customer_email".into(), email.clone()));
    }
    form.push((
        "client_reference_id".into(),
        request.client_reference_id.clone(),
    ));
    for (k, v) in &request.metadata {
        form.push((format!("metadata[{k}]"), v.clone()));
    }
    for (k, v) in &request.metadata {
        form.push((format!("payment_intent_data[metadata][{k}]"), v.clone()));
    }
    form
}

#[async_trait]
impl PaymentGateway for StripeGateway {
    async fn create_checkout_session(
        &self,
        request: &CheckoutRequest,
        idempotency_key: &str,
    ) -> Result<CheckoutSession, GatewayError> {
        let form = checkout_form(request);
        let session: SessionBody = self
            .post("/v1/checkout/sessions", &form, idempotency_key)
            .await?;
        if session.id.is_empty() || session.url.is_empty() {
            return Err(GatewayError::Malformed);
        }
        Ok(CheckoutSession {
            id: session.id,
            url: session.url,
        })
    }

    async fn refund(
        &self,
        payment_intent: &str,
        amount: Option<i64>,
        idempotency_key: &str,
    ) -> Result<String, GatewayError> {
        let mut form = vec![("payment_intent".to_owned(), payment_intent.to_owned())];
        if let Some(amount) = amount {
            form.push(("amount".to_owned(), amount.to_string()));
        }
        let refund: RefundBody = self.post("/v1/refunds", &form, idempotency_key).await?;
        if refund.id.is_empty() {
            return Err(GatewayError::Malformed);
        }
        Ok(refund.id)
    }

    async fn checkout_session(&self, id: &str) -> Result<SessionRecord, GatewayError> {
        if !bastion_core::payments::gateway::is_object_id(id) {
            return Err(GatewayError::Malformed);
        }
        let s: SessionRecordBody = self.get(&format!("/v1/checkout/sessions/{id}")).await?;
        Ok(SessionRecord {
            id: s.id,
            payment_status: s.payment_status,
            payment_intent: s.payment_intent,
            amount_total: s.amount_total,
            currency: s.currency,
            client_reference_id: s.client_reference_id,
            metadata: s.metadata.unwrap_or_default(),
        })
    }

    async fn charge(&self, id: &str) -> Result<ChargeRecord, GatewayError> {
        if !bastion_core::payments::gateway::is_object_id(id) {
            return Err(GatewayError::Malformed);
        }
        let c: ChargeBody = self.get(&format!("/v1/charges/{id}")).await?;
        Ok(ChargeRecord {
            id: c.id,
            payment_intent: c.payment_intent,
            refunded: c.refunded,
            metadata: c.metadata.unwrap_or_default(),
        })
    }
}
