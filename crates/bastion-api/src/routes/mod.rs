//! One module per area of the API.

pub mod auth;
pub mod health;
pub mod orgs;
pub mod well_known;
