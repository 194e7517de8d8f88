//! Turns every bare error response (from the router, a layer or an extractor rejection) into
//! problem+json, so no error escapes without a stable `code`; adds the request id to problems.

use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::error::{PROBLEM_JSON, Problem, code_for_status};

const MAX_DETAIL: usize = 2048;

pub async fn problem_json(req: Request, next: Next) -> Response {
    // A header clone is a reference count, not a copy: the success path stays allocation-free.
    let request_id = req.headers().get("x-request-id").cloned();
    let res = next.run(req).await;
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == PROBLEM_JSON.as_bytes());
    let (mut parts, body) = res.into_parts();
    let mut problem = if is_problem {
        match to_bytes(body, 64 * 1024)
            .await
            .ok()
            .and_then(|b| serde_json::from_slice::<Problem>(&b).ok())
        {
            Some(p) => p,
            None => Problem::new(status, code_for_status(status), None),
        }
    } else {
        // Rejection texts of 4xx are safe and useful ("missing field `email`"); 5xx are dropped.
        let detail = match to_bytes(body, MAX_DETAIL).await {
            Ok(b) if !b.is_empty() && status.is_client_error() => {
                Some(String::from_utf8_lossy(&b).into_owned())
            }
            _ => None,
        };
        Problem::new(status, code_for_status(status), detail)
    };
    problem.request_id = request_id.and_then(|v| v.to_str().ok().map(str::to_owned));
    let bytes = serde_json::to_vec(&problem).unwrap_or_else(|_| b"{}".to_vec());
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(bytes))
}
