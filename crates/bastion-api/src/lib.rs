//! Bastion's HTTP API. Handlers are thin: parse into domain types, call a `bastion-core`
//! service, answer with a DTO or a problem+json error.

pub mod config;
pub mod error;
pub mod extract;
pub mod middleware;
pub mod openapi;
pub mod router;
pub mod routes;
pub mod state;

pub use config::{HttpConfig, RateLimitConfig, SecurityTxtConfig};
pub use error::ApiError;
pub use router::{AppOptions, app};
pub use state::AppState;
