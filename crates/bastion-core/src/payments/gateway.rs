//! The payment provider as Bastion uses it: hosted Checkout Sessions, refunds, and reading back
//! the sessions and charges that events name. Bastion never sees card data; the customer pays
//! on the provider's page. The one implementation talks to Stripe's API (`bastion-server`);
//! tests run it against a local server speaking the same API.

use std::collections::BTreeMap;

/// A hosted checkout for one item, paid once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutRequest {
    /// ISO 4217, lower case as Stripe wants it.
    pub currency: String,
    /// In the currency's smallest unit.
    pub unit_amount: i64,
    pub product_name: String,
    pub success_url: String,
    pub cancel_url: String,
    pub customer_email: Option<String>,
    /// Bastion's own id for the purchase (`chk_…`), echoed back in the webhook.
    pub client_reference_id: String,
    /// Copied onto the session and its PaymentIntent (so refunds carry it too).
    pub metadata: BTreeMap<String, String>,
}

/// A created session: where to send the customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutSession {
    pub id: String,
    pub url: String,
}

/// The provider's own record of a Checkout Session, read back through its API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: String,
    /// `paid`, `unpaid` or `no_payment_required`.
    pub payment_status: String,
    pub payment_intent: Option<String>,
    pub amount_total: Option<i64>,
    pub currency: Option<String>,
    pub client_reference_id: Option<String>,
    /// What Bastion set when it created the session.
    pub metadata: BTreeMap<String, String>,
}

/// The provider's own record of a charge, read back through its API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeRecord {
    pub id: String,
    pub payment_intent: Option<String>,
    /// Refunded in full.
    pub refunded: bool,
    /// The PaymentIntent's metadata, which Bastion set when it created the session.
    pub metadata: BTreeMap<String, String>,
}

/// True for an id the provider could have made (`cs_…`, `ch_…`): letters, digits and `_`, so
/// an id taken from an event can never change the path it is looked up under.
pub fn is_object_id(id: &str) -> bool {
    (3..=255).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    #[error("the payment provider did not answer in time")]
    Timeout,
    /// The provider refused the request (its error type and code; never a secret).
    #[error("the payment provider refused the request ({status}: {code})")]
    Rejected { status: u16, code: String },
    #[error("the payment provider could not be reached: {0}")]
    Transport(String),
    #[error("the payment provider's answer was not understood")]
    Malformed,
    #[error("payments are not configured on this server")]
    NotConfigured,
}

/// Every call carries an `Idempotency-Key`: a retry after a timeout never charges or refunds
/// twice.
#[async_trait::async_trait]
pub trait PaymentGateway: Send + Sync {
    async fn create_checkout_session(
        &self,
        request: &CheckoutRequest,
        idempotency_key: &str,
    ) -> Result<CheckoutSession, GatewayError>;

    /// Refunds a payment in full (`amount: None`) or in part; returns the refund's id.
    async fn refund(
        &self,
        payment_intent: &str,
        amount: Option<i64>,
        idempotency_key: &str,
    ) -> Result<String, GatewayError>;

    /// The Checkout Session `id` as the provider has it (`id` passed [`is_object_id`]).
    async fn checkout_session(&self, id: &str) -> Result<SessionRecord, GatewayError>;

    /// The charge `id` as the provider has it (`id` passed [`is_object_id`]).
    async fn charge(&self, id: &str) -> Result<ChargeRecord, GatewayError>;
}

/// The gateway of a server with no payment provider configured: every call says so.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unconfigured;

#[async_trait::async_trait]
impl PaymentGateway for Unconfigured {
    async fn create_checkout_session(
        &self,
        _: &CheckoutRequest,
        _: &str,
    ) -> Result<CheckoutSession, GatewayError> {
        Err(GatewayError::NotConfigured)
    }

    async fn refund(&self, _: &str, _: Option<i64>, _: &str) -> Result<String, GatewayError> {
        Err(GatewayError::NotConfigured)
    }

    async fn checkout_session(&self, _: &str) -> Result<SessionRecord, GatewayError> {
        Err(GatewayError::NotConfigured)
    }

    async fn charge(&self, _: &str) -> Result<ChargeRecord, GatewayError> {
        Err(GatewayError::NotConfigured)
    }
}
