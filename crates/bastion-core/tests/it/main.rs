//! Domain services against a real (SQLite) store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod accounts;
mod keys;
mod sessions;
mod vault;
mod webhooks;
