//! A fresh, migrated store on either backend, for domain tests and benches.

use std::sync::Arc;

use bastion_store::Store;
use bastion_store_postgres::PgStore;
use bastion_store_sqlite::SqliteStore;

use crate::pg::PgTestDb;

/// A store and what keeps its database alive (a temporary directory or database).
pub struct TestStore {
    pub store: Arc<dyn Store>,
    _sqlite: Option<tempfile::TempDir>,
    _pg: Option<PgTestDb>,
}

/// SQLite in a temporary directory, or a fresh PostgreSQL database (`None` when PostgreSQL
/// tests are not configured). Panics on failure: it is test setup.
pub async fn fresh_store(postgres: bool) -> Option<TestStore> {
    if postgres {
        let db = PgTestDb::create().await?;
        let store = match PgStore::connect(&db.url, 16).await {
            Ok(s) => s,
            Err(e) => panic!("connect to the test database: {e}"),
        };
        return Some(TestStore {
            store: Arc::new(store),
            _sqlite: None,
            _pg: Some(db),
        });
    }
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    let store = match SqliteStore::open_in_dir(dir.path()).await {
        Ok(s) => s,
        Err(e) => panic!("open SQLite: {e}"),
    };
    if let Err(e) = store.migrate().await {
        panic!("migrate SQLite: {e}");
    }
    Some(TestStore {
        store: Arc::new(store),
        _sqlite: Some(dir),
        _pg: None,
    })
}
