//! Logging and tracing. Secrets never reach a log: they live in `secrecy` types whose `Debug`
//! is redacted, and no handler logs request bodies.

use tracing_subscriber::EnvFilter;

use crate::config::LogConfig;

/// Installs the global subscriber (once; later calls are ignored, which suits tests).
pub fn init(cfg: &LogConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if cfg.format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
