//! Hosted checkout (SPEC P1): Bastion creates the payment provider's Checkout Session and sends
//! the customer there; card data never reaches Bastion. The purchase completes through the
//! provider's signed webhook (see `webhooks`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use bastion_core::orgs::Caller;
use bastion_core::payments::{CheckoutInput, Purchase};
use bastion_core::wallet::Owner;
use serde::{Deserialize, Serialize};

use super::path_id as id;
use crate::extract::{JsonBody, OrgAuth};
use crate::{ApiError, AppState};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutIn {
    /// `license` (needs `licenses.issue` in `org_id`) or `wallet_credit` (`wallet.manage` for
    /// an org wallet; a signed-in user may top up their own wallet by leaving `org_id` out).
    pub kind: String,
    pub org_id: Option<String>,
    /// For a license: the policy it is issued under and the licensee's email.
    pub policy_id: Option<String>,
    pub email: Option<String>,
    /// Price in the currency's smallest unit; for wallet credit, also the amount credited.
    pub amount: i64,
    /// ISO 4217, e.g. `usd`.
    pub currency: String,
    /// What the customer sees on the checkout page.
    pub product_name: String,
    pub success_url: Option<String>,
    pub cancel_url: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CheckoutOut {
    pub id: String,
    pub session_id: String,
    /// Send the customer here.
    pub url: String,
}

fn invalid(detail: &str) -> ApiError {
    ApiError::Invalid {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        code: "invalid_field",
        detail: detail.to_owned(),
    }
}

#[utoipa::path(post, path = "/v1/checkout", tag = "payments", request_body = CheckoutIn,
    responses((status = 201, body = CheckoutOut), (status = 404, body = crate::error::Problem),
        (status = 422, body = crate::error::Problem), (status = 502, body = crate::error::Problem),
        (status = 503, body = crate::error::Problem), (status = 504, body = crate::error::Problem)))]
pub async fn checkout(
    State(state): State<AppState>,
    OrgAuth(caller): OrgAuth,
    JsonBody(body): JsonBody<CheckoutIn>,
) -> Result<(StatusCode, Json<CheckoutOut>), ApiError> {
    let org_id = match &body.org_id {
        Some(o) => Some(id(o, "org")?.to_owned()),
        None => None,
    };
    let purchase = match body.kind.as_str() {
        "license" => Purchase::License {
            org_id: org_id.ok_or_else(|| invalid("a license checkout names org_id"))?,
            policy_id: id(
                body.policy_id
                    .as_deref()
                    .ok_or_else(|| invalid("a license checkout names policy_id"))?,
                "pol",
            )?
            .to_owned(),
            email: body
                .email
                .clone()
                .ok_or_else(|| invalid("a license checkout names the licensee's email"))?,
        },
        "wallet_credit" => Purchase::WalletCredit {
            owner: match (org_id, &caller) {
                (Some(org), _) => Owner::Org(org),
                (None, Caller::User { user_id }) => Owner::User(user_id.clone()),
                (None, Caller::Key(_)) => {
                    return Err(invalid("an API key tops up an org wallet: name org_id"));
                }
            },
        },
        _ => return Err(invalid("kind is license or wallet_credit")),
    };
    let checkout = state
        .payments
        .checkout(
            &caller,
            &CheckoutInput {
                customer_email: body.email.clone(),
                purchase,
                amount: body.amount,
                currency: body.currency,
                product_name: body.product_name,
                success_url: body.success_url,
                cancel_url: body.cancel_url,
            },
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CheckoutOut {
            id: checkout.id,
            session_id: checkout.session_id,
            url: checkout.url,
        }),
    ))
}
