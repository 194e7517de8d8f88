//! RFC 9457 problem details. Every error the API answers is `application/problem+json` with a
//! stable machine `code`; 5xx bodies are opaque and their cause goes to the log.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

pub const PROBLEM_JSON: &str = "application/problem+json";

/// A problem document.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Problem {
    /// `urn:bastion:problem:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    /// Stable machine-readable code, e.g. `rate_limited`.
    pub code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl Problem {
    pub fn new(status: StatusCode, code: &str, detail: Option<String>) -> Self {
        Self {
            kind: format!("urn:bastion:problem:{code}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            code: code.to_owned(),
            // 5xx details could reveal internals: never sent.
            detail: if status.is_server_error() {
                None
            } else {
                detail
            },
            request_id: None,
        }
    }

    pub fn into_response_with(self, status: StatusCode) -> Response {
        let body = serde_json::to_vec(&self).unwrap_or_else(|_| b"{}".to_vec());
        let mut res = (status, body).into_response();
        res.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        res
    }
}

/// The stable code for a bare HTTP status produced by a layer or the router.
pub fn code_for_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        406 => "not_acceptable",
        408 => "request_timeout",
        409 => "conflict",
        411 => "length_required",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        422 => "unprocessable_entity",
        429 => "rate_limited",
        500 => "internal_error",
        503 => "unavailable",
        504 => "gateway_timeout",
        s if s >= 500 => "server_error",
        _ => "client_error",
    }
}

