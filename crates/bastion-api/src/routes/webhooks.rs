//! Inbound webhooks (SPEC P2, P3): the public ingest endpoint providers call, and the org's
//! administration of endpoints, secrets and the event inbox.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use bastion_core::webhooks::signature::Delivery;
use bastion_core::webhooks::{EndpointConfig, EndpointInput, Ingested, Provider};
use bastion_store::{EndpointRow, EventRow, EventStatus};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::path_id as id;
use crate::extract::{JsonBody, OrgAuth};
use crate::{ApiError, AppState};

#[derive(Serialize, utoipa::ToSchema)]
pub struct IngestOut {
    pub received: bool,
    pub event_id: String,
    /// True when this delivery repeated one already stored: nothing was processed again.
    pub duplicate: bool,
    /// `received`, `processing`, `processed`, `failed` or `dead`.
    pub status: String,
}

impl From<Ingested> for IngestOut {
    fn from(i: Ingested) -> Self {
        Self {
            received: true,
            event_id: i.event_id,
            duplicate: i.duplicate,
            status: i.status.as_str().to_owned(),
        }
    }
}

/// A provider's delivery. Verified over the raw bytes before anything is parsed or stored.
#[utoipa::path(post, path = "/v1/webhooks/{endpoint_id}", tag = "webhooks",
    request_body(content = String, content_type = "application/octet-stream",
        description = "the provider's raw payload, verified byte for byte"),
    responses((status = 200, body = IngestOut), (status = 400, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem), (status = 500, body = crate::error::Problem)))]
