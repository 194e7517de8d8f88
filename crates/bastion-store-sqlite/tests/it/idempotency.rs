//! idempotency tests particular to this backend.

use bastion_store::{Begin, IdempotencyStore, Scope};

use crate::fresh;

const IDM: Scope = Scope::System("idempotency");

/// P4: a row holds its whole response or none of it (the in-flight marker is a NULL body), and
/// the fingerprint is 32 bytes: the schema refuses anything in between, whoever writes.
#[tokio::test]
async fn p4_the_schema_refuses_half_a_response() {
    let (store, _dir) = fresh().await;
    let pool = store.pool();
    for stmt in [
        // A status without a body.
        "INSERT INTO idempotency_keys (id, owner, key, request_hash, status, created_ms, expires_ms) \
         VALUES ('idm_1', 'usr_a', 'k', randomblob(32), 200, 1, 2)",
        // A body without its key id.
        "INSERT INTO idempotency_keys (id, owner, key, request_hash, status, headers, body, created_ms, expires_ms) \
         VALUES ('idm_1', 'usr_a', 'k', randomblob(32), 200, '{}', x'00', 1, 2)",
        // A short fingerprint.
        "INSERT INTO idempotency_keys (id, owner, key, request_hash, created_ms, expires_ms) \
         VALUES ('idm_1', 'usr_a', 'k', randomblob(31), 1, 2)",
        // Headers that are not JSON.
        "INSERT INTO idempotency_keys (id, owner, key, request_hash, status, headers, body_key, body, created_ms, expires_ms) \
         VALUES ('idm_1', 'usr_a', 'k', randomblob(32), 200, 'nope', 'idempotency-v1', x'00', 1, 2)",
    ] {
        assert!(
            sqlx::query(stmt).execute(pool).await.is_err(),
            "accepted: {stmt}"
        );
    }
}

/// P4 on SQLite: two stores on one file (the server and the CLI, or two processes) still give
/// one winner, since `begin` takes the write lock before it reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p4_two_stores_on_one_file_have_one_winner() {
    let (store, dir) = fresh().await;
    let other = std::sync::Arc::new(
        bastion_store_sqlite::SqliteStore::open_in_dir(dir.path())
            .await
            .unwrap(),
    );
    let mut tasks = Vec::new();
    for i in 0..40 {
        let s = if i % 2 == 0 {
            store.clone()
        } else {
            other.clone()
        };
        tasks.push(tokio::spawn(async move {
            s.begin(
                &IDM,
                "usr_a",
                "k",
                &[1; 32],
                &format!("idm_{i}"),
                1_000,
                2_000,
            )
            .await
            .unwrap()
        }));
    }
    let mut started = 0;
    for t in tasks {
        match t.await.unwrap() {
            Begin::Started { .. } => started += 1,
            Begin::InFlight => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(started, 1);
}