/// Errors a handler can return; one exhaustive mapping to HTTP below.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("not found")]
    NotFound,
    #[error("rate limited")]
    RateLimited { retry_after_secs: u64 },
    #[error("request timed out")]
    Timeout,
    #[error("not ready")]
    NotReady,
    /// The request is malformed or fails validation (`code` names what).
    #[error("invalid request")]
    Invalid {
        status: StatusCode,
        code: &'static str,
        detail: String,
    },
    /// Missing, invalid or revoked credentials.
    #[error("unauthorized")]
    Unauthorized { code: &'static str },
    #[error("conflict")]
    Conflict { code: &'static str, detail: String },
    /// Too many attempts of one kind (login or activation lockout): same shape for every
    /// caller; `code` says which.
    #[error("locked")]
    Locked {
        code: &'static str,
        retry_after_secs: u64,
    },
    /// An unexpected failure: logged with the request id, answered opaquely.
    #[error("internal error")]
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, detail) = match &self {
            Self::NotFound => (
                StatusCode::NOT_FOUND,
                "not_found",
                Some("no such resource".to_owned()),
            ),
            Self::RateLimited { retry_after_secs } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                Some(format!(
                    "too many requests; retry after {retry_after_secs} s"
                )),
            ),
            Self::Timeout => (
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                Some("the request took too long".to_owned()),
            ),
            Self::NotReady => (StatusCode::SERVICE_UNAVAILABLE, "not_ready", None),
            Self::Invalid {
                status,
                code,
                detail,
            } => (*status, *code, Some(detail.clone())),
            Self::Unauthorized { code } => (
                StatusCode::UNAUTHORIZED,
                *code,
                Some("sign in again".to_owned()),
            ),
            Self::Conflict { code, detail } => (StatusCode::CONFLICT, *code, Some(detail.clone())),
            Self::Locked {
                code,
                retry_after_secs,
            } => (
                StatusCode::TOO_MANY_REQUESTS,
                *code,
                Some(format!(
                    "too many attempts; retry after {retry_after_secs} s"
                )),
            ),
            Self::Internal(cause) => {
                tracing::error!(cause = %cause, "internal error");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal_error", None)
            }
        };
        let mut res = Problem::new(status, code, detail).into_response_with(status);
        match self {
            Self::RateLimited { retry_after_secs }
            | Self::Locked {
                retry_after_secs, ..
            } => {
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            Self::Unauthorized { .. } => {
                res.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        res
    }
}

impl From<bastion_core::accounts::AccountError> for ApiError {
    fn from(e: bastion_core::accounts::AccountError) -> Self {
        use bastion_core::accounts::AccountError as E;
        let invalid = |code, detail: String| ApiError::Invalid {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code,
            detail,
        };
        match e {
            E::InvalidEmail => invalid("invalid_email", e.to_string()),
            E::WeakPassword(_) => invalid("weak_password", e.to_string()),
            E::EmailTaken => ApiError::Conflict {
                code: "email_taken",
                detail: e.to_string(),
            },
            E::InvalidCredentials => ApiError::Unauthorized {
                code: "invalid_credentials",
            },
            E::Locked { retry_after_secs } => ApiError::Locked {
                code: "login_locked",
                retry_after_secs,
            },
            E::EmailNotVerified => ApiError::Invalid {
                status: StatusCode::FORBIDDEN,
                code: "email_not_verified",
                detail: e.to_string(),
            },
            E::InvalidLink => ApiError::Invalid {
                status: StatusCode::BAD_REQUEST,
                code: "invalid_link",
                detail: e.to_string(),
            },
            E::Session(s) => s.into(),
            E::Store(_) | E::Hashing(_) | E::Mail(_) | E::Link(_) => {
                ApiError::Internal(e.to_string())
            }
        }
    }
}

impl From<bastion_core::sessions::SessionError> for ApiError {
    fn from(e: bastion_core::sessions::SessionError) -> Self {
        use bastion_core::sessions::SessionError as E;
        match e {
            E::UnknownToken | E::Ended | E::InvalidAccess(_) => ApiError::Unauthorized {
                code: "invalid_token",
            },
            E::Reused => ApiError::Unauthorized {
                code: "refresh_token_reused",
            },
            E::Raced => ApiError::Conflict {
                code: "refresh_in_progress",
                detail: "this refresh token was just used by another request".into(),
            },
            E::Store(_) | E::Keys(_) | E::Crypto(_) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<bastion_core::vault::secrets::SecretError> for ApiError {
    fn from(e: bastion_core::vault::secrets::SecretError) -> Self {
        use bastion_core::vault::secrets::SecretError as E;
        match e {
            E::Org(org) => org.into(),
            E::Invalid(detail) => ApiError::Invalid {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                code: "invalid_field",
                detail,
            },
            E::Exists(what) => ApiError::Conflict {
                code: if what == "project" {
                    "project_exists"
                } else {
                    "secret_exists"
                },
                detail: e.to_string(),
            },
            // The cause (which key, which row) goes to the log and the audit trail, not the body.
            E::Vault(cause) => {
                tracing::error!(error = %cause, "a stored secret failed to open");
                ApiError::Invalid {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    code: "secret_unreadable",
                    detail: "the stored value failed its integrity check and was not revealed"
                        .into(),
                }
            }
            E::AuditUnavailable => ApiError::Invalid {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "audit_unavailable",
                detail: e.to_string(),
            },
            E::Store(_) | E::Random => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<bastion_core::licenses::LicenseServiceError> for ApiError {
    fn from(e: bastion_core::licenses::LicenseServiceError) -> Self {
        use bastion_core::licenses::LicenseServiceError as E;
        let with = |status, code, e: &E| ApiError::Invalid {
            status,
            code,
            detail: e.to_string(),
        };
        match e {
            E::Org(org) => org.into(),
            E::Invalid(detail) => ApiError::Invalid {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                code: "invalid_field",
                detail,
            },
            E::Exists(what) => ApiError::Conflict {
                code: match what {
                    "product" => "product_exists",
                    "policy" => "policy_exists",
                    _ => "license_exists",
                },
                detail: e.to_string(),
            },
            E::InvalidLicense => with(StatusCode::FORBIDDEN, "license_invalid", &e),
            E::Revoked => with(StatusCode::FORBIDDEN, "license_revoked", &e),
            E::Frozen => with(StatusCode::FORBIDDEN, "license_frozen", &e),
            E::Expired => with(StatusCode::FORBIDDEN, "license_expired", &e),
            E::MachineLimit(_) => ApiError::Conflict {
                code: "machine_limit_reached",
                detail: e.to_string(),
            },
            E::NotActivated => with(StatusCode::NOT_FOUND, "machine_not_activated", &e),
            E::InvalidCertificate => with(StatusCode::FORBIDDEN, "certificate_invalid", &e),
            E::Locked { retry_after_secs } => ApiError::Locked {
                code: "activation_locked",
                retry_after_secs,
            },
            E::ChurnLimited { retry_after_secs } => ApiError::Locked {
                code: "deactivation_limited",
                retry_after_secs,
            },
            E::InvalidLink => with(StatusCode::BAD_REQUEST, "invalid_link", &e),
            E::Key(_) | E::Mail(_) | E::Store(_) | E::Random | E::Signing => {
                ApiError::Internal(e.to_string())
            }
        }
    }
}

impl From<bastion_core::orgs::OrgError> for ApiError {
    fn from(e: bastion_core::orgs::OrgError) -> Self {
        use bastion_core::orgs::{OrgError as E, RoleError as R};
        let with = |status, code, e: &E| ApiError::Invalid {
            status,
            code,
            detail: e.to_string(),
        };
        match &e {
            // Outside an org, existence is never confirmed; a database refusal for the scope
            // is answered the same way.
            E::NotFound | E::Store(bastion_store::StoreError::Forbidden) => ApiError::NotFound,
            E::Forbidden(_) => with(StatusCode::FORBIDDEN, "permission_denied", &e),
            E::UserOnly => with(StatusCode::FORBIDDEN, "user_required", &e),
            E::Role(R::LevelTooHigh) => with(StatusCode::FORBIDDEN, "level_too_high", &e),
            E::Role(R::LastSuperAdmin) => ApiError::Conflict {
                code: "last_super_admin",
                detail: e.to_string(),
            },
            E::Role(R::BadLevel(_) | R::BadPermission(_)) => {
                with(StatusCode::UNPROCESSABLE_ENTITY, "invalid_level", &e)
            }
            E::Invalid(_) => with(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", &e),
            E::ConfirmationMismatch => with(
                StatusCode::UNPROCESSABLE_ENTITY,
                "confirmation_mismatch",
                &e,
            ),
            E::InvalidLink => with(StatusCode::BAD_REQUEST, "invalid_link", &e),
            E::WrongInvitee => with(StatusCode::FORBIDDEN, "wrong_invitee", &e),
            E::AlreadyMember => ApiError::Conflict {
                code: "already_member",
                detail: e.to_string(),
            },
            E::InvalidKey => ApiError::Unauthorized {
                code: "invalid_api_key",
            },
            E::MailThrottled { retry_after_secs } => ApiError::RateLimited {
                retry_after_secs: *retry_after_secs,
            },
            E::Store(_) | E::Mail(_) | E::Link(_) | E::Random => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<bastion_core::wallet::WalletError> for ApiError {
    fn from(e: bastion_core::wallet::WalletError) -> Self {
        use bastion_core::wallet::WalletError as E;
        match e {
            E::Org(org) => org.into(),
            E::NotFound => ApiError::NotFound,
            E::Invalid(detail) => ApiError::Invalid {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                code: "invalid_field",
                detail,
            },
            E::Exists => ApiError::Conflict {
                code: "wallet_exists",
                detail: e.to_string(),
            },
            E::Insufficient { .. } => ApiError::Invalid {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                code: "insufficient_funds",
                detail: e.to_string(),
            },
            E::NotReversible => ApiError::Conflict {
                code: "not_reversible",
                detail: e.to_string(),
            },
            E::Store(_) | E::Random => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<bastion_core::webhooks::WebhookError> for ApiError {
    fn from(e: bastion_core::webhooks::WebhookError) -> Self {
        use bastion_core::webhooks::WebhookError as E;
        use bastion_core::webhooks::signature::SignatureError as S;
        let detail = e.to_string();
        let with = |status, code| ApiError::Invalid {
            status,
            code,
            detail: detail.clone(),
        };
        match e {
            E::Org(org) => org.into(),
            E::NotFound => ApiError::NotFound,
            E::Invalid(_) => with(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field"),
            E::NotRetryable => ApiError::Conflict {
                code: "event_not_retryable",
                detail,
            },
            // Fail closed and say so (SPEC P2): the provider retries, the operator sees why.
            E::SecretMissing => with(StatusCode::INTERNAL_SERVER_ERROR, "webhook_secret_missing"),
            E::Rejected(S::Stale | S::Future) => with(
                StatusCode::BAD_REQUEST,
                "webhook_timestamp_out_of_tolerance",
            ),
            E::Rejected(S::MissingHeader(_)) => {
                with(StatusCode::BAD_REQUEST, "webhook_signature_missing")
            }
            E::Rejected(_) => with(StatusCode::BAD_REQUEST, "webhook_signature_invalid"),
            E::NoEventId => with(StatusCode::BAD_REQUEST, "webhook_event_id_missing"),
            E::Corrupt(_) | E::Vault(_) | E::Store(_) | E::Random => ApiError::Internal(detail),
        }
    }
}

impl From<bastion_core::payments::PaymentError> for ApiError {
    fn from(e: bastion_core::payments::PaymentError) -> Self {
        use bastion_core::payments::{GatewayError as G, PaymentError as E};
        match e {
            E::Org(org) => org.into(),
            E::Wallet(w) => w.into(),
            E::License(l) => l.into(),
            E::Invalid(detail) => ApiError::Invalid {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                code: "invalid_field",
                detail,
            },
            E::Gateway(G::NotConfigured) => ApiError::Invalid {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "payments_not_configured",
                detail: e.to_string(),
            },
            E::Gateway(G::Timeout) => ApiError::Invalid {
                status: StatusCode::GATEWAY_TIMEOUT,
                code: "payment_provider_timeout",
                detail: e.to_string(),
            },
            E::Gateway(_) => ApiError::Invalid {
                status: StatusCode::BAD_GATEWAY,
                code: "payment_provider_error",
                detail: "the payment provider refused or failed the request".into(),
            },
            E::Random => ApiError::Internal(e.to_string()),
        }
    }
}
