//! Organizations (SPEC R1–R6): membership levels, `resource.action` permissions, and the one
//! authorization function the API uses (the database enforces the same decision again).
//!
//! - `roles`: levels, the permission map, the level-change rules;
//! - `service`: [`Orgs`], its callers and [`Orgs::authorize`]; orgs and members;
//! - `invitations`, `api_keys`, `private`: the rest of the service, one area each.

mod api_keys;
mod invitations;
mod private;
mod roles;
mod service;

pub use api_keys::{IssuedKey, KeyIdentity, is_api_key};
pub use roles::{Level, Permission, PermissionMap, RoleError, check_level_change};
pub use service::{Access, Caller, OrgDeps, OrgError, Orgs};