pub async fn ingest(
    State(state): State<AppState>,
    Path(endpoint_id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<IngestOut>, ApiError> {
    let endpoint_id = id(&endpoint_id, "whe")?;
    // A value that is not visible ASCII cannot be a signature or a timestamp; it is skipped
    // and the scheme then finds its header missing.
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .filter_map(|(n, v)| v.to_str().ok().map(|v| (n.as_str(), v)))
        .collect();
    let delivery = Delivery {
        headers: &pairs,
        query: query.as_deref(),
        body: &body,
    };
    let ingested = state.webhooks.ingest(endpoint_id, &delivery).await?;
    Ok(Json(ingested.into()))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointIn {
    pub name: String,
    /// `stripe`, `github`, `slack`, `standard`, `twilio` or `generic`.
    pub provider: String,
    /// The signing secrets the provider gave (1 to 5); stored sealed, never returned.
    #[schema(value_type = Vec<String>)]
    pub secrets: Vec<SecretString>,
    /// Scheme settings: `tolerance_secs`, Twilio's `public_url`, the generic `header`,
    /// `encoding` and `prefix`, and `handler` (`inbox` or `payments`).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub config: EndpointConfig,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EndpointOut {
    pub id: String,
    pub name: String,
    pub provider: String,
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
    /// Where the provider must send deliveries.
    pub path: String,
    pub created_ms: i64,
    pub created_by: String,
}

impl From<EndpointRow> for EndpointOut {
    fn from(e: EndpointRow) -> Self {
        Self {
            path: format!("/v1/webhooks/{}", e.id),
            id: e.id,
            name: e.name,
            provider: e.provider,
            config: serde_json::from_str(&e.config).unwrap_or(serde_json::Value::Null),
            created_ms: e.created_ms,
            created_by: e.created_by,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EndpointListOut {
    pub endpoints: Vec<EndpointOut>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateIn {
    #[schema(value_type = String)]
    pub secret: SecretString,
    /// How long the older secrets keep verifying (default 86400 s).
    pub overlap_secs: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RotateOut {
    /// When the older secrets stop verifying.
    pub old_secrets_expire_ms: i64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EventOut {
    pub id: String,
    pub endpoint_id: String,
    pub provider: String,
    pub event_id: String,
    pub event_type: String,
    pub status: String,
    pub attempts: u32,
    pub next_attempt_ms: Option<i64>,
    pub last_error: Option<String>,
    pub received_ms: i64,
    pub processed_ms: Option<i64>,
    /// The verified body as text (lossy for non-UTF-8 bodies).
    pub payload: String,
}

impl From<EventRow> for EventOut {
    fn from(e: EventRow) -> Self {
        Self {
            payload: String::from_utf8_lossy(&e.payload).into_owned(),
            id: e.id,
            endpoint_id: e.endpoint_id,
            provider: e.provider,
            event_id: e.event_id,
            event_type: e.event_type,
            status: e.status.as_str().to_owned(),
            attempts: e.attempts,
            next_attempt_ms: e.next_attempt_ms,
            last_error: e.last_error,
            received_ms: e.received_ms,
            processed_ms: e.processed_ms,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EventListOut {
    pub events: Vec<EventOut>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    pub endpoint_id: Option<String>,
    pub status: Option<String>,
    /// Events received before this time (ms), for paging.
    pub before_ms: Option<i64>,
    pub limit: Option<u32>,
}

#[utoipa::path(post, path = "/v1/orgs/{org_id}/webhooks/endpoints", tag = "webhooks",
    request_body = EndpointIn,
    responses((status = 201, body = EndpointOut), (status = 404, body = crate::error::Problem),
        (status = 409, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn create_endpoint(
    State(state): State<AppState>,
    OrgAuth(caller): OrgAuth,
    Path(org_id): Path<String>,
    JsonBody(body): JsonBody<EndpointIn>,
) -> Result<(StatusCode, Json<EndpointOut>), ApiError> {
    let org_id = id(&org_id, "org")?;
    let provider = Provider::parse(&body.provider).ok_or_else(|| ApiError::Invalid {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        code: "invalid_field",
        detail: "provider is stripe, github, slack, standard, twilio or generic".into(),
    })?;
    let row = state
        .webhooks
        .create_endpoint(
            &caller,
            org_id,
            EndpointInput {
                name: body.name,
                provider,
                config: body.config,
                secrets: body.secrets,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(row.into())))
}

#[utoipa::path(get, path = "/v1/orgs/{org_id}/webhooks/endpoints", tag = "webhooks",
    responses((status = 200, body = EndpointListOut), (status = 404, body = crate::error::Problem)))]
pub async fn endpoints(
    State(state): State<AppState>,
    OrgAuth(caller): OrgAuth,
    Path(org_id): Path<String>,
) -> Result<Json<EndpointListOut>, ApiError> {
    let org_id = id(&org_id, "org")?;
    let rows = state.webhooks.endpoints(&caller, org_id).await?;
    Ok(Json(EndpointListOut {
        endpoints: rows.into_iter().map(EndpointOut::from).collect(),
    }))
}

#[utoipa::path(delete, path = "/v1/orgs/{org_id}/webhooks/endpoints/{endpoint_id}",
    tag = "webhooks", responses((status = 204), (status = 404, body = crate::error::Problem)))]
pub async fn delete_endpoint(
    State(state): State<AppState>,
    OrgAuth(caller): OrgAuth,
    Path((org_id, endpoint_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let org_id = id(&org_id, "org")?;
    let endpoint_id = id(&endpoint_id, "whe")?;
    state
        .webhooks
        .delete_endpoint(&caller, org_id, endpoint_id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/orgs/{org_id}/webhooks/endpoints/{endpoint_id}/secrets",
    tag = "webhooks", request_body = RotateIn,
    responses((status = 200, body = RotateOut), (status = 404, body = crate::error::Problem),
        (status = 422, body = crate::error::Problem)))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    OrgAuth(caller): OrgAuth,
    Path((org_id, endpoint_id)): Path<(String, String)>,
    JsonBody(body): JsonBody<RotateIn>,
) -> Result<Json<RotateOut>, ApiError> {
    let org_id = id(&org_id, "org")?;
    let endpoint_id = id(&endpoint_id, "whe")?;
    let until = state
        .webhooks
        .rotate_secret(
            &caller,
            org_id,
            endpoint_id,
            &body.secret,
            body.overlap_secs,
        )
        .await?;
    Ok(Json(RotateOut {
        old_secrets_expire_ms: until,
    }))
}

#[utoipa::path(get, path = "/v1/orgs/{org_id}/webhooks/events", tag = "webhooks",
    params(EventQuery),
    responses((status = 200, body = EventListOut), (status = 404, body = crate::error::Problem)))]
pub async fn events(
    State(state): State<AppState>,
    OrgAuth(caller): OrgAuth,
    Path(org_id): Path<String>,
    Query(q): Query<EventQuery>,
) -> Result<Json<EventListOut>, ApiError> {
    let org_id = id(&org_id, "org")?;
    let endpoint_id = match &q.endpoint_id {
        Some(e) => Some(id(e, "whe")?),
        None => None,
    };
    let status = match q.status.as_deref() {
        Some(s) => Some(EventStatus::parse(s).ok_or_else(|| ApiError::Invalid {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid_field",
            detail: "status is received, processing, processed, failed or dead".into(),
        })?),
        None => None,
    };
    let rows = state
        .webhooks
        .events(
            &caller,
            org_id,
            endpoint_id,
            status,
            q.before_ms,
            q.limit.unwrap_or(50),
        )
        .await?;
    Ok(Json(EventListOut {
        events: rows.into_iter().map(EventOut::from).collect(),
    }))
}

#[utoipa::path(get, path = "/v1/orgs/{org_id}/webhooks/events/{event_id}", tag = "webhooks",
    responses((status = 200, body = EventOut), (status = 404, body = crate::error::Problem)))]
pub async fn event(
    State(state): State<AppState>,
    OrgAuth(caller): OrgAuth,
    Path((org_id, event_id)): Path<(String, String)>,
) -> Result<Json<EventOut>, ApiError> {
    let org_id = id(&org_id, "org")?;
    let event_id = id(&event_id, "wev")?;
    Ok(Json(
        state
            .webhooks
            .event(&caller, org_id, event_id)
            .await?
            .into(),
    ))
}

/// Runs a failed or dead event again now.
#[utoipa::path(post, path = "/v1/orgs/{org_id}/webhooks/events/{event_id}/retry",
    tag = "webhooks",
    responses((status = 200, body = EventOut), (status = 404, body = crate::error::Problem),
        (status = 409, body = crate::error::Problem)))]
pub async fn retry_event(
    State(state): State<AppState>,
    OrgAuth(caller): OrgAuth,
    Path((org_id, event_id)): Path<(String, String)>,
) -> Result<Json<EventOut>, ApiError> {
    let org_id = id(&org_id, "org")?;
    let event_id = id(&event_id, "wev")?;
    Ok(Json(
        state
            .webhooks
            .retry(&caller, org_id, event_id)
            .await?
            .into(),
    ))
}
