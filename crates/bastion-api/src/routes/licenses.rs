//! Licensing (SPEC L1–L7). Two audiences:
//! - the app, proved by a license key and its email (no account): activate, validate,
//!   deactivate, list machines, ask for revocation, confirm it from the mailed link, and the
//!   signed revocation list and public keys anyone may fetch;
//! - the org, through `OrgAuth` and the `licenses.*` permissions: products, policies, issuing,
//!   freezing, unfreezing, revoking.
//!
//! Keys, emails and machine identifiers travel in bodies only, never in URLs (access logs).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use bastion_core::licenses::{ActivationRequest, MachineCertificate, PolicyInput};
use bastion_crypto::license::LicensePublicKey;
use bastion_store::{LicenseRow, MachineRow, PolicyRow, ProductRow};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::path_id as id;
use crate::extract::{JsonBody, OrgAuth};
use crate::middleware::ClientIp;
use crate::{ApiError, AppState};

fn rfc3339(ms: i64) -> String {
    bastion_core::clock::rfc3339(ms).unwrap_or_default()
}

fn ip_of(ip: Option<axum::Extension<ClientIp>>) -> String {
    ip.map(|e| e.0.0.to_string()).unwrap_or_default()
}

use super::no_store;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MachineIn {
    /// Stable identifiers of the machine (e.g. OS machine id); canonicalised and stored only
    /// as a keyed hash. 1 to 16, each up to 256 bytes.
    pub components: Vec<String>,
    /// A display name (activation only).
    #[serde(default)]
    pub name: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivateIn {
    #[schema(value_type = String)]
    pub key: SecretString,
    pub email: String,
    pub machine: MachineIn,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LicenseKeyIn {
    #[schema(value_type = String)]
    pub key: SecretString,
    pub email: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeactivateIn {
    #[schema(value_type = String)]
    pub key: SecretString,
    pub email: String,
    pub machine_id: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequestIn {
    #[schema(value_type = String)]
    pub key: SecretString,
    pub email: String,
    /// The machine certificate this machine received at activation.
    pub certificate: String,
    pub machine: MachineIn,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeConfirmIn {
    /// The `token` from the link's fragment (`bml_…`).
    #[schema(value_type = String)]
    pub token: SecretString,
}

/// A machine's signed permission to run offline until `lease_expires_at` (SPEC L4).
#[derive(Serialize, utoipa::ToSchema)]
pub struct CertificateOut {
    pub license_id: String,
    pub machine_id: String,
    /// `BSTM1.…`: verify with the license public keys (docs/licenses.md).
    pub certificate: String,
    pub lease_expires_at: String,
    pub entitlements: Vec<String>,
}

impl From<MachineCertificate> for CertificateOut {
    fn from(c: MachineCertificate) -> Self {
        Self {
            license_id: c.license_id,
            machine_id: c.machine_id,
            certificate: c.certificate,
            lease_expires_at: rfc3339(c.lease_expires_ms),
            entitlements: c.entitlements,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct MachineOut {
    pub id: String,
    pub name: String,
    pub activated_at: String,
    pub last_seen_at: String,
}

impl From<MachineRow> for MachineOut {
    fn from(m: MachineRow) -> Self {
        Self {
            id: m.id,
            name: m.name,
            activated_at: rfc3339(m.activated_ms),
            last_seen_at: rfc3339(m.last_seen_ms),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct MachineListOut {
    pub machines: Vec<MachineOut>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RevocationListOut {
    /// `BSTR1.…`, signed; keep the newest by its `iat`.
    pub list: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PublicKeysOut {
    /// JWKs with `kid` and `alg` (`RS256` or `EdDSA`), oldest first.
    #[schema(value_type = Vec<Object>)]
    pub keys: Vec<LicensePublicKey>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct StatusOut {
    pub status: &'static str,
}

fn activation(
    body_key: SecretString,
    email: String,
    machine: MachineIn,
    ip: String,
) -> ActivationRequest {
    ActivationRequest {
        key: body_key,
        email,
        components: machine.components,
        machine_name: machine.name,
        ip,
    }
}

/// Activates this machine on the license (SPEC L2, L4); the same machine again renews.
#[utoipa::path(post, path = "/v1/licenses/activate", tag = "licenses", request_body = ActivateIn,
    responses((status = 200, body = CertificateOut), (status = 403, body = crate::error::Problem),
        (status = 409, body = crate::error::Problem), (status = 422, body = crate::error::Problem),
        (status = 429, body = crate::error::Problem)))]
pub async fn activate(
    State(state): State<AppState>,
    ip: Option<axum::Extension<ClientIp>>,
    JsonBody(body): JsonBody<ActivateIn>,
) -> Result<Response, ApiError> {
    let req = activation(body.key, body.email, body.machine, ip_of(ip));
    let cert = state.licensing.activate(&req).await?;
    Ok(no_store(Json(CertificateOut::from(cert))))
}

/// Validates an activated machine and renews its certificate.
#[utoipa::path(post, path = "/v1/licenses/validate", tag = "licenses", request_body = ActivateIn,
    responses((status = 200, body = CertificateOut), (status = 403, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem), (status = 429, body = crate::error::Problem)))]
pub async fn validate(
    State(state): State<AppState>,
    ip: Option<axum::Extension<ClientIp>>,
    JsonBody(body): JsonBody<ActivateIn>,
) -> Result<Response, ApiError> {
    let req = activation(body.key, body.email, body.machine, ip_of(ip));
    let cert = state.licensing.validate(&req).await?;
    Ok(no_store(Json(CertificateOut::from(cert))))
}

/// Deactivates one of the license's machines, freeing its seat.
#[utoipa::path(post, path = "/v1/licenses/deactivate", tag = "licenses",
    request_body = DeactivateIn,
    responses((status = 204), (status = 403, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem)))]
pub async fn deactivate(
    State(state): State<AppState>,
    ip: Option<axum::Extension<ClientIp>>,
    JsonBody(body): JsonBody<DeactivateIn>,
) -> Result<StatusCode, ApiError> {
    state
        .licensing
        .deactivate(&body.key, &body.email, &body.machine_id, &ip_of(ip))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The license's machines, for the licensee.
#[utoipa::path(post, path = "/v1/licenses/machines", tag = "licenses",
    request_body = LicenseKeyIn,
    responses((status = 200, body = MachineListOut), (status = 403, body = crate::error::Problem)))]
pub async fn machines(
    State(state): State<AppState>,
    ip: Option<axum::Extension<ClientIp>>,
    JsonBody(body): JsonBody<LicenseKeyIn>,
) -> Result<Json<MachineListOut>, ApiError> {
    let rows = state
        .licensing
        .my_machines(&body.key, &body.email, &ip_of(ip))
        .await?;
    Ok(Json(MachineListOut {
        machines: rows.into_iter().map(MachineOut::from).collect(),
    }))
}

/// Asks to revoke the license from an activated app (SPEC L5): a link to confirm goes to the
/// licensee's email.
#[utoipa::path(post, path = "/v1/licenses/revoke-request", tag = "licenses",
    request_body = RevokeRequestIn,
    responses((status = 202, body = StatusOut), (status = 403, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem)))]
pub async fn revoke_request(
    State(state): State<AppState>,
    ip: Option<axum::Extension<ClientIp>>,
    JsonBody(body): JsonBody<RevokeRequestIn>,
) -> Result<(StatusCode, Json<StatusOut>), ApiError> {
    let req = activation(body.key, body.email, body.machine, ip_of(ip));
    state
        .licensing
        .request_revoke(&req, &body.certificate)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(StatusOut {
            status: "email_sent",
        }),
    ))
}

/// Confirms a revocation with the mailed link (once, before it expires).
#[utoipa::path(post, path = "/v1/licenses/revoke/confirm", tag = "licenses",
    request_body = RevokeConfirmIn,
    responses((status = 200, body = StatusOut), (status = 400, body = crate::error::Problem)))]
pub async fn revoke_confirm(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<RevokeConfirmIn>,
) -> Result<Json<StatusOut>, ApiError> {
    state.licensing.confirm_revoke(&body.token).await?;
    Ok(Json(StatusOut { status: "revoked" }))
}

/// A product's signed list of revoked licenses.
#[utoipa::path(get, path = "/v1/licenses/revocations/{product_id}", tag = "licenses",
    responses((status = 200, body = RevocationListOut), (status = 404, body = crate::error::Problem)))]
