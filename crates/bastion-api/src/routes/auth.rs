//! Accounts, sign-in, token refresh and per-device sessions (SPEC A1–A4, A8).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use bastion_core::links::LinkPurpose;
use bastion_core::sessions::{Device, IssuedTokens};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::extract::{Auth, JsonBody};
use crate::middleware::ClientIp;
use crate::{ApiError, AppState};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignupIn {
    pub email: String,
    #[schema(value_type = String, format = Password)]
    pub password: SecretString,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginIn {
    pub email: String,
    #[schema(value_type = String, format = Password)]
    pub password: SecretString,
    /// A name the user will recognise in their session list ("Ada's laptop").
    pub device_name: Option<String>,
    pub platform: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshIn {
    #[schema(value_type = String, format = Password)]
    pub refresh_token: SecretString,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TokensOut {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    pub refresh_token: String,
    pub session_id: String,
}

impl From<IssuedTokens> for TokensOut {
    fn from(t: IssuedTokens) -> Self {
        Self {
            access_token: t.access_token.expose_secret().to_owned(),
            token_type: "Bearer",
            expires_in: t.access_expires_in_secs,
            refresh_token: t.refresh_token.expose_secret().to_owned(),
            session_id: t.session_id,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct MeOut {
    pub id: String,
    pub email: String,
    pub email_verified: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SessionOut {
    pub id: String,
    pub device_name: String,
    pub platform: String,
    pub ip: String,
    pub user_agent: String,
    pub created_ms: i64,
    pub last_seen_ms: i64,
    pub current: bool,
    pub revoked: bool,
}

fn clip(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

fn device(
    headers: &HeaderMap,
    ip: Option<ClientIp>,
    name: Option<&str>,
    platform: Option<&str>,
) -> Device {
    let ua = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    Device {
        name: clip(name.unwrap_or(ua), 100),
        platform: clip(platform.unwrap_or(""), 40),
        ip: ip.map(|c| c.0.to_string()).unwrap_or_default(),
        user_agent: clip(ua, 300),
    }
}

/// Who asked for a mail (its client address), for the per-requester mail budget.
fn requester(ip: Option<axum::Extension<ClientIp>>) -> String {
    ip.map(|e| e.0.0.to_string()).unwrap_or_default()
}

/// The answer to requests whose outcome must not reveal whether an account exists.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AcceptedOut {
    pub status: &'static str,
    pub detail: &'static str,
}

const CHECK_EMAIL: AcceptedOut = AcceptedOut {
    status: "accepted",
    detail: "if the address can receive it, an email is on its way",
};

/// Creates an account and mails a verification link. The answer is the same when the address
/// already has an account (its owner is told by email instead).
#[utoipa::path(post, path = "/v1/auth/signup", tag = "auth", request_body = SignupIn,
    responses((status = 202, body = AcceptedOut), (status = 422, body = crate::error::Problem)))]
pub async fn signup(
    State(state): State<AppState>,
    ip: Option<axum::Extension<ClientIp>>,
    JsonBody(body): JsonBody<SignupIn>,
) -> Result<(StatusCode, Json<AcceptedOut>), ApiError> {
    state
        .accounts
        .sign_up(&body.email, body.password, &requester(ip))
        .await?;
    Ok((StatusCode::ACCEPTED, Json(CHECK_EMAIL)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailIn {
    pub email: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenIn {
    /// The `token` from the link's fragment (`bml_…`).
    #[schema(value_type = String, format = Password)]
    pub token: SecretString,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetIn {
    #[schema(value_type = String, format = Password)]
    pub token: SecretString,
    #[schema(value_type = String, format = Password)]
    pub new_password: SecretString,
}

/// Confirms an email address with the link from the sign-up mail (once).
#[utoipa::path(post, path = "/v1/auth/verify-email", tag = "auth", request_body = TokenIn,
    responses((status = 204), (status = 400, body = crate::error::Problem)))]
pub async fn verify_email(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<TokenIn>,
) -> Result<StatusCode, ApiError> {
    state.accounts.verify_email(&body.token).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sends a new verification link if the address has an unverified account; same answer
/// either way.
#[utoipa::path(post, path = "/v1/auth/verify-email/resend", tag = "auth", request_body = EmailIn,
    responses((status = 202, body = AcceptedOut), (status = 422, body = crate::error::Problem)))]
pub async fn resend_verification(
    State(state): State<AppState>,
    ip: Option<axum::Extension<ClientIp>>,
    JsonBody(body): JsonBody<EmailIn>,
) -> Result<(StatusCode, Json<AcceptedOut>), ApiError> {
    state
        .accounts
        .request_link(LinkPurpose::VerifyEmail, &body.email, &requester(ip))?;
    Ok((StatusCode::ACCEPTED, Json(CHECK_EMAIL)))
}

/// Mails a password-reset link if the address has an account; same answer, same timing,
/// either way.
#[utoipa::path(post, path = "/v1/auth/password/forgot", tag = "auth", request_body = EmailIn,
    responses((status = 202, body = AcceptedOut), (status = 422, body = crate::error::Problem)))]
pub async fn forgot_password(
    State(state): State<AppState>,
    ip: Option<axum::Extension<ClientIp>>,
    JsonBody(body): JsonBody<EmailIn>,
) -> Result<(StatusCode, Json<AcceptedOut>), ApiError> {
    state
        .accounts
        .request_link(LinkPurpose::ResetPassword, &body.email, &requester(ip))?;
    Ok((StatusCode::ACCEPTED, Json(CHECK_EMAIL)))
}

/// Sets a new password with a reset link (once); every session of the account ends.
#[utoipa::path(post, path = "/v1/auth/password/reset", tag = "auth", request_body = ResetIn,
    responses((status = 204), (status = 400, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn reset_password(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<ResetIn>,
) -> Result<StatusCode, ApiError> {
    state
        .accounts
        .reset_password(&body.token, body.new_password)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Signs in with email and password; opens a session for this device.
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", request_body = LoginIn,
    responses((status = 200, body = TokensOut), (status = 401, body = crate::error::Problem), (status = 403, body = crate::error::Problem), (status = 429, body = crate::error::Problem)))]
pub async fn login(
    State(state): State<AppState>,
    ip: Option<axum::Extension<ClientIp>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<LoginIn>,
) -> Result<Response, ApiError> {
    let dev = device(
        &headers,
        ip.map(|e| e.0),
        body.device_name.as_deref(),
        body.platform.as_deref(),
    );
    let tokens: TokensOut = state
        .accounts
        .sign_in(&body.email, body.password, &dev)
        .await?
        .into();
    Ok(super::no_store(Json(tokens)))
}

/// Exchanges a refresh token for a new pair (the old one is used up).
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth", request_body = RefreshIn,
    responses((status = 200, body = TokensOut), (status = 401, body = crate::error::Problem), (status = 409, body = crate::error::Problem)))]
pub async fn refresh(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<RefreshIn>,
) -> Result<Response, ApiError> {
    let tokens: TokensOut = state.sessions.refresh(&body.refresh_token).await?.into();
    Ok(super::no_store(Json(tokens)))
}

/// Ends the current session.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth", responses((status = 204), (status = 401, body = crate::error::Problem)))]
pub async fn logout(State(state): State<AppState>, Auth(p): Auth) -> Result<StatusCode, ApiError> {
    state
        .sessions
        .revoke_own(&p.user_id, &p.session_id, "logout")
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The signed-in account.
#[utoipa::path(get, path = "/v1/me", tag = "auth", responses((status = 200, body = MeOut), (status = 401, body = crate::error::Problem)))]
pub async fn me(State(state): State<AppState>, Auth(p): Auth) -> Result<Json<MeOut>, ApiError> {
    let a = state
        .accounts
        .me(&p.user_id)
        .await?
        .ok_or(ApiError::Unauthorized {
            code: "invalid_token",
        })?;
    Ok(Json(MeOut {
        id: a.id,
        email: a.email,
        email_verified: a.email_verified,
    }))
}

/// This user's sessions, one per device sign-in.
#[utoipa::path(get, path = "/v1/sessions", tag = "auth", responses((status = 200, body = [SessionOut]), (status = 401, body = crate::error::Problem)))]
pub async fn list_sessions(
    State(state): State<AppState>,
    Auth(p): Auth,
) -> Result<Json<Vec<SessionOut>>, ApiError> {
    let rows = state.sessions.list(&p.user_id).await?;
    Ok(Json(
        rows.into_iter()
            .map(|s| SessionOut {
                current: s.id == p.session_id,
                revoked: s.revoked_ms.is_some(),
                id: s.id,
                device_name: s.device_name,
                platform: s.platform,
                ip: s.ip,
                user_agent: s.user_agent,
                created_ms: s.created_ms,
                last_seen_ms: s.last_seen_ms,
            })
            .collect(),
    ))
}

/// Revokes one of this user's sessions (404 for anyone else's, so none is revealed).
#[utoipa::path(delete, path = "/v1/sessions/{id}", tag = "auth", responses((status = 204), (status = 404, body = crate::error::Problem)))]
pub async fn revoke_session(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state
        .sessions
        .revoke_own(&p.user_id, &id, "revoked_by_user")
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeAllQuery {
    pub except: Option<String>,
}

/// Revokes every session of this user; `?except=current` keeps the one making the call.
#[utoipa::path(delete, path = "/v1/sessions", tag = "auth", params(("except" = Option<String>, Query, description = "`current` keeps this session")),
    responses((status = 204), (status = 422, body = crate::error::Problem)))]
pub async fn revoke_sessions(
    State(state): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<RevokeAllQuery>,
) -> Result<StatusCode, ApiError> {
    let keep = match q.except.as_deref() {
        None => None,
        Some("current") => Some(p.session_id.as_str()),
        Some(_) => {
            return Err(ApiError::Invalid {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                code: "invalid_query",
                detail: "except must be `current`".into(),
            });
        }
    };
    for s in state.sessions.list(&p.user_id).await? {
        if s.revoked_ms.is_none() && Some(s.id.as_str()) != keep {
            state
                .sessions
                .revoke_own(&p.user_id, &s.id, "revoked_by_user")
                .await?;
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChangeIn {
    #[schema(value_type = String, format = Password)]
    pub current_password: SecretString,
    #[schema(value_type = String, format = Password)]
    pub new_password: SecretString,
}

/// Changes the password; every other session of the user ends.
#[utoipa::path(post, path = "/v1/me/password", tag = "auth", request_body = PasswordChangeIn,
    responses((status = 204), (status = 401, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn change_password(
    State(state): State<AppState>,
    Auth(p): Auth,
    JsonBody(body): JsonBody<PasswordChangeIn>,
) -> Result<StatusCode, ApiError> {
    state
        .accounts
        .change_password(
            &p.user_id,
            &p.session_id,
            body.current_password,
            body.new_password,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
