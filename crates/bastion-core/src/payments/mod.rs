//! Payments (SPEC P1, P4, P5): hosted checkout through the payment provider — Bastion never
//! accepts card data — and what verified payment events do: a completed checkout issues the
//! license bought or credits the wallet, a refund reverses it.
//!
//! Trusted only from the provider: an event names a session or a charge, and what it did is
//! read back through the provider's API with Bastion's own key. A signed event is not enough,
//! since an endpoint's signing secret is whatever its org's admins set; they could otherwise
//! sign a "paid" checkout of their own making.
//!
//! Exactly once: the inbox runs each event once (P3), and each effect is keyed by the payment
//! itself — a license's id and a credit's transaction id are derived from it — so even an event
//! processed again after a crash finds its effect done instead of repeating it.

pub mod gateway;

use std::collections::BTreeMap;
use std::sync::Arc;

use bastion_store::{EndpointRow, EventRow, MovementKind};
use serde_json::Value;

use crate::ids::new_id;
use crate::licenses::{LicenseServiceError, Licensing};
use crate::orgs::{Caller, OrgError, Orgs};
use crate::wallet::{Owner, PostingInput, WalletError, Wallets};
use crate::webhooks::EventProcessor;
pub use gateway::{
    ChargeRecord, CheckoutRequest, CheckoutSession, GatewayError, PaymentGateway, SessionRecord,
};

/// Largest price of one checkout, in the smallest unit (the provider's own limit is similar).
pub const MAX_AMOUNT: i64 = 99_999_999;