pub async fn revocations(
    State(state): State<AppState>,
    Path(product_id): Path<String>,
) -> Result<Response, ApiError> {
    let product_id = id(&product_id, "prd")?;
    let list = state.licensing.revocation_list(product_id).await?;
    Ok(no_store(Json(RevocationListOut { list })))
}

/// Every license public key (to bake into the app).
#[utoipa::path(get, path = "/v1/licenses/public-keys", tag = "licenses",
    responses((status = 200, body = PublicKeysOut)))]
pub async fn public_keys(State(state): State<AppState>) -> Json<PublicKeysOut> {
    Json(PublicKeysOut {
        keys: state.licensing.public_keys(),
    })
}

// --- The org's side ---

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductIn {
    pub name: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ProductOut {
    pub id: String,
    pub name: String,
    pub created_at: String,
}

impl From<ProductRow> for ProductOut {
    fn from(p: ProductRow) -> Self {
        Self {
            id: p.id,
            name: p.name,
            created_at: rfc3339(p.created_ms),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ProductListOut {
    pub products: Vec<ProductOut>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyIn {
    pub name: String,
    /// Machines one license may be active on (1 to 10,000).
    pub max_machines: u32,
    /// Term from issue in days; absent = perpetual.
    pub duration_days: Option<u32>,
    #[serde(default)]
    pub entitlements: Vec<String>,
    /// Offline lease of a machine certificate in days; absent = the configured default.
    pub lease_days: Option<u32>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PolicyOut {
    pub id: String,
    pub product_id: String,
    pub name: String,
    pub max_machines: u32,
    pub duration_days: Option<i64>,
    pub entitlements: Vec<String>,
    pub lease_days: i64,
}

impl From<PolicyRow> for PolicyOut {
    fn from(p: PolicyRow) -> Self {
        Self {
            id: p.id,
            product_id: p.product_id,
            name: p.name,
            max_machines: p.max_machines,
            duration_days: p.duration_ms.map(|d| d / 86_400_000),
            entitlements: p.entitlements,
            lease_days: p.lease_ms / 86_400_000,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PolicyListOut {
    pub policies: Vec<PolicyOut>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueIn {
    pub policy_id: String,
    /// The licensee: the key is bound to it and mailed to it.
    pub email: String,
}

/// A license: never its key (which exists only in the issue answer and the licensee's mail).
#[derive(Serialize, utoipa::ToSchema)]
pub struct LicenseOut {
    pub id: String,
    pub product_id: String,
    pub policy_id: String,
    pub email: String,
    pub entitlements: Vec<String>,
    pub max_machines: u32,
    pub expires_at: Option<String>,
    pub created_at: String,
    pub created_by: String,
    /// `active`, `frozen` or `revoked`.
    pub status: &'static str,
    pub failed_activations: u32,
}

impl From<LicenseRow> for LicenseOut {
    fn from(l: LicenseRow) -> Self {
        let status = l.status();
        Self {
            id: l.id,
            product_id: l.product_id,
            policy_id: l.policy_id,
            email: l.email,
            entitlements: l.entitlements,
            max_machines: l.max_machines,
            expires_at: l.expires_ms.map(rfc3339),
            created_at: rfc3339(l.created_ms),
            created_by: l.created_by,
            status,
            failed_activations: l.failures,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct IssuedOut {
    pub license: LicenseOut,
    /// The license key, shown once (also mailed to the licensee, see `mailed`).
    pub key: String,
    /// Whether the key was mailed: `false` when this org has mailed the address its budget's
    /// worth this hour (`auth.mail_per_requester_per_hour`); hand the key over yourself then.
    pub mailed: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct LicenseListOut {
    pub licenses: Vec<LicenseOut>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct LicenseDetailOut {
    pub license: LicenseOut,
    pub machines: Vec<MachineOut>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ChangedOut {
    /// Whether the call changed anything (false: it was already so).
    pub changed: bool,
    pub license: LicenseOut,
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    pub product_id: Option<String>,
    /// At most this many, newest first (default 100, at most 1000).
    pub limit: Option<u32>,
}

#[utoipa::path(post, path = "/v1/orgs/{org_id}/products", tag = "licenses", request_body = ProductIn,
    responses((status = 201, body = ProductOut), (status = 403, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem)))]
pub async fn create_product(
    State(state): State<AppState>,
    OrgAuth(caller): OrgAuth,
    Path(org_id): Path<String>,
    JsonBody(body): JsonBody<ProductIn>,
) -> Result<(StatusCode, Json<ProductOut>), ApiError> {
    let org_id = id(&org_id, "org")?;
    let row = state
        .licensing
        .create_product(&caller, org_id, &body.name)
        .await?;
    Ok((StatusCode::CREATED, Json(row.into())))
}

#[utoipa::path(get, path = "/v1/orgs/{org_id}/products", tag = "licenses",
    responses((status = 200, body = ProductListOut), (status = 404, body = crate::error::Problem)))]
pub async fn products(
    State(state): State<AppState>,
    OrgAuth(caller): OrgAuth,
    Path(org_id): Path<String>,
) -> Result<Json<ProductListOut>, ApiError> {
    let org_id = id(&org_id, "org")?;
    let rows = state.licensing.products(&caller, org_id).await?;
    Ok(Json(ProductListOut {
        products: rows.into_iter().map(ProductOut::from).collect(),
    }))
}

#[utoipa::path(post, path = "/v1/orgs/{org_id}/products/{product_id}/policies", tag = "licenses",
    request_body = PolicyIn,
    responses((status = 201, body = PolicyOut), (status = 404, body = crate::error::Problem),
        (status = 409, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn create_policy(
    State(state): State<AppState>,
    OrgAuth(caller): OrgAuth,
    Path((org_id, product_id)): Path<(String, String)>,
    JsonBody(body): JsonBody<PolicyIn>,
) -> Result<(StatusCode, Json<PolicyOut>), ApiError> {
    let org_id = id(&org_id, "org")?;
    let product_id = id(&product_id, "prd")?;
    let input = PolicyInput {
        name: body.name,
        max_machines: body.max_machines,
        duration_days: body.duration_days,
        entitlements: body.entitlements,
        lease_days: body.lease_days,
    };
    let row = state
        .licensing
        .create_policy(&caller, org_id, product_id, &input)
        .await?;
    Ok((StatusCode::CREATED, Json(row.into())))
}

#[utoipa::path(get, path = "/v1/orgs/{org_id}/products/{product_id}/policies", tag = "licenses",
    responses((status = 200, body = PolicyListOut), (status = 404, body = crate::error::Problem)))]
pub async fn policies(
    State(state): State<AppState>,
    OrgAuth(caller): OrgAuth,
    Path((org_id, product_id)): Path<(String, String)>,
) -> Result<Json<PolicyListOut>, ApiError> {
    let org_id = id(&org_id, "org")?;
    let product_id = id(&product_id, "prd")?;
    let rows = state
        .licensing
        .policies(&caller, org_id, product_id)
        .await?;
    Ok(Json(PolicyListOut {
        policies: rows.into_iter().map(PolicyOut::from).collect(),
    }))
}

/// Issues a license (service key or Admin; SPEC L2): the key is in this answer, once, and
/// in the licensee's mail.
#[utoipa::path(post, path = "/v1/orgs/{org_id}/licenses", tag = "licenses", request_body = IssueIn,
    responses((status = 201, body = IssuedOut), (status = 403, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn issue(
    State(state): State<AppState>,
    OrgAuth(caller): OrgAuth,
    Path(org_id): Path<String>,
    JsonBody(body): JsonBody<IssueIn>,
) -> Result<Response, ApiError> {
    let org_id = id(&org_id, "org")?;
    let policy_id = id(&body.policy_id, "pol")?;
    let issued = state
        .licensing
        .issue(&caller, org_id, policy_id, &body.email)
        .await?;
    let out = IssuedOut {
        key: issued.key.expose_secret().to_owned(),
        mailed: issued.mailed,
        license: issued.license.into(),
    };
    Ok(no_store((StatusCode::CREATED, Json(out))))
}

#[utoipa::path(get, path = "/v1/orgs/{org_id}/licenses", tag = "licenses", params(ListQuery),
    responses((status = 200, body = LicenseListOut), (status = 404, body = crate::error::Problem)))]
pub async fn licenses(
    State(state): State<AppState>,
    OrgAuth(caller): OrgAuth,
    Path(org_id): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Json<LicenseListOut>, ApiError> {
    let org_id = id(&org_id, "org")?;
    let product = q.product_id.as_deref().map(|p| id(p, "prd")).transpose()?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let rows = state
        .licensing
        .licenses(&caller, org_id, product, limit)
        .await?;
    Ok(Json(LicenseListOut {
        licenses: rows.into_iter().map(LicenseOut::from).collect(),
    }))
}

#[utoipa::path(get, path = "/v1/orgs/{org_id}/licenses/{license_id}", tag = "licenses",
    responses((status = 200, body = LicenseDetailOut), (status = 404, body = crate::error::Problem)))]
pub async fn license(
    State(state): State<AppState>,
    OrgAuth(caller): OrgAuth,
    Path((org_id, license_id)): Path<(String, String)>,
) -> Result<Json<LicenseDetailOut>, ApiError> {
    let org_id = id(&org_id, "org")?;
    let license_id = id(&license_id, "lic")?;
    let d = state.licensing.license(&caller, org_id, license_id).await?;
    Ok(Json(LicenseDetailOut {
        license: d.license.into(),
        machines: d.machines.into_iter().map(MachineOut::from).collect(),
    }))
}

async fn changed(
    state: &AppState,
    caller: &bastion_core::orgs::Caller,
    org_id: &str,
    license_id: &str,
    changed: bool,
) -> Result<Json<ChangedOut>, ApiError> {
    let d = state.licensing.license(caller, org_id, license_id).await?;
    Ok(Json(ChangedOut {
        changed,
        license: d.license.into(),
    }))
}

/// Freezes a license key by hand (`licenses.freeze`).
#[utoipa::path(post, path = "/v1/orgs/{org_id}/licenses/{license_id}/freeze", tag = "licenses",
    responses((status = 200, body = ChangedOut), (status = 403, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem)))]
pub async fn freeze(
    State(state): State<AppState>,
    OrgAuth(caller): OrgAuth,
    Path((org_id, license_id)): Path<(String, String)>,
) -> Result<Json<ChangedOut>, ApiError> {
    let org_id = id(&org_id, "org")?;
    let license_id = id(&license_id, "lic")?;
    let c = state
        .licensing
        .set_frozen(&caller, org_id, license_id, true)
        .await?;
    changed(&state, &caller, org_id, license_id, c).await
}

/// Unfreezes a frozen key in one action (SPEC L7), resetting its failure count; audited.
#[utoipa::path(post, path = "/v1/orgs/{org_id}/licenses/{license_id}/unfreeze", tag = "licenses",
    responses((status = 200, body = ChangedOut), (status = 403, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem)))]
pub async fn unfreeze(
    State(state): State<AppState>,
    OrgAuth(caller): OrgAuth,
    Path((org_id, license_id)): Path<(String, String)>,
) -> Result<Json<ChangedOut>, ApiError> {
    let org_id = id(&org_id, "org")?;
    let license_id = id(&license_id, "lic")?;
    let c = state
        .licensing
        .set_frozen(&caller, org_id, license_id, false)
        .await?;
    changed(&state, &caller, org_id, license_id, c).await
}

/// Revokes a license for good (`licenses.revoke`); it joins the product's revocation list.
#[utoipa::path(post, path = "/v1/orgs/{org_id}/licenses/{license_id}/revoke", tag = "licenses",
    responses((status = 200, body = ChangedOut), (status = 403, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem)))]
pub async fn revoke(
    State(state): State<AppState>,
    OrgAuth(caller): OrgAuth,
    Path((org_id, license_id)): Path<(String, String)>,
) -> Result<Json<ChangedOut>, ApiError> {
    let org_id = id(&org_id, "org")?;
    let license_id = id(&license_id, "lic")?;
    let c = state.licensing.revoke(&caller, org_id, license_id).await?;
    changed(&state, &caller, org_id, license_id, c).await
}

/// Deactivates one machine of a license (e.g. a lost laptop).
#[utoipa::path(delete, path = "/v1/orgs/{org_id}/licenses/{license_id}/machines/{machine_id}",
    tag = "licenses",
    responses((status = 204), (status = 403, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem)))]
pub async fn remove_machine(
    State(state): State<AppState>,
    OrgAuth(caller): OrgAuth,
    Path((org_id, license_id, machine_id)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let org_id = id(&org_id, "org")?;
    let license_id = id(&license_id, "lic")?;
    let machine_id = id(&machine_id, "mch")?;
    state
        .licensing
        .remove_machine(&caller, org_id, license_id, machine_id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
