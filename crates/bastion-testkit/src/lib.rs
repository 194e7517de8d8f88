//! Test support shared by every crate's integration tests.

pub mod app;
pub mod mail;
pub mod pg;
pub mod smtp;
pub mod stores;
pub mod stripe;

pub use app::{TestApp, spawn_app, test_config};
