//! The router and its hardening stack.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{self as http, HeaderName, HeaderValue, Response, StatusCode};
use axum::middleware::{from_fn, from_fn_with_state, map_response};
use axum::routing::{delete, get, patch, post, put};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;

use crate::error::Problem;
use crate::middleware::rate_limit::IpRateLimit;
use crate::middleware::{client_ip, headers, problem, rate_limit, timeout};
use crate::{AppState, HttpConfig, openapi, routes};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What varies between deployments of the same router.
#[derive(Default)]
pub struct AppOptions {
    /// The per-IP limiter; `None` when configured off.
    pub rate_limit: Option<Arc<IpRateLimit>>,
    /// Record request metrics (only when a metrics listener exists: otherwise it is pure cost).
    pub metrics: bool,
    /// Routes mounted under the same stack (tests mount a panicking handler).
    pub extra: Option<Router>,
}

/// The whole API with its middleware. `extra` lets tests mount routes (a panicking handler)
/// under the same stack; production passes `None`.
pub fn app(state: AppState, http: &HttpConfig, opts: AppOptions) -> Router {
    let AppOptions {
        rate_limit,
        metrics,
        extra,
    } = opts;
    let mut api = Router::new()
        .route("/healthz", get(routes::health::healthz))
        .route("/readyz", get(routes::health::readyz))
        .route(
            "/.well-known/security.txt",
            get(routes::well_known::security_txt),
        )
        .route("/.well-known/jwks.json", get(routes::well_known::jwks))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/v1/auth/signup", post(routes::auth::signup))
        .route("/v1/auth/login", post(routes::auth::login))
        .route("/v1/auth/refresh", post(routes::auth::refresh))
        .route("/v1/auth/logout", post(routes::auth::logout))
        .route("/v1/auth/verify-email", post(routes::auth::verify_email))
        .route(
            "/v1/auth/verify-email/resend",
            post(routes::auth::resend_verification),
        )
        .route(
            "/v1/auth/password/forgot",
            post(routes::auth::forgot_password),
        )
        .route(
            "/v1/auth/password/reset",
            post(routes::auth::reset_password),
        )
        .route("/v1/me", get(routes::auth::me))
        .route("/v1/me/password", post(routes::auth::change_password))
        .route(
            "/v1/sessions",
            get(routes::auth::list_sessions).delete(routes::auth::revoke_sessions),
        )
        .route("/v1/sessions/{id}", delete(routes::auth::revoke_session))
        .route(
            "/v1/me/activity",
            get(routes::orgs::activity).post(routes::orgs::add_activity),
        )
        .route(
            "/v1/orgs",
            get(routes::orgs::list).post(routes::orgs::create),
        )
        .route(
            "/v1/orgs/{org_id}",
            get(routes::orgs::get)
                .patch(routes::orgs::rename)
                .delete(routes::orgs::delete),
        )
        .route(
            "/v1/orgs/{org_id}/me/permissions",
            get(routes::orgs::my_permissions),
        )
        .route("/v1/orgs/{org_id}/members", get(routes::orgs::members))
        .route(
            "/v1/orgs/{org_id}/members/{user_id}",
            patch(routes::orgs::change_member).delete(routes::orgs::remove_member),
        )
        .route(
            "/v1/orgs/{org_id}/invitations",
            get(routes::orgs::invitations).post(routes::orgs::invite),
        )
        .route(
            "/v1/orgs/{org_id}/invitations/{invitation_id}",
            delete(routes::orgs::revoke_invitation),
        )
        .route(
            "/v1/invitations/accept",
            post(routes::orgs::accept_invitation),
        )
        .route(
            "/v1/orgs/{org_id}/api-keys",
            get(routes::orgs::api_keys).post(routes::orgs::create_api_key),
        )
        .route(
            "/v1/orgs/{org_id}/api-keys/{key_id}",
            delete(routes::orgs::revoke_api_key),
        )
        .route("/v1/orgs/{org_id}/audit", get(routes::orgs::audit))
        .route(
            "/v1/orgs/{org_id}/projects",
            get(routes::secrets::projects).post(routes::secrets::create_project),
        )
        .route(
            "/v1/orgs/{org_id}/projects/{project_id}",
            delete(routes::secrets::delete_project),
        )
        .route(
            "/v1/orgs/{org_id}/projects/{project_id}/secrets",
            get(routes::secrets::secrets).post(routes::secrets::create_secret),
        )
        .route(
            "/v1/orgs/{org_id}/projects/{project_id}/secrets/{name}",
            put(routes::secrets::update_secret).delete(routes::secrets::delete_secret),
        )
        .route(
            "/v1/orgs/{org_id}/projects/{project_id}/secrets/{name}/reveal",
            post(routes::secrets::reveal),
        )
        .route("/v1/licenses/activate", post(routes::licenses::activate))
        .route("/v1/licenses/validate", post(routes::licenses::validate))
        .route(
            "/v1/licenses/deactivate",
            post(routes::licenses::deactivate),
        )
        .route("/v1/licenses/machines", post(routes::licenses::machines))
        .route(
            "/v1/licenses/revoke-request",
            post(routes::licenses::revoke_request),
        )
        .route(
            "/v1/licenses/revoke/confirm",
            post(routes::licenses::revoke_confirm),
        )
        .route(
            "/v1/licenses/revocations/{product_id}",
            get(routes::licenses::revocations),
        )
        .route(
            "/v1/licenses/public-keys",
            get(routes::licenses::public_keys),
        )
        .route(
            "/v1/orgs/{org_id}/products",
            get(routes::licenses::products).post(routes::licenses::create_product),
        )
        .route(
            "/v1/orgs/{org_id}/products/{product_id}/policies",
            get(routes::licenses::policies).post(routes::licenses::create_policy),
        )
        .route(
            "/v1/orgs/{org_id}/licenses",
            get(routes::licenses::licenses).post(routes::licenses::issue),
        )
        .route(
            "/v1/orgs/{org_id}/licenses/{license_id}",
            get(routes::licenses::license),
        )
        .route(
            "/v1/orgs/{org_id}/licenses/{license_id}/freeze",
            post(routes::licenses::freeze),
        )
        .route(
            "/v1/orgs/{org_id}/licenses/{license_id}/unfreeze",
            post(routes::licenses::unfreeze),
        )
        .route(
            "/v1/orgs/{org_id}/licenses/{license_id}/revoke",
            post(routes::licenses::revoke),
        )
        .route(
            "/v1/orgs/{org_id}/licenses/{license_id}/machines/{machine_id}",
            delete(routes::licenses::remove_machine),
        )
        .route("/v1/webhooks/{endpoint_id}", post(routes::webhooks::ingest))
        .route(
            "/v1/orgs/{org_id}/webhooks/endpoints",
            get(routes::webhooks::endpoints).post(routes::webhooks::create_endpoint),
        )
        .route(
            "/v1/orgs/{org_id}/webhooks/endpoints/{endpoint_id}",
            delete(routes::webhooks::delete_endpoint),
        )
        .route(
            "/v1/orgs/{org_id}/webhooks/endpoints/{endpoint_id}/secrets",
            post(routes::webhooks::rotate_secret),
        )
        .route(
            "/v1/orgs/{org_id}/webhooks/events",
            get(routes::webhooks::events),
        )
        .route(
            "/v1/orgs/{org_id}/webhooks/events/{event_id}",
            get(routes::webhooks::event),
        )
        .route(
            "/v1/orgs/{org_id}/webhooks/events/{event_id}/retry",
            post(routes::webhooks::retry_event),
        )
        .route(
            "/v1/orgs/{org_id}/wallets",
            get(routes::wallets::list).post(routes::wallets::create),
        )
        .route(
            "/v1/orgs/{org_id}/wallets/{wallet_id}",
            get(routes::wallets::get),
        )
        .route(
            "/v1/orgs/{org_id}/wallets/{wallet_id}/postings",
            post(routes::wallets::post),
        )
        .route(
            "/v1/orgs/{org_id}/wallets/{wallet_id}/entries",
            get(routes::wallets::entries),
        )
        .route(
            "/v1/orgs/{org_id}/wallets/{wallet_id}/credit-limit",
            put(routes::wallets::credit_limit),
        )
        .route("/v1/me/wallets", get(routes::wallets::my_wallets))
        .route(
            "/v1/me/wallets/{wallet_id}/entries",
            get(routes::wallets::my_entries),
        )
        .route(
            "/v1/me/wallets/{wallet_id}/debits",
            post(routes::wallets::my_debit),
        )
        .route("/v1/checkout", post(routes::payments::checkout))
        // Keyed retries replay instead of repeating (SPEC P4); inside the body limit.
        .route_layer(from_fn_with_state(
            state.clone(),
            crate::middleware::idempotency::idempotent,
        ))
        .with_state(state);
    if let Some(extra) = extra {
        api = api.merge(extra);
    }
    // Innermost first: the deadline covers handlers; the limiter runs before any work.
    let mut app = api
        .fallback(|| async { StatusCode::NOT_FOUND })
        // The configured limit is the only one: axum's own 2 MB default would cap it silently.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(http.body_limit_bytes))
        .layer(from_fn_with_state(
            Duration::from_millis(http.request_timeout_ms),
            timeout::deadline,
        ));
    if let Some(rl) = rate_limit {
        app = app.layer(from_fn_with_state(rl, rate_limit::per_ip));
    }
    if metrics {
        app = app.layer(from_fn(record_metrics));
    }
    app.layer(
        ServiceBuilder::new()
            .layer(map_response(headers::security_headers))
            .layer(SetRequestIdLayer::new(REQUEST_ID, FastRequestId::default()))
            .layer(PropagateRequestIdLayer::new(REQUEST_ID))
            .layer(from_fn(problem::problem_json))
            .layer(TraceLayer::new_for_http().make_span_with(make_span))
            .layer(CatchPanicLayer::custom(panic_response))
            .layer(from_fn_with_state(
                Arc::new(http.trusted_proxies.clone()),
                client_ip::client_ip,
            )),
    )
}

