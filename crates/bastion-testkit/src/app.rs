//! `spawn_app()`: a real Bastion on `127.0.0.1:0` with its own data directory (and database).

use std::net::SocketAddr;

use axum::Router;
use bastion_server::config::{Config, Overrides};
use bastion_server::startup::StartupError;
use figment::providers::Env;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::pg::PgTestDb;

/// A running server. Dropping it stops the server.
pub struct TestApp {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT` (or `https://` with TLS).
    pub base: String,
    pub config: Config,
    pub data_dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), StartupError>>>,
    _pg: Option<PgTestDb>,
}

/// The defaults with the developer's `BASTION_*` environment ignored, in a fresh data dir.
pub fn test_config(data_dir: &std::path::Path) -> Config {
    let overrides = Overrides {
        data_dir: Some(data_dir.to_owned()),
        ..Default::default()
    };
    match Config::load(
        None,
        Some(Env::prefixed("BASTION_TESTKIT_IGNORED_")),
        &overrides,
    ) {
        Ok(mut c) => {
            // Cheap hashing keeps tests fast; the production parameters have their own tests.
            c.auth.argon2_memory_kib = 1024;
            c.auth.argon2_iterations = 1;
            c
        }
        Err(e) => panic!("default configuration must load: {e}"),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Stops the server gracefully and returns how it ended.
    pub async fn stop(mut self) -> Result<(), StartupError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.handle.take() {
            Some(h) => h.await.unwrap_or(Ok(())),
            None => Ok(()),
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Options for [`spawn_app`].
#[derive(Default)]
pub struct Spawn {
    /// Run on a fresh PostgreSQL database (skips, returning `None`, when none is configured).
    pub postgres: bool,
    /// Routes mounted under the full middleware stack (e.g. a panicking handler).
    pub extra: Option<Router>,
    /// The server's clock (default: the system clock).
    pub clock: Option<std::sync::Arc<dyn bastion_core::Clock>>,
}

/// Starts a server with `tweak` applied to the test configuration. `None` only when
/// `postgres` was asked for and PostgreSQL tests are skipped.
pub async fn spawn_app(opts: Spawn, tweak: impl FnOnce(&mut Config)) -> Option<TestApp> {
    let data_dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    let mut config = test_config(data_dir.path());
    let pg = if opts.postgres {
        let db = PgTestDb::create().await?;
        config.database_url = db.url.clone();
        Some(db)
    } else {
        None
    };
    tweak(&mut config);
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => panic!("bind: {e}"),
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => panic!("local_addr: {e}"),
    };
    let scheme = if config.tls.cert.is_empty() {
        "http"
    } else {
        "https"
    };
    let (tx, rx) = oneshot::channel::<()>();
    let cfg = config.clone();
    let handle = tokio::spawn(async move {
        bastion_server::startup::run_app(
            cfg,
            listener,
            async move {
                let _ = rx.await;
            },
            opts.extra,
            opts.clock
                .unwrap_or_else(|| std::sync::Arc::new(bastion_core::SystemClock)),
        )
        .await
    });
    let app = TestApp {
        addr,
        base: format!("{scheme}://{addr}"),
        config,
        data_dir,
        shutdown: Some(tx),
        handle: Some(handle),
        _pg: pg,
    };
    // Start-up (migrations, keys) finishes before the listener answers; wait until it does.
    wait_until_serving(&app).await;
    Some(app)
}

async fn wait_until_serving(app: &TestApp) {
    for _ in 0..500 {
        if app.handle.as_ref().is_some_and(|h| h.is_finished()) {
            panic!("the server stopped during start-up");
        }
        if let Ok(mut s) = tokio::net::TcpStream::connect(app.addr).await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            // The listener accepts before start-up ends; a served request proves readiness.
            if app.base.starts_with("https") {
                return;
            }
            if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                .await
                .is_ok()
            {
                let mut buf = [0u8; 12];
                if s.read_exact(&mut buf).await.is_ok() && buf.starts_with(b"HTTP/1.1 200") {
                    return;
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the server did not start within 5 s");
}
