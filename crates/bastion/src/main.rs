//! The `bastion` binary: parses the command line and hands over. Nothing else lives here.

mod cli;
mod commands;
mod healthcheck;
mod keys;
mod license;

use clap::Parser;

/// mimalloc: allocation-heavy paths (HTTP, SQLite rows crossing threads) run markedly faster
/// than on glibc malloc; measured in docs/BENCHMARKS.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
