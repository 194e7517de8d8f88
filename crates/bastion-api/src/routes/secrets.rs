//! Org projects and their secrets (SPEC S1, S4). Values go in through create and update and
//! come out only through reveal (with a reason, audited, `Cache-Control: no-store`); lists show
//! names and metadata. A value is never echoed in an error: body errors name the field only.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use bastion_store::{ProjectRow, SecretMeta};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::path_id as id;
use crate::extract::{JsonBody, OrgAuth};
use crate::{ApiError, AppState};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectIn {
    pub name: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ProjectOut {
    pub id: String,
    pub name: String,
    pub created_by: String,
    pub created_ms: i64,
}

impl From<ProjectRow> for ProjectOut {
    fn from(p: ProjectRow) -> Self {
        Self {
            id: p.id,
            name: p.name,
            created_by: p.created_by,
            created_ms: p.created_ms,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ProjectListOut {
    pub projects: Vec<ProjectOut>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretIn {
    /// An environment-variable name: a letter or `_`, then letters, digits or `_`.
    pub name: String,
    /// 1 byte to 64 KiB. Never returned except by reveal.
    #[schema(value_type = String)]
    pub value: SecretString,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretValueIn {
    #[schema(value_type = String)]
    pub value: SecretString,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevealIn {
    /// Why the value is needed (3–500 characters); kept in the audit trail.
    pub reason: String,
}

/// A secret's metadata: never its value.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SecretOut {
    pub id: String,
    pub project_id: String,
    pub name: String,
    pub version: u32,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub updated_by: String,
}

impl From<SecretMeta> for SecretOut {
    fn from(m: SecretMeta) -> Self {
        Self {
            id: m.id,
            project_id: m.project_id,
            name: m.name,
            version: m.version,
            created_ms: m.created_ms,
            updated_ms: m.updated_ms,
            updated_by: m.updated_by,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SecretListOut {
    pub secrets: Vec<SecretOut>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RevealOut {
    pub secret: SecretOut,
    pub value: String,
}

#[utoipa::path(post, path = "/v1/orgs/{org_id}/projects", tag = "secrets",
    request_body = ProjectIn,
    responses((status = 201, body = ProjectOut), (status = 404, body = crate::error::Problem),
        (status = 409, body = crate::error::Problem)))]
pub async fn create_project(
    State(state): State<AppState>,
    OrgAuth(caller): OrgAuth,
    Path(org_id): Path<String>,
    JsonBody(body): JsonBody<ProjectIn>,
) -> Result<(StatusCode, Json<ProjectOut>), ApiError> {
    let org_id = id(&org_id, "org")?;
    let row = state
        .secrets
        .create_project(&caller, org_id, &body.name)
        .await?;
    Ok((StatusCode::CREATED, Json(row.into())))
}

#[utoipa::path(get, path = "/v1/orgs/{org_id}/projects", tag = "secrets",
    responses((status = 200, body = ProjectListOut), (status = 404, body = crate::error::Problem)))]
pub async fn projects(
    State(state): State<AppState>,
    OrgAuth(caller): OrgAuth,
    Path(org_id): Path<String>,
) -> Result<Json<ProjectListOut>, ApiError> {
    let org_id = id(&org_id, "org")?;
    let rows = state.secrets.projects(&caller, org_id).await?;
    Ok(Json(ProjectListOut {
        projects: rows.into_iter().map(ProjectOut::from).collect(),
    }))
}

#[utoipa::path(delete, path = "/v1/orgs/{org_id}/projects/{project_id}", tag = "secrets",
    responses((status = 204), (status = 404, body = crate::error::Problem)))]
pub async fn delete_project(
    State(state): State<AppState>,
    OrgAuth(caller): OrgAuth,
    Path((org_id, project_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let org_id = id(&org_id, "org")?;
    let project_id = id(&project_id, "prj")?;
    state
        .secrets
        .delete_project(&caller, org_id, project_id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/orgs/{org_id}/projects/{project_id}/secrets", tag = "secrets",
    request_body = SecretIn,
    responses((status = 201, body = SecretOut), (status = 404, body = crate::error::Problem),
        (status = 409, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn create_secret(
    State(state): State<AppState>,
    OrgAuth(caller): OrgAuth,
    Path((org_id, project_id)): Path<(String, String)>,
    JsonBody(body): JsonBody<SecretIn>,
) -> Result<(StatusCode, Json<SecretOut>), ApiError> {
    let org_id = id(&org_id, "org")?;
    let project_id = id(&project_id, "prj")?;
    let meta = state
        .secrets
        .create(&caller, org_id, project_id, &body.name, &body.value)
        .await?;
    Ok((StatusCode::CREATED, Json(meta.into())))
}

#[utoipa::path(get, path = "/v1/orgs/{org_id}/projects/{project_id}/secrets", tag = "secrets",
    responses((status = 200, body = SecretListOut), (status = 404, body = crate::error::Problem)))]
pub async fn secrets(
    State(state): State<AppState>,
    OrgAuth(caller): OrgAuth,
    Path((org_id, project_id)): Path<(String, String)>,
) -> Result<Json<SecretListOut>, ApiError> {
    let org_id = id(&org_id, "org")?;
    let project_id = id(&project_id, "prj")?;
    let rows = state.secrets.list(&caller, org_id, project_id).await?;
    Ok(Json(SecretListOut {
        secrets: rows.into_iter().map(SecretOut::from).collect(),
    }))
}

#[utoipa::path(put, path = "/v1/orgs/{org_id}/projects/{project_id}/secrets/{name}",
    tag = "secrets", request_body = SecretValueIn,
    responses((status = 200, body = SecretOut), (status = 404, body = crate::error::Problem),
        (status = 422, body = crate::error::Problem)))]
pub async fn update_secret(
    State(state): State<AppState>,
    OrgAuth(caller): OrgAuth,
    Path((org_id, project_id, name)): Path<(String, String, String)>,
    JsonBody(body): JsonBody<SecretValueIn>,
) -> Result<Json<SecretOut>, ApiError> {
    let org_id = id(&org_id, "org")?;
    let project_id = id(&project_id, "prj")?;
    let meta = state
        .secrets
        .update(&caller, org_id, project_id, &name, &body.value)
        .await?;
    Ok(Json(meta.into()))
}

#[utoipa::path(delete, path = "/v1/orgs/{org_id}/projects/{project_id}/secrets/{name}",
    tag = "secrets",
    responses((status = 204), (status = 404, body = crate::error::Problem)))]
pub async fn delete_secret(
    State(state): State<AppState>,
    OrgAuth(caller): OrgAuth,
    Path((org_id, project_id, name)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let org_id = id(&org_id, "org")?;
    let project_id = id(&project_id, "prj")?;
    state
        .secrets
        .delete(&caller, org_id, project_id, &name)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/orgs/{org_id}/projects/{project_id}/secrets/{name}/reveal",
    tag = "secrets", request_body = RevealIn,
    responses((status = 200, body = RevealOut), (status = 403, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn reveal(
    State(state): State<AppState>,
    OrgAuth(caller): OrgAuth,
    Path((org_id, project_id, name)): Path<(String, String, String)>,
    JsonBody(body): JsonBody<RevealIn>,
) -> Result<Response, ApiError> {
    let org_id = id(&org_id, "org")?;
    let project_id = id(&project_id, "prj")?;
    let revealed = state
        .secrets
        .reveal(&caller, org_id, project_id, &name, &body.reason)
        .await?;
    let out = RevealOut {
        secret: revealed.meta.into(),
        value: revealed.value.expose_secret().to_owned(),
    };
    Ok(super::no_store(Json(out)))
}