#[derive(Debug, Clone, Default)]
pub struct PaymentsConfig {
    /// Where the provider sends the customer after paying, and after giving up (defaults for
    /// checkouts that name none).
    pub success_url: String,
    pub cancel_url: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    #[error(transparent)]
    Org(#[from] OrgError),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    #[error(transparent)]
    Wallet(#[from] WalletError),
    #[error(transparent)]
    License(#[from] LicenseServiceError),
    #[error("no randomness for an id")]
    Random,
}

/// What a checkout buys.
#[derive(Debug, Clone)]
pub enum Purchase {
    /// A license under `policy_id` of the org, for `email`.
    License {
        org_id: String,
        policy_id: String,
        email: String,
    },
    /// Credit for a wallet (the org's, or the caller's own), in the checkout's currency.
    WalletCredit { owner: Owner },
}

#[derive(Debug, Clone)]
pub struct CheckoutInput {
    pub purchase: Purchase,
    pub amount: i64,
    pub currency: String,
    pub product_name: String,
    pub success_url: Option<String>,
    pub cancel_url: Option<String>,
    pub customer_email: Option<String>,
}

/// A created checkout: send the customer to `url`.
#[derive(Debug, Clone)]
pub struct Checkout {
    /// Bastion's id for the purchase (the provider echoes it as `client_reference_id`).
    pub id: String,
    pub session_id: String,
    pub url: String,
}

pub struct Payments {
    orgs: Arc<Orgs>,
    gateway: Arc<dyn PaymentGateway>,
    licensing: Arc<Licensing>,
    wallets: Arc<Wallets>,
    config: PaymentsConfig,
}

fn check_url(url: &str, what: &str) -> Result<String, PaymentError> {
    let ok = (url.starts_with("https://") || url.starts_with("http://"))
        && url.len() <= 2048
        && !url.chars().any(|c| c.is_control() || c.is_whitespace());
    if ok {
        Ok(url.to_owned())
    } else {
        Err(PaymentError::Invalid(format!(
            "{what} must be an http(s) URL"
        )))
    }
}

/// The wallet transaction a payment's credit is posted as: derived, so a reversal can name it
/// and a second posting of it is refused by the ledger.
fn credit_reference(payment_intent: &str) -> String {
    format!("stripe:{payment_intent}")
}

impl Payments {
    pub fn new(
        orgs: Arc<Orgs>,
        gateway: Arc<dyn PaymentGateway>,
        licensing: Arc<Licensing>,
        wallets: Arc<Wallets>,
        config: PaymentsConfig,
    ) -> Self {
        Self {
            orgs,
            gateway,
            licensing,
            wallets,
            config,
        }
    }

    /// Creates a hosted checkout. A license needs `licenses.issue` in its org; an org wallet's
    /// credit `wallet.manage`; a signed-in user may buy credit for their own wallet.
    #[tracing::instrument(skip_all)]
    pub async fn checkout(
        &self,
        caller: &Caller,
        input: &CheckoutInput,
    ) -> Result<Checkout, PaymentError> {
        if !(1..=MAX_AMOUNT).contains(&input.amount) {
            return Err(PaymentError::Invalid(format!(
                "amount must be 1 to {MAX_AMOUNT} in the currency's smallest unit"
            )));
        }
        let currency = input.currency.trim().to_ascii_lowercase();
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_lowercase()) {
            return Err(PaymentError::Invalid(
                "currency is an ISO 4217 code such as usd".into(),
            ));
        }
        let name = input.product_name.trim();
        if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
            return Err(PaymentError::Invalid(
                "product_name is 1 to 200 characters".into(),
            ));
        }
        let id = new_id("chk").map_err(|_| PaymentError::Random)?;
        let mut metadata = BTreeMap::new();
        metadata.insert("bastion_checkout".to_owned(), id.clone());
        match &input.purchase {
            Purchase::License {
                org_id,
                policy_id,
                email,
            } => {
                self.orgs
                    .authorize(caller, org_id, "licenses.issue")
                    .await?;
                let email = crate::accounts::normalize_email(email)
                    .map_err(|_| PaymentError::Invalid("email is not a valid address".into()))?;
                metadata.insert("bastion_kind".to_owned(), "license".to_owned());
                metadata.insert("bastion_org".to_owned(), org_id.clone());
                metadata.insert("bastion_policy".to_owned(), policy_id.clone());
                metadata.insert("bastion_email".to_owned(), email);
            }
            Purchase::WalletCredit { owner } => {
                match (owner, caller) {
                    (Owner::Org(org_id), _) => {
                        self.orgs.authorize(caller, org_id, "wallet.manage").await?;
                        metadata.insert("bastion_org".to_owned(), org_id.clone());
                    }
                    (Owner::User(u), Caller::User { user_id }) if u == user_id => {}
                    _ => return Err(PaymentError::Wallet(WalletError::NotFound)),
                }
                // Opened now, so the refund can name it even before the first credit lands.
                let wallet = self.wallets.open_for_payment(owner, &currency).await?;
                metadata.insert("bastion_kind".to_owned(), "wallet".to_owned());
                metadata.insert("bastion_wallet".to_owned(), wallet.id);
            }
        }
        let request = CheckoutRequest {
            currency,
            unit_amount: input.amount,
            product_name: name.to_owned(),
            success_url: check_url(
                input
                    .success_url
                    .as_deref()
                    .unwrap_or(&self.config.success_url),
                "success_url",
            )?,
            cancel_url: check_url(
                input
                    .cancel_url
                    .as_deref()
                    .unwrap_or(&self.config.cancel_url),
                "cancel_url",
            )?,
            customer_email: input.customer_email.clone(),
            client_reference_id: id.clone(),
            metadata,
        };
        // The checkout's own id is the provider call's idempotency key: the retry after a
        // dropped connection finds the session the first attempt created. A timed-out call is
        // not retried: it has spent the request's deadline (both 30 s by default).
        let session = match self.gateway.create_checkout_session(&request, &id).await {
            Err(GatewayError::Transport(_)) => {
                self.gateway.create_checkout_session(&request, &id).await?
            }
            other => other?,
        };
        Ok(Checkout {
            id,
            session_id: session.id,
            url: session.url,
        })
    }

    async fn completed(&self, endpoint: &EndpointRow, event: &Value) -> Result<(), String> {
        if event.get("payment_status").and_then(Value::as_str) != Some("paid") {
            // Paid later (async methods): `checkout.session.async_payment_succeeded` follows.
            return Ok(());
        }
        let session_id = event
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| gateway::is_object_id(id))
            .ok_or("the session has no valid id")?;
        let session = self
            .gateway
            .checkout_session(session_id)
            .await
            .map_err(|e| format!("reading the session back from the provider: {e}"))?;
        if session.id != session_id {
            return Err("the provider answered with another session".into());
        }
        let meta = |k: &str| session.metadata.get(k).cloned();
        let Some(kind) = meta("bastion_kind") else {
            // Not a Bastion checkout (the account sells other things too): nothing to do.
            return Ok(());
        };
        if session.payment_status != "paid" {
            return Err("the event says paid, the provider says the session is not".into());
        }
        let payment_intent = session.payment_intent.as_deref().unwrap_or(session_id);
        match kind.as_str() {
            "license" => {
                let org = meta("bastion_org").ok_or("no bastion_org in the metadata")?;
                // A Stripe account may serve several orgs: an event only acts in its own.
                if org != endpoint.org_id {
                    return Err("the purchase is of another org than this endpoint's".into());
                }
                let policy = meta("bastion_policy").ok_or("no bastion_policy in the metadata")?;
                let email = meta("bastion_email").ok_or("no bastion_email in the metadata")?;
                self.licensing
                    .issue_for_payment(&org, &policy, &email, payment_intent)
                    .await
                    .map(drop)
                    .map_err(|e| format!("issuing the license: {e}"))
            }
            "wallet" => {
                // An org wallet moves only through that org's endpoint.
                if meta("bastion_org").is_some_and(|o| o != endpoint.org_id) {
                    return Err("the purchase is of another org than this endpoint's".into());
                }
                let wallet_id =
                    meta("bastion_wallet").ok_or("no bastion_wallet in the metadata")?;
                let amount = session
                    .amount_total
                    .filter(|a| *a > 0)
                    .ok_or("the session has no amount_total")?;
                let input = PostingInput {
                    kind: MovementKind::Credit,
                    amount,
                    reverses: None,
                    reference: Some(credit_reference(payment_intent)),
                    memo: format!("payment {session_id}"),
                };
                self.wallets
                    .post_for_payment(&wallet_id, &input)
                    .await
                    .map(drop)
                    .map_err(|e| format!("crediting the wallet: {e}"))
            }
            _ => Ok(()),
        }
    }

