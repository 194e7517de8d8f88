//! Organizations (SPEC R1–R6): membership levels, `resource.action` permissions, and the one
//! authorization function the API uses (the database enforces the same decision again).

mod roles;

pub use roles::{Level, Permission, PermissionMap, RoleError, check_level_change};
