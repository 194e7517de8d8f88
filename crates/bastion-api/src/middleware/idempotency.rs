//! `Idempotency-Key` on Bastion's own POST endpoints (SPEC P4).
//!
//! A POST with the header from an authenticated principal (access token or API key) claims the
//! key for that principal. The same key with the same request replays the stored response with
//! `Idempotency-Replayed: true`; with another request it is 422 `idempotency_key_reused`; while
//! the first still runs, 409 `idempotency_key_in_use`. Server errors, conflicts, timeouts and
//! rate limits are not kept, nor a request abandoned midway (deadline, client gone), so the
//! retry runs again. Requests without credentials are not keyed: a stored
//! sign-in response must never be replayable to whoever holds a captured request. A response
//! that carries a secret or tokens (`Cache-Control: no-store`) is never kept: its replay is 409
//! `idempotency_response_withheld`. Keys are per principal and, in an org's paths, per the
//! caller's current standing there (see [`owner`]); every replay is audited.

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bastion_core::idempotency::{Decision, Response as Kept, check_key, fingerprint};

use crate::{ApiError, AppState};

pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
pub const REPLAYED: &str = "idempotency-replayed";
/// Response headers worth replaying; everything else is the middleware stack's to set again.
const KEPT_HEADERS: [&str; 3] = ["content-type", "location", "cache-control"];

fn problem(status: StatusCode, code: &'static str, detail: &str) -> Response {
    ApiError::Invalid {
        status,
        code,
        detail: detail.to_owned(),
    }
    .into_response()
}

/// The principal a key belongs to: the API key itself (a revoked key has none), or the user
/// behind an access token together with their current standing in the org the path names. A
/// stored response is thereby out of reach once that standing changes: the retry runs, and is
/// authorized, as a new request.
async fn owner(state: &AppState, bearer: Option<String>, path: &str) -> Option<String> {
    let token = bearer?;
    let token = token.trim();
    if token.starts_with("bst_sk_") || token.starts_with("bst_pk_") {
        let key = state.orgs.authenticate_key(token).await.ok()?;
        return Some(format!("key:{}", key.key_id));
    }
    let principal = state.sessions.authenticate(token).await.ok()?;
    let user = format!("user:{}", principal.user_id);
    let Some(org) = org_in_path(path) else {
        return Some(user);
    };
    let caller = bastion_core::orgs::Caller::user(&principal.user_id);
    let standing = match state.orgs.access(&caller, org).await {
        Ok(access) => access.level.map_or(0, |l| l.value()),
        Err(_) => 0,
    };
    Some(format!("{user}@{org}:{standing}"))
}

/// The org id of a `/v1/orgs/{org}/…` path.
fn org_in_path(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v1/orgs/")?;
    let org = rest.split(['/', '?']).next()?;
    (!org.is_empty()).then_some(org)
}

/// What is kept for a response that carried a secret or tokens (`Cache-Control: no-store`):
/// never the response itself, so a retry learns that the request ran, not its secret.
fn withheld() -> Response {
    problem(
        StatusCode::CONFLICT,
        "idempotency_response_withheld",
        "the request with this Idempotency-Key completed; its response carried a secret and is \
         not kept, so look the result up instead",
    )
}

