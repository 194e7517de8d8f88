//! The `bastion` binary and the audit trail end to end: start-up refusals, file modes,
//! configuration errors, and tamper detection on both databases.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod accounts;
mod audit_tamper;
mod cli;
mod licenses;
mod vault;
