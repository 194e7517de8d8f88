//! One module per area of the API.

pub mod auth;
pub mod health;
pub mod licenses;
pub mod orgs;
pub mod payments;
pub mod secrets;
pub mod wallets;
pub mod webhooks;
pub mod well_known;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::ApiError;

/// An answer that carries a secret (a key, a token, a revealed value, a certificate): no cache
/// may keep it, and the idempotency layer never stores it for replay.
pub(crate) fn no_store(resp: impl IntoResponse) -> Response {
    let mut resp = resp.into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Ids Bastion issues are `<prefix>_<32 hex>`; anything else cannot exist (and could not be
/// carried in a signed scope), so it is answered 404 without a query.
pub(crate) fn path_id<'a>(raw: &'a str, prefix: &str) -> Result<&'a str, ApiError> {
    let ok = raw
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('_'))
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok { Ok(raw) } else { Err(ApiError::NotFound) }
}
