//! Security headers on every response, errors and 404s included (SPEC T2, T4).

use axum::http::{HeaderName, HeaderValue, header};
use axum::response::Response;

pub const HSTS: &str = "max-age=63072000; includeSubDomains; preload";
/// No third-party scripts, no framing (SPEC T4).
pub const CSP: &str = "default-src 'self'; frame-ancestors 'none'";

const HEADERS: [(HeaderName, &str); 5] = [
    (header::STRICT_TRANSPORT_SECURITY, HSTS),
    (header::CONTENT_SECURITY_POLICY, CSP),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::X_FRAME_OPTIONS, "DENY"),
];

pub async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    for (name, value) in HEADERS {
        h.insert(name, HeaderValue::from_static(value));
    }
    res
}
