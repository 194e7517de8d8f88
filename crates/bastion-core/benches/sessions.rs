//! Refresh-token rotation (SPEC A3) on SQLite and PostgreSQL, each beside its same-run
//! baseline: a bare single-row conditional UPDATE by primary key through sqlx on the same
//! database and pool, i.e. the database's own rate for the smallest decisive write.
//!
//! `Sessions::refresh` is a lookup of the presented token, then one transaction (mark it used,
//! extend the session, insert the successor) and an RS256-signed access token; the signature
//! alone is measured too, so the gap to the baseline can be split into crypto and SQL.
//!
//! PostgreSQL runs only when `BASTION_TEST_POSTGRES_URL` is set (a fresh database is created
//! from the migrated template and dropped afterwards).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bastion_core::audit::AuditLog;
use bastion_core::keys::{KeyRing, SharedKeyRing};
use bastion_core::sessions::{AccessClaims, Device, SessionPolicy, Sessions};
use bastion_core::{Clock, SystemClock};
use bastion_crypto::jwt::{JwtAlgorithm, JwtSigningKey};
use bastion_crypto::master::MasterKey;
use bastion_store::{Scope, Store, UserRow};
use bastion_store_postgres::PgStore;
use bastion_store_sqlite::SqliteStore;
use bastion_testkit::pg::PgTestDb;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use secrecy::SecretString;
use tokio::runtime::Runtime;

/// The allocator the `bastion` binary ships with, so the figures match production.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Small samples: two cores, and a whole run should stay well under two minutes.
fn configure(g: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(1));
}

/// Sessions over `store` with a user, and the first refresh token of a session of theirs.
async fn sessions_on(store: Arc<dyn Store>) -> (Sessions, SecretString) {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let keys = SharedKeyRing::new(
        KeyRing::open(
            store.as_ref(),
            &MasterKey::from_bytes([5; 32]),
            clock.as_ref(),
        )
        .await
        .unwrap(),
    );
    let audit = Arc::new(AuditLog::new(
        store.clone(),
        keys.clone(),
        clock.clone(),
        1000,
    ));
    let user = UserRow {
        id: "usr_bench".into(),
        email: "bench@example.com".into(),
        email_verified_ms: Some(1),
        password_hash: None,
        super_admin: false,
        created_ms: 1,
        updated_ms: 1,
    };
    store
        .create_user(&Scope::System("bench"), &user)
        .await
        .unwrap();
    let sessions = Sessions::new(store, keys, audit, clock, SessionPolicy::default());
    let device = Device {
        name: "bench".into(),
        platform: "linux".into(),
        ip: "203.0.113.7".into(),
        user_agent: "bench/1.0".into(),
    };
    let first = sessions.start("usr_bench", &device).await.unwrap();
    (sessions, first.refresh_token)
}

/// `iters` rotations in a row, each presenting the token the previous one returned.
async fn rotate(sessions: &Sessions, token: &mut SecretString, iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        *token = sessions.refresh(token).await.unwrap().refresh_token;
    }
    start.elapsed()
}

/// One conditional update of the baseline row: `v` -> `v + 1`; returns the rows it changed.
type Update<'a> = Box<dyn Fn(i64) -> Pin<Box<dyn Future<Output = u64> + 'a>> + 'a>;

/// The baseline (one autocommit conditional UPDATE by primary key through the store's own
/// pool) and `Sessions::refresh`, on one database.
fn rotation_group(
    c: &mut Criterion,
    rt: &Runtime,
    name: &str,
    store: Arc<dyn Store>,
    update: Update<'_>,
) {
    let (sessions, mut token) = rt.block_on(sessions_on(store));
    let mut g = c.benchmark_group(name);
    configure(&mut g);
    let mut v: i64 = 0;
    g.bench_function("baseline_conditional_update_by_pk", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    assert_eq!(update(v).await, 1);
                    v += 1;
                }
                start.elapsed()
            })
        })
    });
    g.bench_function("sessions_refresh", |b| {
        b.iter_custom(|iters| rt.block_on(rotate(&sessions, &mut token, iters)))
    });
    g.finish();
}

fn sqlite(c: &mut Criterion) {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let store = rt.block_on(async {
        let s = SqliteStore::open_in_dir(dir.path()).await.unwrap();
        s.migrate().await.unwrap();
        Arc::new(s)
    });
    // The baseline's row lives in the same database file and goes through the same pool
    // (WAL, synchronous=NORMAL), so only Bastion's work differs.
    let pool = store.pool().clone();
    rt.block_on(async {
        for sql in [
            "CREATE TABLE bench_rotation (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)",
            "INSERT INTO bench_rotation (id, v) VALUES (1, 0)",
        ] {
            sqlx::query(sql).execute(&pool).await.unwrap();
        }
    });
    let update: Update<'_> = Box::new(|v| {
        let pool = pool.clone();
        Box::pin(async move {
            sqlx::query("UPDATE bench_rotation SET v = ?1 + 1 WHERE id = 1 AND v = ?1")
                .bind(v)
                .execute(&pool)
                .await
                .unwrap()
                .rows_affected()
        })
    });
    rotation_group(c, &rt, "refresh_rotation_sqlite", store, update);
}

fn postgres(c: &mut Criterion) {
    let rt = rt();
    let Some(db) = rt.block_on(PgTestDb::create()) else {
        eprintln!("refresh_rotation_postgres: skipped (set BASTION_TEST_POSTGRES_URL to run it)");
        return;
    };
    let store = rt.block_on(async { Arc::new(PgStore::connect(&db.url, 16).await.unwrap()) });
    // Same database, same pool (as its owner, outside any row-level security), autocommit:
    // one round trip and one commit per update.
    let pool = store.pool().clone();
    rt.block_on(async {
        for sql in [
            "CREATE TABLE bench_rotation (id BIGINT PRIMARY KEY, v BIGINT NOT NULL)",
            "INSERT INTO bench_rotation (id, v) VALUES (1, 0)",
        ] {
            sqlx::query(sql).execute(&pool).await.unwrap();
        }
    });
    let update: Update<'_> = Box::new(|v| {
        let pool = pool.clone();
        Box::pin(async move {
            sqlx::query("UPDATE bench_rotation SET v = $1 + 1 WHERE id = 1 AND v = $1")
                .bind(v)
                .execute(&pool)
                .await
                .unwrap()
                .rows_affected()
        })
    });
    rotation_group(c, &rt, "refresh_rotation_postgres", store, update);
    rt.block_on(pool.close());
    drop(db);
}

/// The access token every rotation signs (RS256, the default), for splitting the gap.
fn access_token_signature(c: &mut Criterion) {
    let key = JwtSigningKey::from_pkcs8(
        JwtAlgorithm::Rs256,
        "tokens-v1",
        &JwtAlgorithm::Rs256.generate_pkcs8().unwrap(),
    )
    .unwrap();
    let now = SystemClock.now_ms() / 1000;
    let claims = AccessClaims {
        iss: "bastion".into(),
        aud: "bastion".into(),
        sub: "usr_0123456789abcdef".into(),
        sid: "ses_0123456789abcdef".into(),
        iat: now,
        nbf: now,
        exp: now + 900,
        jti: "j".repeat(22),
        amr: vec!["pwd".into()],
    };
    let mut g = c.benchmark_group("refresh_rotation_component");
    configure(&mut g);
    g.bench_function("rs256_sign_access_token", |b| {
        b.iter(|| key.sign(&claims).unwrap())
    });
    g.finish();
}

criterion_group!(benches, sqlite, postgres, access_token_signature);
criterion_main!(benches);
