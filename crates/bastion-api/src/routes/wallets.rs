//! Wallets (SPEC P5): an org's wallets (`wallet.read`, `wallet.manage`) and a signed-in user's
//! own (read, history, debit). Amounts are integers in the currency's smallest unit.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use bastion_core::orgs::Caller;
use bastion_core::wallet::{Owner, Posting, PostingInput};
use bastion_store::{LedgerEntry, MovementKind, WalletRow};
use serde::{Deserialize, Serialize};

use super::path_id as id;
use crate::extract::{Auth, JsonBody, OrgAuth};
use crate::{ApiError, AppState};

#[derive(Serialize, utoipa::ToSchema)]
pub struct WalletOut {
    pub id: String,
    pub org_id: Option<String>,
    pub user_id: Option<String>,
    pub currency: String,
    pub balance: i64,
    pub credit_limit: i64,
    pub ledger_version: i64,
    pub created_ms: i64,
    pub updated_ms: i64,
}

impl From<WalletRow> for WalletOut {
    fn from(w: WalletRow) -> Self {
        Self {
            id: w.id,
            org_id: w.org_id,
            user_id: w.user_id,
            currency: w.currency,
            balance: w.balance,
            credit_limit: w.credit_limit,
            ledger_version: w.ledger_version,
            created_ms: w.created_ms,
            updated_ms: w.updated_ms,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct WalletListOut {
    pub wallets: Vec<WalletOut>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EntryOut {
    pub txn_id: String,
    pub seq: i64,
    /// `credit`, `debit` or `reversal`.
    pub kind: String,
    /// Signed: negative for debits and reversals.
    pub amount: i64,
    pub balance_after: i64,
    pub reverses: Option<String>,
    pub reference: Option<String>,
    pub memo: String,
    pub created_ms: i64,
    pub created_by: String,
}

impl From<LedgerEntry> for EntryOut {
    fn from(e: LedgerEntry) -> Self {
        Self {
            txn_id: e.txn_id,
            seq: e.seq,
            kind: e.kind.as_str().to_owned(),
            amount: e.amount,
            balance_after: e.balance_after,
            reverses: e.reverses,
            reference: e.reference,
            memo: e.memo,
            created_ms: e.created_ms,
            created_by: e.created_by,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EntryListOut {
    pub entries: Vec<EntryOut>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PostingOut {
    pub entry: EntryOut,
    /// True when `reference` had been posted before: nothing changed now.
    pub duplicate: bool,
}

impl From<Posting> for PostingOut {
    fn from(p: Posting) -> Self {
        Self {
            entry: p.entry.into(),
            duplicate: p.duplicate,
        }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WalletIn {
    /// ISO 4217 (`USD`) or a credit unit's name (`CREDITS`).
    pub currency: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostingIn {
    /// `credit`, `debit` or `reversal`.
    pub kind: String,
    /// Positive; not given for a reversal (the credit's whole amount is reversed).
    #[serde(default)]
    pub amount: i64,
    /// For a reversal: the credit's `txn_id`.
    pub reverses: Option<String>,
    /// Your reference, unique per wallet: posting it again returns the first posting.
    pub reference: Option<String>,
    #[serde(default)]
    pub memo: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DebitIn {
    pub amount: i64,
    pub reference: Option<String>,
    #[serde(default)]
    pub memo: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreditLimitIn {
    /// How far below zero the balance may go (0: no overdraft).
    pub credit_limit: i64,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EntryQuery {
    /// Entries with a lower `seq` (paging).
    pub before: Option<i64>,
    pub limit: Option<u32>,
}

fn posting_in(body: PostingIn) -> Result<PostingInput, ApiError> {
    let kind = MovementKind::parse(&body.kind).ok_or_else(|| ApiError::Invalid {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        code: "invalid_field",
        detail: "kind is credit, debit or reversal".into(),
    })?;
    Ok(PostingInput {
        kind,
        amount: body.amount,
        reverses: body.reverses,
        reference: body.reference,
        memo: body.memo,
    })
}

#[utoipa::path(post, path = "/v1/orgs/{org_id}/wallets", tag = "wallets", request_body = WalletIn,
    responses((status = 201, body = WalletOut), (status = 404, body = crate::error::Problem),
        (status = 409, body = crate::error::Problem)))]
pub async fn create(
    State(state): State<AppState>,
    OrgAuth(caller): OrgAuth,
    Path(org_id): Path<String>,
    JsonBody(body): JsonBody<WalletIn>,
) -> Result<(StatusCode, Json<WalletOut>), ApiError> {
    let org_id = id(&org_id, "org")?;
    let w = state
        .wallets
        .create(&caller, org_id, &body.currency)
        .await?;
    Ok((StatusCode::CREATED, Json(w.into())))
}

#[utoipa::path(get, path = "/v1/orgs/{org_id}/wallets", tag = "wallets",
    responses((status = 200, body = WalletListOut), (status = 404, body = crate::error::Problem)))]
pub async fn list(
    State(state): State<AppState>,
    OrgAuth(caller): OrgAuth,
    Path(org_id): Path<String>,
) -> Result<Json<WalletListOut>, ApiError> {
    let org_id = id(&org_id, "org")?;
    let rows = state
        .wallets
        .list(&caller, &Owner::Org(org_id.to_owned()))
        .await?;
    Ok(Json(WalletListOut {
        wallets: rows.into_iter().map(WalletOut::from).collect(),
    }))
}

#[utoipa::path(get, path = "/v1/orgs/{org_id}/wallets/{wallet_id}", tag = "wallets",
    responses((status = 200, body = WalletOut), (status = 404, body = crate::error::Problem)))]
pub async fn get(
    State(state): State<AppState>,
    OrgAuth(caller): OrgAuth,
    Path((org_id, wallet_id)): Path<(String, String)>,
) -> Result<Json<WalletOut>, ApiError> {
    let owner = Owner::Org(id(&org_id, "org")?.to_owned());
    let wallet_id = id(&wallet_id, "wal")?;
    Ok(Json(
        state.wallets.get(&caller, &owner, wallet_id).await?.into(),
    ))
}

#[utoipa::path(post, path = "/v1/orgs/{org_id}/wallets/{wallet_id}/postings", tag = "wallets",
    request_body = PostingIn,
    responses((status = 201, body = PostingOut), (status = 200, body = PostingOut,
            description = "the reference was posted before; nothing changed"),
        (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem),
        (status = 422, body = crate::error::Problem)))]
pub async fn post(
    State(state): State<AppState>,
    OrgAuth(caller): OrgAuth,
    Path((org_id, wallet_id)): Path<(String, String)>,
    JsonBody(body): JsonBody<PostingIn>,
) -> Result<(StatusCode, Json<PostingOut>), ApiError> {
    let owner = Owner::Org(id(&org_id, "org")?.to_owned());
    let wallet_id = id(&wallet_id, "wal")?;
    let posting = state
        .wallets
        .post(&caller, &owner, wallet_id, &posting_in(body)?)
        .await?;
    Ok(posted(posting))
}

fn posted(p: Posting) -> (StatusCode, Json<PostingOut>) {
    let status = if p.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    (status, Json(p.into()))
}

#[utoipa::path(get, path = "/v1/orgs/{org_id}/wallets/{wallet_id}/entries", tag = "wallets",
    params(EntryQuery),
    responses((status = 200, body = EntryListOut), (status = 404, body = crate::error::Problem)))]
pub async fn entries(
    State(state): State<AppState>,
    OrgAuth(caller): OrgAuth,
    Path((org_id, wallet_id)): Path<(String, String)>,
    Query(q): Query<EntryQuery>,
) -> Result<Json<EntryListOut>, ApiError> {
    let owner = Owner::Org(id(&org_id, "org")?.to_owned());
    history(&state, &caller, &owner, id(&wallet_id, "wal")?, q).await
}

async fn history(
    state: &AppState,
    caller: &Caller,
    owner: &Owner,
    wallet_id: &str,
    q: EntryQuery,
) -> Result<Json<EntryListOut>, ApiError> {
    let rows = state
        .wallets
        .history(caller, owner, wallet_id, q.before, q.limit.unwrap_or(50))
        .await?;
    Ok(Json(EntryListOut {
        entries: rows.into_iter().map(EntryOut::from).collect(),
    }))
}

#[utoipa::path(put, path = "/v1/orgs/{org_id}/wallets/{wallet_id}/credit-limit",
    tag = "wallets", request_body = CreditLimitIn,
    responses((status = 200, body = WalletOut), (status = 404, body = crate::error::Problem),
        (status = 422, body = crate::error::Problem)))]
pub async fn credit_limit(
    State(state): State<AppState>,
    OrgAuth(caller): OrgAuth,
    Path((org_id, wallet_id)): Path<(String, String)>,
    JsonBody(body): JsonBody<CreditLimitIn>,
) -> Result<Json<WalletOut>, ApiError> {
    let org_id = id(&org_id, "org")?;
    let wallet_id = id(&wallet_id, "wal")?;
    let w = state
        .wallets
        .set_credit_limit(&caller, org_id, wallet_id, body.credit_limit)
        .await?;
    Ok(Json(w.into()))
}

#[utoipa::path(get, path = "/v1/me/wallets", tag = "wallets",
    responses((status = 200, body = WalletListOut), (status = 401, body = crate::error::Problem)))]
