//! Organizations, members, invitations, API keys and the org's audit trail (SPEC R1–R6), and
//! the caller's private activity (R5). Every org route answers 404 to a non-member, exactly as
//! for an org that does not exist.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use bastion_core::orgs::{Caller, Level, OrgError};
use bastion_store::{ApiKeyRow, InvitationRow, KeyKind, MemberRow, OrgRow};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::path_id as id;
use crate::extract::{Auth, JsonBody, OrgAuth};
use crate::{ApiError, AppState};

/// A level as a name (`"admin"`) or a number (`80`).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum LevelIn {
    Name(String),
    Number(i64),
}

impl LevelIn {
    fn parse(&self) -> Result<Level, ApiError> {
        let level = match self {
            Self::Name(s) => Level::parse(s),
            Self::Number(n) => Level::from_value(*n),
        };
        level.ok_or_else(|| ApiError::Invalid {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid_level",
            detail: "level must be viewer, learner, user, manager, admin or super_admin (or 20, 30, 40, 60, 80, 100)".into(),
        })
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NameIn {
    pub name: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct OrgOut {
    pub id: String,
    pub name: String,
    pub created_ms: i64,
    /// The caller's level here (`null` for a publishable key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<&'static str>,
}

impl OrgOut {
    fn new(o: OrgRow, level: Option<Level>) -> Self {
        Self {
            id: o.id,
            name: o.name,
            created_ms: o.created_ms,
            level: level.map(Level::name),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct OrgListOut {
    pub orgs: Vec<OrgOut>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PermissionsOut {
    /// `null` for a publishable key.
    pub level: Option<&'static str>,
    pub permissions: Vec<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct MemberOut {
    pub org_id: String,
    pub user_id: String,
    pub email: String,
    pub level: &'static str,
    pub since_ms: i64,
}

impl From<MemberRow> for MemberOut {
    fn from(m: MemberRow) -> Self {
        Self {
            level: Level::from_value(i64::from(m.level)).map_or("unknown", Level::name),
            org_id: m.org_id,
            user_id: m.user_id,
            email: m.email,
            since_ms: m.created_ms,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct MemberListOut {
    pub members: Vec<MemberOut>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LevelChangeIn {
    pub level: LevelIn,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteIn {
    pub email: String,
    pub level: LevelIn,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct InvitationOut {
    pub id: String,
    pub email: String,
    pub level: &'static str,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub accepted: bool,
}

impl From<InvitationRow> for InvitationOut {
    fn from(i: InvitationRow) -> Self {
        Self {
            level: Level::from_value(i64::from(i.level)).map_or("unknown", Level::name),
            id: i.id,
            email: i.email,
            created_ms: i.created_ms,
            expires_ms: i.expires_ms,
            accepted: i.accepted_ms.is_some(),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct InvitationListOut {
    pub invitations: Vec<InvitationOut>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptIn {
    #[schema(value_type = String, format = Password)]
    pub token: SecretString,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyIn {
    pub name: String,
    /// `service` (server-side, full org access) or `publishable` (reads only).
    pub kind: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ApiKeyOut {
    pub id: String,
    pub name: String,
    pub kind: &'static str,
    /// The key's first characters, to tell keys apart.
    pub hint: String,
    pub created_ms: i64,
    pub last_used_ms: Option<i64>,
    pub revoked: bool,
}

impl From<ApiKeyRow> for ApiKeyOut {
    fn from(k: ApiKeyRow) -> Self {
        Self {
            id: k.id,
            name: k.name,
            kind: k.kind.as_str(),
            hint: k.hint,
            created_ms: k.created_ms,
            last_used_ms: k.last_used_ms,
            revoked: k.revoked_ms.is_some(),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct IssuedKeyOut {
    #[serde(flatten)]
    pub key: ApiKeyOut,
    /// The key itself: shown this once, stored only as a hash.
    pub secret: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ApiKeyListOut {
    pub api_keys: Vec<ApiKeyOut>,
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct DeleteQuery {
    /// The organization's exact name, to confirm.
    pub confirm: Option<String>,
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct PageQuery {
    /// Only events before this sequence number (the next page).
    pub before: Option<i64>,
    pub limit: Option<u32>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditEventOut {
    pub seq: i64,
    pub ts_ms: i64,
    pub actor: Option<String>,
    pub category: String,
    pub action: String,
    pub outcome: String,
    /// JSON text, as recorded.
    pub details: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditListOut {
    pub events: Vec<AuditEventOut>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivityIn {
    pub kind: String,
    /// Any JSON value, stored as sent (at most 16 KiB).
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    /// An org of the caller's to tag the row with.
    pub org_id: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ActivityOut {
    pub id: String,
    pub org_id: Option<String>,
    pub ts_ms: i64,
    pub kind: String,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ActivityListOut {
    pub activity: Vec<ActivityOut>,
}

/// Creates an organization with the caller as its Super Admin.
#[utoipa::path(post, path = "/v1/orgs", tag = "orgs", request_body = NameIn,
    responses((status = 201, body = OrgOut), (status = 422, body = crate::error::Problem)))]
pub async fn create(
    State(state): State<AppState>,
    OrgAuth(caller): OrgAuth,
    JsonBody(body): JsonBody<NameIn>,
) -> Result<(StatusCode, Json<OrgOut>), ApiError> {
    let org = state.orgs.create(&caller, &body.name).await?;
    Ok((
        StatusCode::CREATED,
        Json(OrgOut::new(org, Some(Level::SuperAdmin))),
    ))
}

/// The caller's organizations and level in each.
#[utoipa::path(get, path = "/v1/orgs", tag = "orgs", responses((status = 200, body = OrgListOut)))]
pub async fn list(
    State(state): State<AppState>,
    OrgAuth(caller): OrgAuth,
) -> Result<Json<OrgListOut>, ApiError> {
    let orgs = state.orgs.list_mine(&caller).await?;
    Ok(Json(OrgListOut {
        orgs: orgs.into_iter().map(|(o, l)| OrgOut::new(o, l)).collect(),
    }))
}

#[utoipa::path(get, path = "/v1/orgs/{org_id}", tag = "orgs",
    responses((status = 200, body = OrgOut), (status = 404, body = crate::error::Problem)))]
pub async fn get(
    State(state): State<AppState>,
    OrgAuth(caller): OrgAuth,
    Path(org_id): Path<String>,
) -> Result<Json<OrgOut>, ApiError> {
    let org_id = id(&org_id, "org")?;
    let (org, level) = state.orgs.get(&caller, org_id).await?;
    Ok(Json(OrgOut::new(org, level)))
}

#[utoipa::path(patch, path = "/v1/orgs/{org_id}", tag = "orgs", request_body = NameIn,
    responses((status = 200, body = OrgOut), (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem)))]
pub async fn rename(
    State(state): State<AppState>,
    OrgAuth(caller): OrgAuth,
    Path(org_id): Path<String>,
    JsonBody(body): JsonBody<NameIn>,
) -> Result<Json<OrgOut>, ApiError> {
    let org_id = id(&org_id, "org")?;
    let (org, level) = state.orgs.rename(&caller, org_id, &body.name).await?;
    Ok(Json(OrgOut::new(org, level)))
}

/// Deletes the organization and everything it owns. `?confirm=` must repeat its exact name.
#[utoipa::path(delete, path = "/v1/orgs/{org_id}", tag = "orgs", params(DeleteQuery),
    responses((status = 204), (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn delete(
    State(state): State<AppState>,
    OrgAuth(caller): OrgAuth,
    Path(org_id): Path<String>,
    Query(q): Query<DeleteQuery>,
) -> Result<StatusCode, ApiError> {
    let org_id = id(&org_id, "org")?;
    let confirm = q.confirm.unwrap_or_default();
    state.orgs.delete(&caller, org_id, &confirm).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's effective permissions in the org.
#[utoipa::path(get, path = "/v1/orgs/{org_id}/me/permissions", tag = "orgs",
    responses((status = 200, body = PermissionsOut), (status = 404, body = crate::error::Problem)))]
pub async fn my_permissions(
    State(state): State<AppState>,
    OrgAuth(caller): OrgAuth,
    Path(org_id): Path<String>,
) -> Result<Json<PermissionsOut>, ApiError> {
    let org_id = id(&org_id, "org")?;
    let (level, permissions) = state.orgs.my_permissions(&caller, org_id).await?;
    Ok(Json(PermissionsOut {
        level: level.map(Level::name),
        permissions,
    }))
}

#[utoipa::path(get, path = "/v1/orgs/{org_id}/members", tag = "orgs",
    responses((status = 200, body = MemberListOut), (status = 404, body = crate::error::Problem)))]
pub async fn members(
    State(state): State<AppState>,
    OrgAuth(caller): OrgAuth,
    Path(org_id): Path<String>,
) -> Result<Json<MemberListOut>, ApiError> {
    let org_id = id(&org_id, "org")?;
    let members = state.orgs.members(&caller, org_id).await?;
    Ok(Json(MemberListOut {
        members: members.into_iter().map(MemberOut::from).collect(),
    }))
}

/// Changes a member's level: only below the caller's own (Super Admins excepted), never the
/// caller's own, and never the last Super Admin's.
#[utoipa::path(patch, path = "/v1/orgs/{org_id}/members/{user_id}", tag = "orgs", request_body = LevelChangeIn,
    responses((status = 200, body = MemberOut), (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem)))]
pub async fn change_member(
    State(state): State<AppState>,
    OrgAuth(caller): OrgAuth,
    Path((org_id, user_id)): Path<(String, String)>,
    JsonBody(body): JsonBody<LevelChangeIn>,
) -> Result<Json<MemberOut>, ApiError> {
    let org_id = id(&org_id, "org")?;
    let user_id = id(&user_id, "usr")?;
    let level = body.level.parse()?;
    let m = state
        .orgs
        .change_level(&caller, org_id, user_id, level)
        .await?;
    Ok(Json(m.into()))
}

/// Removes a member; a member removing themself leaves.
#[utoipa::path(delete, path = "/v1/orgs/{org_id}/members/{user_id}", tag = "orgs",
    responses((status = 204), (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem)))]
pub async fn remove_member(
    State(state): State<AppState>,
    OrgAuth(caller): OrgAuth,
    Path((org_id, user_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let org_id = id(&org_id, "org")?;
    let user_id = id(&user_id, "usr")?;
    state.orgs.remove_member(&caller, org_id, user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Invites an address at a level below the caller's own; the link goes by email.
#[utoipa::path(post, path = "/v1/orgs/{org_id}/invitations", tag = "orgs", request_body = InviteIn,
    responses((status = 201, body = InvitationOut), (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem)))]
pub async fn invite(
    State(state): State<AppState>,
    OrgAuth(caller): OrgAuth,
    Path(org_id): Path<String>,
    JsonBody(body): JsonBody<InviteIn>,
) -> Result<(StatusCode, Json<InvitationOut>), ApiError> {
    let org_id = id(&org_id, "org")?;
    let level = body.level.parse()?;
    let inv = state
        .orgs
        .invite(&caller, org_id, &body.email, level)
        .await?;
    Ok((StatusCode::CREATED, Json(inv.into())))
}

#[utoipa::path(get, path = "/v1/orgs/{org_id}/invitations", tag = "orgs",
    responses((status = 200, body = InvitationListOut), (status = 404, body = crate::error::Problem)))]
pub async fn invitations(
    State(state): State<AppState>,
    OrgAuth(caller): OrgAuth,
    Path(org_id): Path<String>,
) -> Result<Json<InvitationListOut>, ApiError> {
    let org_id = id(&org_id, "org")?;
    let list = state.orgs.invitations(&caller, org_id).await?;
    Ok(Json(InvitationListOut {
        invitations: list.into_iter().map(InvitationOut::from).collect(),
    }))
}

#[utoipa::path(delete, path = "/v1/orgs/{org_id}/invitations/{invitation_id}", tag = "orgs",
    responses((status = 204), (status = 404, body = crate::error::Problem)))]
pub async fn revoke_invitation(
    State(state): State<AppState>,
    OrgAuth(caller): OrgAuth,
    Path((org_id, inv_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let org_id = id(&org_id, "org")?;
    let inv_id = id(&inv_id, "inv")?;
    state
        .orgs
        .revoke_invitation(&caller, org_id, inv_id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Joins the org an invitation link is for; the caller must hold the invited address.
#[utoipa::path(post, path = "/v1/invitations/accept", tag = "orgs", request_body = AcceptIn,
    responses((status = 200, body = MemberOut), (status = 400, body = crate::error::Problem), (status = 403, body = crate::error::Problem), (status = 409, body = crate::error::Problem)))]
pub async fn accept_invitation(
    State(state): State<AppState>,
    Auth(principal): Auth,
    JsonBody(body): JsonBody<AcceptIn>,
) -> Result<Json<MemberOut>, ApiError> {
    let caller = Caller::user(&principal.user_id);
    let m = state.orgs.accept_invitation(&caller, &body.token).await?;
    Ok(Json(m.into()))
}

/// Creates an API key; its secret is in this answer and nowhere else, ever.
#[utoipa::path(post, path = "/v1/orgs/{org_id}/api-keys", tag = "orgs", request_body = ApiKeyIn,
    responses((status = 201, body = IssuedKeyOut), (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem)))]
pub async fn create_api_key(
    State(state): State<AppState>,
    OrgAuth(caller): OrgAuth,
    Path(org_id): Path<String>,
    JsonBody(body): JsonBody<ApiKeyIn>,
) -> Result<axum::response::Response, ApiError> {
    let org_id = id(&org_id, "org")?;
    let kind = KeyKind::parse(&body.kind).ok_or_else(|| ApiError::Invalid {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        code: "invalid_key_kind",
        detail: "kind must be \"service\" or \"publishable\"".into(),
    })?;
    let issued = state
        .orgs
        .create_api_key(&caller, org_id, kind, &body.name)
        .await?;
    Ok(super::no_store((
        StatusCode::CREATED,
        Json(IssuedKeyOut {
            secret: issued.key.expose_secret().to_owned(),
            key: issued.row.into(),
        }),
    )))
}

#[utoipa::path(get, path = "/v1/orgs/{org_id}/api-keys", tag = "orgs",
    responses((status = 200, body = ApiKeyListOut), (status = 404, body = crate::error::Problem)))]
pub async fn api_keys(
    State(state): State<AppState>,
    OrgAuth(caller): OrgAuth,
    Path(org_id): Path<String>,
) -> Result<Json<ApiKeyListOut>, ApiError> {
    let org_id = id(&org_id, "org")?;
    let keys = state.orgs.api_keys(&caller, org_id).await?;
    Ok(Json(ApiKeyListOut {
        api_keys: keys.into_iter().map(ApiKeyOut::from).collect(),
    }))
}

#[utoipa::path(delete, path = "/v1/orgs/{org_id}/api-keys/{key_id}", tag = "orgs",
    responses((status = 204), (status = 404, body = crate::error::Problem)))]
pub async fn revoke_api_key(
    State(state): State<AppState>,
    OrgAuth(caller): OrgAuth,
    Path((org_id, key_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let org_id = id(&org_id, "org")?;
    let key_id = id(&key_id, "key")?;
    state.orgs.revoke_api_key(&caller, org_id, key_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The org's audit trail, newest first (`audit.read`).
#[utoipa::path(get, path = "/v1/orgs/{org_id}/audit", tag = "orgs", params(PageQuery),
    responses((status = 200, body = AuditListOut), (status = 404, body = crate::error::Problem)))]
pub async fn audit(
    State(state): State<AppState>,
    OrgAuth(caller): OrgAuth,
    Path(org_id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Json<AuditListOut>, ApiError> {
    let org_id = id(&org_id, "org")?;
    let events = state
        .orgs
        .audit_events(&caller, org_id, q.before, q.limit.unwrap_or(100))
        .await?;
    Ok(Json(AuditListOut {
        events: events
            .into_iter()
            .map(|r| AuditEventOut {
                seq: r.seq,
                ts_ms: r.event.ts_ms,
                actor: r.event.actor,
                category: r.event.category,
                action: r.event.action,
                outcome: r.event.outcome,
                details: r.event.details,
            })
            .collect(),
    }))
}

/// Records a row of the caller's private activity (R5): nobody else reads it, whatever their
/// level in any org.
#[utoipa::path(post, path = "/v1/me/activity", tag = "orgs", request_body = ActivityIn,
    responses((status = 201, body = ActivityOut), (status = 422, body = crate::error::Problem)))]
pub async fn add_activity(
    State(state): State<AppState>,
    Auth(principal): Auth,
    JsonBody(body): JsonBody<ActivityIn>,
) -> Result<(StatusCode, Json<ActivityOut>), ApiError> {
    let caller = Caller::user(&principal.user_id);
    let org_id = body.org_id.as_deref().map(|o| id(o, "org")).transpose()?;
    let data = body.data.to_string();
    let row = state
        .orgs
        .add_activity(&caller, org_id, &body.kind, &data)
        .await?;
    Ok((StatusCode::CREATED, Json(activity_out(row)?)))
}

#[utoipa::path(get, path = "/v1/me/activity", tag = "orgs", params(PageQuery),
    responses((status = 200, body = ActivityListOut)))]
pub async fn activity(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Query(q): Query<PageQuery>,
) -> Result<Json<ActivityListOut>, ApiError> {
    let caller = Caller::user(&principal.user_id);
    let rows = state.orgs.activity(&caller, q.limit.unwrap_or(100)).await?;
    Ok(Json(ActivityListOut {
        activity: rows
            .into_iter()
            .map(activity_out)
            .collect::<Result<_, _>>()?,
    }))
}

fn activity_out(r: bastion_store::ActivityRow) -> Result<ActivityOut, ApiError> {
    let data = serde_json::from_str(&r.data).map_err(|_| {
        ApiError::from(OrgError::Store(bastion_store::StoreError::Corrupt(
            "activity data".into(),
        )))
    })?;
    Ok(ActivityOut {
        id: r.id,
        org_id: r.org_id,
        ts_ms: r.ts_ms,
        kind: r.kind,
        data,
    })
}
