//! One fresh PostgreSQL database per test, copied from a template migrated once.
//!
//! `BASTION_TEST_POSTGRES_URL` names a server and a database the tests may connect to as a role
//! that can create databases. Unset, PostgreSQL tests are skipped with a notice — unless
//! `BASTION_TEST_REQUIRE_POSTGRES=1` (CI), which turns that into a failure.

use std::str::FromStr;

use anyhow::Context;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};

/// A database that exists for one test and is dropped (forcefully) when this value is.
pub struct PgTestDb {
    pub url: String,
    name: String,
    admin: PgConnectOptions,
}

const TEMPLATE_LOCK: i64 = 0x6261_7374_696f_6e01;

/// The admin connection options, or `None` when PostgreSQL tests should be skipped.
///
/// # Panics
/// When `BASTION_TEST_REQUIRE_POSTGRES=1` and no URL is set: a required test must not skip.
pub fn admin_options() -> Option<PgConnectOptions> {
    match std::env::var("BASTION_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(
            PgConnectOptions::from_str(&url)
                .unwrap_or_else(|e| panic!("BASTION_TEST_POSTGRES_URL: {e}")),
        ),
        _ => {
            assert!(
                std::env::var("BASTION_TEST_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                "BASTION_TEST_REQUIRE_POSTGRES=1 but BASTION_TEST_POSTGRES_URL is not set"
            );
            eprintln!("note: BASTION_TEST_POSTGRES_URL is not set; skipping a PostgreSQL test");
            None
        }
    }
}

fn url_for(admin: &PgConnectOptions, db: &str) -> String {
    let user = admin.get_username();
    let host = admin.get_host();
    let port = admin.get_port();
    if host.starts_with('/') {
        format!("postgres://{user}@localhost:{port}/{db}?host={host}")
    } else {
        format!("postgres://{user}@{host}:{port}/{db}")
    }
}

impl PgTestDb {
    /// A fresh, migrated, empty database, or `None` when PostgreSQL tests are skipped.
    pub async fn create() -> Option<Self> {
        let admin = admin_options()?;
        match Self::create_with(admin).await {
            Ok(db) => Some(db),
            Err(e) => panic!("could not create a PostgreSQL test database: {e:#}"),
        }
    }

    async fn create_with(admin: PgConnectOptions) -> anyhow::Result<Self> {
        let template = format!(
            "bastion_tpl_{}",
            bastion_store_postgres::migrations_fingerprint()
        );
        let mut conn = admin
            .connect()
            .await
            .context("connecting as the test admin")?;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(TEMPLATE_LOCK)
            .execute(&mut conn)
            .await?;
        let made = ensure_template(&admin, &mut conn, &template).await;
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(TEMPLATE_LOCK)
            .execute(&mut conn)
            .await?;
        made?;
        let mut rnd = [0u8; 8];
        getrandom_bytes(&mut rnd);
        let name = format!("bastion_test_{}", hex::encode(rnd));
        // Identifiers cannot be bound as parameters; both names are generated here from [a-z0-9_].
        let create = format!("CREATE DATABASE {name} TEMPLATE {template}");
        let mut tries = 0;
        // Concurrent copies of one template can collide for a moment; retry briefly.
        while let Err(e) = sqlx::query(&create).execute(&mut conn).await {
            if tries >= 100 || !e.to_string().contains("being accessed by other users") {
                return Err(e.into());
            }
            tries += 1;
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        conn.close().await?;
        Ok(Self {
            url: url_for(&admin, &name),
            name,
            admin,
        })
    }

    /// Connects as the admin (owner) to this test's database: the "direct connection" of attacks.
    pub async fn admin_connection(&self) -> anyhow::Result<PgConnection> {
        Ok(self.admin.clone().database(&self.name).connect().await?)
    }
}

async fn ensure_template(
    admin: &PgConnectOptions,
    conn: &mut PgConnection,
    template: &str,
) -> anyhow::Result<()> {
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(template)
        .fetch_optional(&mut *conn)
        .await?;
    if exists.is_some() {
        return Ok(());
    }
    // Templates of older migration sets are dead weight once the migrations change.
    let stale: Vec<String> = sqlx::query_scalar(
        "SELECT datname FROM pg_database WHERE datname LIKE 'bastion\\_tpl\\_%' AND datname <> $1",
    )
    .bind(template)
    .fetch_all(&mut *conn)
    .await?;
    for name in stale
        .iter()
        .filter(|n| n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
    {
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut *conn)
            .await?;
    }
    let building = format!("{template}_building");
    sqlx::query(&format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)"))
        .execute(&mut *conn)
        .await?;
    sqlx::query(&format!("CREATE DATABASE {building}"))
        .execute(&mut *conn)
        .await?;
    let store = bastion_store_postgres::PgStore::connect(&url_for(admin, &building), 2).await?;
    store.migrate().await?;
    store.pool().close().await;
    // Renamed only once complete, so a failed migration never leaves a half-built template.
    // Closed connections linger briefly on the server side, so retry while they exit.
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()")
        .bind(&building)
        .execute(&mut *conn)
        .await?;
    let rename = format!("ALTER DATABASE {building} RENAME TO {template}");
    let mut tries = 0;
    loop {
        match sqlx::query(&rename).execute(&mut *conn).await {
            Ok(_) => return Ok(()),
            Err(e) if tries < 100 && e.to_string().contains("being accessed by other users") => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn getrandom_bytes(buf: &mut [u8]) {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    // Test database names only need to be unique, not secret.
    for chunk in buf.chunks_mut(8) {
        let mut h = RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        h.write_u32(std::process::id());
        let v = h.finish().to_be_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

impl Drop for PgTestDb {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let name = self.name.clone();
        // Drop runs outside async context guarantees, so use a private runtime on its own thread.
        let joined = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let mut conn = admin.connect().await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await?;
                conn.close().await?;
                anyhow::Ok(())
            })
        })
        .join();
        if !matches!(joined, Ok(Ok(()))) {
            eprintln!("warning: could not drop a PostgreSQL test database");
        }
    }
}
