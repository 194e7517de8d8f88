//! One module per area of the API.

pub mod health;
pub mod well_known;
