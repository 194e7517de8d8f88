//! Liveness and readiness for orchestrators.

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use crate::{ApiError, AppState};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HealthOut {
    pub status: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = HealthOut)))]
pub async fn healthz() -> Json<HealthOut> {
    Json(HealthOut { status: "ok" })
}

/// The process can serve: its database answers.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses((status = 200, body = HealthOut), (status = 503, body = crate::error::Problem, content_type = "application/problem+json"))
)]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<HealthOut>, ApiError> {
    match state.store.ping().await {
        Ok(()) => Ok(Json(HealthOut { status: "ready" })),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            Err(ApiError::NotReady)
        }
    }
}
