//! `/.well-known/security.txt` (RFC 9116, SPEC T6), rendered once from configuration.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::{ApiError, AppState, SecurityTxtConfig};

/// Renders the file, or `None` when no contact is configured (RFC 9116 requires one).
pub fn render_security_txt(cfg: &SecurityTxtConfig, now: time::OffsetDateTime) -> Option<String> {
    if cfg.contact.is_empty() {
        return None;
    }
    let expires = (now + time::Duration::days(i64::from(cfg.expires_days.clamp(1, 365))))
        .replace_nanosecond(0)
        .unwrap_or(now)
        .format(&time::format_description::well_known::Rfc3339)
        .ok()?;
    let mut out = String::new();
    for c in &cfg.contact {
        out.push_str(&format!("Contact: {}\n", c.trim()));
    }
    out.push_str(&format!("Expires: {expires}\n"));
    for (field, value) in [
        ("Encryption", &cfg.encryption),
        ("Policy", &cfg.policy),
        ("Preferred-Languages", &cfg.preferred_languages),
        ("Canonical", &cfg.canonical),
    ] {
        if !value.trim().is_empty() {
            out.push_str(&format!("{field}: {}\n", value.trim()));
        }
    }
    Some(out)
}

/// The security contact file.
#[utoipa::path(
    get,
    path = "/.well-known/security.txt",
    tag = "well-known",
    responses((status = 200, content_type = "text/plain; charset=utf-8", body = String), (status = 404, body = crate::error::Problem))
)]
pub async fn security_txt(State(state): State<AppState>) -> Result<Response, ApiError> {
    let body = state.security_txt.clone().ok_or(ApiError::NotFound)?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.to_string(),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t6_security_txt_has_contact_expiry_and_optional_fields() {
        let cfg = SecurityTxtConfig {
            contact: vec!["mailto:security@example.com".into()],
            encryption: "https://example.com/pgp.txt".into(),
            policy: String::new(),
            preferred_languages: "en".into(),
            canonical: String::new(),
            expires_days: 180,
        };
        let now = time::macros::datetime!(2026-01-01 0:00 UTC);
        let txt = render_security_txt(&cfg, now).unwrap();
        assert!(txt.contains("Contact: mailto:security@example.com\n"));
        assert!(txt.contains("Expires: 2026-06-30T00:00:00Z\n"), "{txt}");
        assert!(txt.contains("Encryption: https://example.com/pgp.txt\n"));
        assert!(!txt.contains("Policy:"));
        let empty = SecurityTxtConfig {
            contact: vec![],
            ..cfg
        };
        assert!(render_security_txt(&empty, now).is_none());
    }
}

/// The public keys that verify Bastion's access tokens (SPEC A5): the current signing key and
/// any superseded one a still-valid token may carry.
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    tag = "well-known",
    responses((status = 200, content_type = "application/json", body = Object))
)]
pub async fn jwks(State(state): State<AppState>) -> Response {
    let now = time::OffsetDateTime::now_utc()
        .unix_timestamp()
        .saturating_mul(1000);
    let set = state.keys.current().token_jwks(now, state.jwks_overlap_ms);
    // Short cache: verifiers refetch soon after a rotation.
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        axum::Json(set),
    )
        .into_response()
}
