//! The payment provider as Bastion uses it: hosted Checkout Sessions and refunds. Bastion never
//! sees card data; the customer pays on the provider's page. The one implementation talks to
//! Stripe's API (`bastion-server`); tests run it against a local server speaking the same API.

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
}
