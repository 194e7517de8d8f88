//! Extractors: authentication (so no handler can forget it) and JSON bodies whose rejections
//! never echo what was sent (a password sent as a number must not come back in an error).

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use bastion_core::orgs::{Caller, is_api_key};
use bastion_core::sessions::Principal;
use serde::de::DeserializeOwned;

use crate::{ApiError, AppState};

/// The authenticated caller: a valid, unrevoked access token (`Authorization: Bearer …`).
pub struct Auth(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)?;
        let principal = state.sessions.authenticate(token).await?;
        parts.extensions.insert(principal.clone());
        Ok(Auth(principal))
    }
}

/// The bearer credential, or 401 `missing_token`.
fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    bearer_token(&parts.headers).ok_or(ApiError::Unauthorized {
        code: "missing_token",
    })
}

/// The credential of `Authorization: Bearer …` (the scheme in any case, RFC 9110): the one
/// parser, so the idempotency middleware keys exactly the requests the extractors authenticate.
pub(crate) fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    let h = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = h.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case("bearer ") {
        return None;
    }
    Some(token.trim()).filter(|t| !t.is_empty())
}

/// Headers only browsers send (scripts cannot set `Sec-Fetch-*`, and browsers send `Origin` on
/// every cross-origin and every non-GET request): a secret key arriving with one is exposed.
fn from_browser(headers: &axum::http::HeaderMap) -> bool {
    ["origin", "sec-fetch-site", "sec-fetch-mode"]
        .iter()
        .any(|h| headers.contains_key(*h))
}

/// The caller of an organization route: a signed-in user (access token) or one of the org's
/// API keys. A service key is refused when the request carries an `Origin` or `Sec-Fetch-*`
/// header (a browser context, where a secret key must never be), before it is even looked up;
/// each key has its own rate limit.
pub struct OrgAuth(pub Caller);

impl FromRequestParts<AppState> for OrgAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)?;
        if !is_api_key(token) {
            let principal = state.sessions.authenticate(token).await?;
            let caller = Caller::user(&principal.user_id);
            parts.extensions.insert(principal);
            return Ok(OrgAuth(caller));
        }
        if token.starts_with("bst_sk_") && from_browser(&parts.headers) {
            return Err(ApiError::Invalid {
                status: StatusCode::FORBIDDEN,
                code: "service_key_in_browser",
                detail: "service keys are for servers: a browser request (Origin or Sec-Fetch headers) cannot use one; use a publishable key in browsers and apps".into(),
            });
        }
        let key = state.orgs.authenticate_key(token).await?;
        if let Some(limit) = &state.key_limit {
            limit.check(&key.key_id)?;
        }
        tracing::debug!(api_key = %key.key_id, "API key accepted");
        Ok(OrgAuth(Caller::Key(key)))
    }
}

/// `Json<T>` with a value-free error: 415 for a wrong content type, 400 for broken JSON, 422
/// naming the field (not its value) for a wrong shape.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        use axum::extract::rejection::JsonRejection as R;
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(JsonBody(v)),
            Err(R::MissingJsonContentType(_)) => Err(ApiError::Invalid {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                code: "unsupported_media_type",
                detail: "send the body as application/json".into(),
            }),
            Err(R::JsonSyntaxError(_)) => Err(ApiError::Invalid {
                status: StatusCode::BAD_REQUEST,
                code: "malformed_json",
                detail: "the body is not valid JSON".into(),
            }),
            Err(R::JsonDataError(e)) => Err(ApiError::Invalid {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                code: "invalid_body",
                detail: describe_data_error(&e.body_text()),
            }),
            Err(R::BytesRejection(_)) => Err(ApiError::Invalid {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                code: "payload_too_large",
                detail: "the body is too large".into(),
            }),
            Err(_) => Err(ApiError::Invalid {
                status: StatusCode::BAD_REQUEST,
                code: "bad_request",
                detail: "unreadable body".into(),
            }),
        }
    }
}

/// Keeps serde's field path and the kind of problem, drops any quoted input.
fn describe_data_error(text: &str) -> String {
    let named = |marker: &str| {
        text.split_once(marker)
            .and_then(|(_, rest)| rest.split('`').next())
            .map(|f| {
                f.chars()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect::<String>()
            })
    };
    if let Some(f) = named("missing field `") {
        return format!("missing field `{f}`");
    }
    if let Some(f) = named("unknown field `") {
        return format!("unknown field `{f}`");
    }
    let kind = if text.contains("invalid type") {
        "wrong type"
    } else {
        "invalid value"
    };
    let field = text
        .split_once("target type: ")
        .and_then(|(_, rest)| rest.split(": ").next())
        .filter(|f| {
            !f.is_empty()
                && f.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.[]".contains(c))
        });
    match field {
        Some(f) => format!("{f}: {kind}"),
        None => kind.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_errors_keep_the_field_and_drop_the_value() {
        let t = "Failed to deserialize the JSON body into the target type: password: invalid type: integer `12345678`, expected a string at line 1 column 30";
        let d = describe_data_error(t);
        assert!(!d.contains("12345678"), "{d}");
        assert!(d.contains("password") && d.contains("wrong type"), "{d}");
        let m = describe_data_error(
            "Failed to deserialize the JSON body into the target type: missing field `email` at line 1 column 2",
        );
        assert_eq!(m, "missing field `email`");
    }
}
