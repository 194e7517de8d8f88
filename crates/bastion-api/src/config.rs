//! The API's settings, as they appear in `config/default.toml` (sections `[http]`,
//! `[rate_limit]`, `[security_txt]`). Defaults live in that file, not here.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub request_timeout_ms: u64,
    pub body_limit_bytes: usize,
    pub header_read_timeout_ms: u64,
    pub trusted_proxies: Vec<IpNet>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained requests per second per client IP; 0 turns the limiter off.
    pub per_ip_per_second: u32,
    pub burst: u32,
    /// Sustained requests per second per API key (SPEC R6), on top of the per-IP limit;
    /// 0 turns it off.
    pub per_api_key_per_second: u32,
    pub api_key_burst: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SecurityTxtConfig {
    pub contact: Vec<String>,
    pub encryption: String,
    pub policy: String,
    pub preferred_languages: String,
    pub canonical: String,
    pub expires_days: u32,
}
