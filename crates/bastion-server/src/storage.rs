//! Opens the backend named by the database URL's scheme.

use std::sync::Arc;

use bastion_store::Store;
use bastion_store_postgres::PgStore;
use bastion_store_sqlite::SqliteStore;

use crate::config::{Config, DatabaseUrl};
use crate::startup::StartupError;

/// Connects and applies pending migrations.
pub async fn open(cfg: &Config) -> Result<Arc<dyn Store>, StartupError> {
    let db = cfg
        .database()
        .map_err(|e| StartupError::Config(e.to_string()))?;
    let store: Arc<dyn Store> = match db {
        DatabaseUrl::Sqlite(url) => {
            let s = SqliteStore::open(&url)
                .await
                .map_err(|e| StartupError::Database(e.to_string()))?;
            s.migrate()
                .await
                .map_err(|e| StartupError::Database(e.to_string()))?;
            Arc::new(s)
        }
        DatabaseUrl::Postgres(url) => {
            let db = |e: bastion_store::StoreError| StartupError::Database(e.to_string());
            let s = PgStore::connect(&url, cfg.database_max_connections)
                .await
                .map_err(db)?;
            if cfg.database_migrate_url.is_empty() {
                s.migrate().await.map_err(db)?;
            } else {
                // The owner migrates and hands over the scope key; requests never use it.
                let owner = PgStore::connect(&cfg.database_migrate_url, 1)
                    .await
                    .map_err(db)?;
                owner.migrate().await.map_err(db)?;
                s.adopt_scope_key(&owner).map_err(db)?;
                owner.close().await;
            }
            if s.is_owner_connection() {
                tracing::warn!(
                    "database_url connects as the schema owner: leaked credentials could read                      the scope key and bypass row-level security; set database_migrate_url and                      serve through a runtime role (docs/tenancy.md)"
                );
            }
            Arc::new(s)
        }
    };
    Ok(store)
}
