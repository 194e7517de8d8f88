//! The hardening stack every response passes through (see `router::app` for the order).

pub mod client_ip;
pub mod headers;
pub mod idempotency;
pub mod problem;
pub mod rate_limit;
pub mod timeout;

pub use client_ip::ClientIp;
