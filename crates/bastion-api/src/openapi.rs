//! The OpenAPI 3.1 document, generated from the handlers' annotations, served at `/openapi.json`.

use axum::Json;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Bastion",
        description = "The security core: accounts, licenses, vault, audit and more."
    ),
    paths(
        crate::routes::health::healthz,
        crate::routes::health::readyz,
        crate::routes::well_known::security_txt,
        crate::routes::well_known::jwks,
        crate::routes::auth::signup,
        crate::routes::auth::login,
        crate::routes::auth::refresh,
        crate::routes::auth::logout,
        crate::routes::auth::verify_email,
        crate::routes::auth::resend_verification,
        crate::routes::auth::forgot_password,
        crate::routes::auth::reset_password,
        crate::routes::auth::me,
        crate::routes::auth::change_password,
        crate::routes::auth::list_sessions,
        crate::routes::auth::revoke_session,
        crate::routes::auth::revoke_sessions,
        crate::routes::orgs::create,
        crate::routes::orgs::list,
        crate::routes::orgs::get,
        crate::routes::orgs::rename,
        crate::routes::orgs::delete,
        crate::routes::orgs::my_permissions,
        crate::routes::orgs::members,
        crate::routes::orgs::change_member,
        crate::routes::orgs::remove_member,
        crate::routes::orgs::invite,
        crate::routes::orgs::invitations,
        crate::routes::orgs::revoke_invitation,
        crate::routes::orgs::accept_invitation,
        crate::routes::orgs::create_api_key,
        crate::routes::orgs::api_keys,
        crate::routes::orgs::revoke_api_key,
        crate::routes::orgs::audit,
        crate::routes::orgs::add_activity,
        crate::routes::orgs::activity,
        crate::routes::secrets::create_project,
        crate::routes::secrets::projects,
        crate::routes::secrets::delete_project,
        crate::routes::secrets::create_secret,
        crate::routes::secrets::secrets,
        crate::routes::secrets::update_secret,
        crate::routes::secrets::delete_secret,
        crate::routes::secrets::reveal,
        crate::routes::licenses::activate,
        crate::routes::licenses::validate,
        crate::routes::licenses::deactivate,
        crate::routes::licenses::machines,
        crate::routes::licenses::revoke_request,
        crate::routes::licenses::revoke_confirm,
        crate::routes::licenses::revocations,
        crate::routes::licenses::public_keys,
        crate::routes::licenses::create_product,
        crate::routes::licenses::products,
        crate::routes::licenses::create_policy,
        crate::routes::licenses::policies,
        crate::routes::licenses::issue,
        crate::routes::licenses::licenses,
        crate::routes::licenses::license,
        crate::routes::licenses::freeze,
        crate::routes::licenses::unfreeze,
        crate::routes::licenses::revoke,
        crate::routes::licenses::remove_machine
    ),
    components(schemas(crate::error::Problem, crate::routes::health::HealthOut))
)]
pub struct ApiDoc;

pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