pub async fn my_wallets(
    State(state): State<AppState>,
    Auth(principal): Auth,
) -> Result<Json<WalletListOut>, ApiError> {
    let caller = Caller::user(&principal.user_id);
    let rows = state
        .wallets
        .list(&caller, &Owner::User(principal.user_id.clone()))
        .await?;
    Ok(Json(WalletListOut {
        wallets: rows.into_iter().map(WalletOut::from).collect(),
    }))
}

#[utoipa::path(get, path = "/v1/me/wallets/{wallet_id}/entries", tag = "wallets",
    params(EntryQuery),
    responses((status = 200, body = EntryListOut), (status = 404, body = crate::error::Problem)))]
pub async fn my_entries(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(wallet_id): Path<String>,
    Query(q): Query<EntryQuery>,
) -> Result<Json<EntryListOut>, ApiError> {
    let caller = Caller::user(&principal.user_id);
    let owner = Owner::User(principal.user_id.clone());
    history(&state, &caller, &owner, id(&wallet_id, "wal")?, q).await
}

/// Spends from the user's own wallet (a user can never credit it: only payments do).
#[utoipa::path(post, path = "/v1/me/wallets/{wallet_id}/debits", tag = "wallets",
    request_body = DebitIn,
    responses((status = 201, body = PostingOut), (status = 404, body = crate::error::Problem),
        (status = 422, body = crate::error::Problem)))]
pub async fn my_debit(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(wallet_id): Path<String>,
    JsonBody(body): JsonBody<DebitIn>,
) -> Result<(StatusCode, Json<PostingOut>), ApiError> {
    let caller = Caller::user(&principal.user_id);
    let owner = Owner::User(principal.user_id.clone());
    let input = PostingInput {
        kind: MovementKind::Debit,
        amount: body.amount,
        reverses: None,
        reference: body.reference,
        memo: body.memo,
    };
    let posting = state
        .wallets
        .post(&caller, &owner, id(&wallet_id, "wal")?, &input)
        .await?;
    Ok(posted(posting))
}