/// Request ids: a random per-process prefix and a counter. Unique, cheap (no syscall per
/// request), and not secret.
#[derive(Clone)]
struct FastRequestId {
    prefix: Arc<str>,
    next: Arc<AtomicU64>,
}

impl Default for FastRequestId {
    fn default() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        Self {
            prefix: Arc::from(format!("{:016x}", h.finish())),
            next: Arc::new(AtomicU64::new(1)),
        }
    }
}

impl MakeRequestId for FastRequestId {
    fn make_request_id<B>(&mut self, _: &http::Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("{}-{n:x}", self.prefix))
            .ok()
            .map(RequestId::new)
    }
}

fn route_of(req: &Request) -> String {
    req.extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned())
}

fn make_span(req: &Request) -> tracing::Span {
    let request_id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::info_span!("http", method = %req.method(), route = %route_of(req), request_id = %request_id)
}

async fn record_metrics(req: Request, next: axum::middleware::Next) -> axum::response::Response {
    let route = route_of(&req);
    let start = std::time::Instant::now();
    let res = next.run(req).await;
    let status = res.status().as_u16().to_string();
    metrics::counter!("bastion_http_requests_total", "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("bastion_http_request_duration_seconds", "route" => route)
        .record(start.elapsed().as_secs_f64());
    res
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response<axum::body::Body> {
    // The panic payload may hold data we must not echo; the span already carries the request id.
    tracing::error!("handler panicked");
    Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", None)
        .into_response_with(StatusCode::INTERNAL_SERVER_ERROR)
}