pub async fn idempotent(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST || req.uri().path().starts_with("/v1/webhooks/") {
        return next.run(req).await;
    }
    let Some(raw_key) = req.headers().get(IDEMPOTENCY_KEY) else {
        return next.run(req).await;
    };
    let key = match raw_key.to_str() {
        Ok(k) if check_key(k).is_ok() => k.to_owned(),
        _ => {
            return problem(
                StatusCode::BAD_REQUEST,
                "idempotency_key_invalid",
                "Idempotency-Key is 1 to 255 visible ASCII characters",
            );
        }
    };
    // Bad credentials are the handler's to refuse, with its own answer.
    // Owned before awaiting: a request body is not `Sync`, so no borrow of it may cross.
    let bearer = crate::extract::bearer_token(req.headers()).map(str::to_owned);
    let Some(owner) = owner(&state, bearer, req.uri().path()).await else {
        return next.run(req).await;
    };
    let (parts, body) = req.into_parts();
    // The body limit layer outside has already bounded the body.
    let bytes = match to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(_) => {
            return problem(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the body is too large",
            );
        }
    };
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path(), |p| p.as_str());
    let print = fingerprint(parts.method.as_str(), path, content_type, &bytes);
    let row_id = match state.idempotency.begin(&owner, &key, &print).await {
        Ok(Decision::Run { row_id }) => row_id,
        Ok(Decision::Replay(kept)) => return replay(kept),
        Ok(Decision::InFlight) => {
            return problem(
                StatusCode::CONFLICT,
                "idempotency_key_in_use",
                "a request with this Idempotency-Key is still being processed; retry later",
            );
        }
        Ok(Decision::Mismatch) => {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request",
            );
        }
        Err(e) => return ApiError::Internal(e.to_string()).into_response(),
    };
    // Dropped before it completes (the deadline fired, or the client went away): the key is
    // released, so a retry runs instead of meeting 409 until the key expires.
    let claim = Claim {
        state: Some(state.clone()),
        row_id,
    };
    let res = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let status = res.status();
    if status.is_server_error()
        || status == StatusCode::CONFLICT
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
    {
        claim.release().await;
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let Ok(bytes) = to_bytes(body, usize::MAX).await else {
        claim.release().await;
        return ApiError::Internal("response body unreadable".into()).into_response();
    };
    let secret = parts
        .headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.contains("no-store")));
    let kept = if secret {
        let (w_parts, w_body) = withheld().into_parts();
        let Ok(w_bytes) = to_bytes(w_body, usize::MAX).await else {
            claim.release().await;
            return ApiError::Internal("response body unreadable".into()).into_response();
        };
        keepable(w_parts.status, &w_parts.headers, &w_bytes)
    } else {
        keepable(status, &parts.headers, &bytes)
    };
    let row_id = claim.keep();
    if let Err(e) = state.idempotency.complete(&row_id, &kept).await {
        // The effect happened; a retry will find the key in flight until it expires, never
        // run twice.
        tracing::error!(error = %e, "storing an idempotent response failed");
    }
    parts
        .headers
        .insert(REPLAYED, HeaderValue::from_static("false"));
    Response::from_parts(parts, Body::from(bytes))
}

/// The parts of a response worth replaying.
fn keepable(status: StatusCode, headers: &axum::http::HeaderMap, body: &[u8]) -> Kept {
    Kept {
        status: status.as_u16(),
        headers: KEPT_HEADERS
            .iter()
            .filter_map(|n| {
                headers
                    .get(*n)
                    .and_then(|v| v.to_str().ok())
                    .map(|v| ((*n).to_owned(), v.to_owned()))
            })
            .collect(),
        body: body.to_vec(),
    }
}

/// A claimed key while its request runs: released when dropped unless kept.
struct Claim {
    state: Option<AppState>,
    row_id: String,
}

impl Claim {
    async fn release(mut self) {
        if let Some(state) = self.state.take()
            && let Err(e) = state.idempotency.release(&self.row_id).await
        {
            tracing::error!(error = %e, "releasing an idempotency key failed");
        }
    }

    /// The response is about to be stored: no release on drop any more.
    fn keep(mut self) -> String {
        self.state = None;
        std::mem::take(&mut self.row_id)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let Some(state) = self.state.take() else {
            return;
        };
        let row_id = std::mem::take(&mut self.row_id);
        // Drop cannot await: the release runs on its own task (none outside a runtime, where
        // the key then expires as after a crash).
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = state.idempotency.release(&row_id).await {
                    tracing::error!(error = %e, "releasing an abandoned idempotency key failed");
                }
            });
        }
    }
}

fn replay(kept: Kept) -> Response {
    let status = StatusCode::from_u16(kept.status).unwrap_or(StatusCode::OK);
    let mut res = Response::new(Body::from(kept.body));
    *res.status_mut() = status;
    for (name, value) in kept.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::from_str(&value),
        ) {
            res.headers_mut().insert(n, v);
        }
    }
    res.headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
    res
}
