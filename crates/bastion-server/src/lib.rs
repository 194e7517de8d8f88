//! The Bastion process: loads configuration, opens storage and keys, serves the API (plain or
//! TLS), the redirect and metrics listeners, and runs background jobs until shutdown.

pub mod config;
pub mod jobs;
pub mod listen;
pub mod mail;
pub mod master_key;
pub mod startup;
pub mod storage;
pub mod stripe;
pub mod telemetry;
pub mod tls;

pub use config::Config;
pub use startup::{Bastion, run_with_listener};
