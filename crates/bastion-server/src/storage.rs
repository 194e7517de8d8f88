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
            let s = PgStore::connect(&url, cfg.database_max_connections)
                .await
                .map_err(|e| StartupError::Database(e.to_string()))?;
            s.migrate()
                .await
                .map_err(|e| StartupError::Database(e.to_string()))?;
            Arc::new(s)
        }
    };
    Ok(store)
}