    async fn refunded(&self, endpoint: &EndpointRow, event: &Value) -> Result<(), String> {
        let charge_id = event
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| gateway::is_object_id(id))
            .ok_or("the charge has no valid id")?;
        let charge = self
            .gateway
            .charge(charge_id)
            .await
            .map_err(|e| format!("reading the charge back from the provider: {e}"))?;
        if charge.id != charge_id {
            return Err("the provider answered with another charge".into());
        }
        let meta = |k: &str| charge.metadata.get(k).cloned();
        let Some(kind) = meta("bastion_kind") else {
            return Ok(());
        };
        if !charge.refunded {
            return Err("the provider says the charge is not refunded in full (a partial refund is settled by hand)".into());
        }
        let payment_intent = charge
            .payment_intent
            .as_deref()
            .ok_or("the charge has no payment_intent")?;
        match kind.as_str() {
            "wallet" => {
                // An org wallet moves only through that org's endpoint.
                if meta("bastion_org").is_some_and(|o| o != endpoint.org_id) {
                    return Err("the purchase is of another org than this endpoint's".into());
                }
                let wallet_id =
                    meta("bastion_wallet").ok_or("no bastion_wallet in the metadata")?;
                let input = PostingInput {
                    kind: MovementKind::Reversal,
                    amount: 0,
                    reverses: Some(credit_reference(payment_intent)),
                    reference: Some(format!("stripe-refund:{payment_intent}")),
                    memo: "refund".to_owned(),
                };
                match self.wallets.reverse_payment(&wallet_id, &input).await {
                    Ok(_) => Ok(()),
                    Err(e) => Err(format!("reversing the credit: {e}")),
                }
            }
            "license" => {
                let org = meta("bastion_org").ok_or("no bastion_org in the metadata")?;
                if org != endpoint.org_id {
                    return Err("the purchase is of another org than this endpoint's".into());
                }
                self.licensing
                    .revoke_for_payment(&org, payment_intent)
                    .await
                    .map(drop)
                    .map_err(|e| format!("revoking the license: {e}"))
            }
            _ => Ok(()),
        }
    }
}

#[async_trait::async_trait]
impl EventProcessor for Payments {
    async fn process(&self, endpoint: &EndpointRow, event: &EventRow) -> Result<(), String> {
        let body: Value =
            serde_json::from_slice(&event.payload).map_err(|_| "the event is not JSON")?;
        let object = body
            .get("data")
            .and_then(|d| d.get("object"))
            .ok_or("the event has no data.object")?;
        match event.event_type.as_str() {
            "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
                self.completed(endpoint, object).await
            }
            "charge.refunded" => self.refunded(endpoint, object).await,
            // Other events are kept in the inbox for the team's backend.
            _ => Ok(()),
        }
    }
}
