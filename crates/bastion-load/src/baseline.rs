//! The reference server: bare axum with Bastion's /healthz body and nothing else, so the ratio
//! measures what Bastion's middleware, routing and runtime set-up cost on top of the framework.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, Result};
use axum::serve::ListenerExt;
use axum::{Json, Router, routing::get};
use serde::Serialize;

#[derive(Serialize)]
struct HealthOut {
    status: &'static str,
}

pub fn run(listen: SocketAddr, port_file: &Path) -> Result<()> {
    // Same runtime shape as Bastion's main: multi-thread, one worker per core.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let port = listener.local_addr()?.port();
        // Write then rename so the driver never reads a half-written file.
        let tmp = port_file.with_extension("tmp");
        std::fs::write(&tmp, port.to_string())?;
        std::fs::rename(&tmp, port_file).context("publishing the port file")?;
        // Bastion's listener sets TCP_NODELAY too; without it the comparison would be skewed.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let app = Router::new().route(
            "/healthz",
            get(|| async { Json(HealthOut { status: "ok" }) }),
        );
        axum::serve(listener, app).await?;
        Ok(())
    })
}
