//! Audit trail throughput on SQLite, each figure beside its same-run baseline:
//! - append: batches of 100 events through `AuditLog::record_batch` (hash chain + signed
//!   checkpoints) vs. the same rows inserted by the store with a no-op sealer (no hashing);
//! - verify: `audit::verify` over a 1,000,000-event log vs. SHA-256 alone over the same
//!   canonical encodings (the hashing floor).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bastion_core::SystemClock;
use bastion_core::audit::{self, AuditEvent, AuditLog, Category, Outcome};
use bastion_core::keys::{KeyRing, SharedKeyRing};
use bastion_crypto::master::MasterKey;
use bastion_store::{AuditStore, ChainHead, NewAuditEvent, Scope, Store};
use bastion_store_sqlite::SqliteStore;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// The allocator the `bastion` binary ships with, so the figures match production.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH: usize = 100;
const VERIFY_EVENTS: i64 = 1_000_000;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn open(dir: &std::path::Path) -> (Arc<SqliteStore>, Arc<KeyRing>) {
    let store = Arc::new(SqliteStore::open_in_dir(dir).await.unwrap());
    store.migrate().await.unwrap();
    let keys = KeyRing::open(
        store.as_ref(),
        &MasterKey::from_bytes([7; 32]),
        &SystemClock,
    )
    .await
    .unwrap();
    (store, keys)
}

fn event(i: usize) -> AuditEvent {
    AuditEvent::new(Category::Authentication, "login", Outcome::Success)
        .actor(format!("usr_{i:08}"))
        .org("org_0001")
        .details(serde_json::json!({ "ip": "203.0.113.7", "ua": "bench/1.0", "session": i }))
}

fn row(i: usize) -> NewAuditEvent {
    let e = event(i);
    NewAuditEvent {
        ts_ms: 1_700_000_000_000,
        actor: e.actor,
        org_id: e.org_id,
        category: "authentication".into(),
        action: e.action,
        outcome: "success".into(),
        details: e.details.to_string(),
    }
}

fn append(c: &mut Criterion) {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let (store, keys) = rt.block_on(open(dir.path()));
    let log = AuditLog::new(
        store.clone() as Arc<dyn Store>,
        SharedKeyRing::new(keys),
        Arc::new(SystemClock),
        1000,
    );
    let batch: Vec<_> = (0..BATCH).map(event).collect();
    let rows: Vec<_> = (0..BATCH).map(row).collect();
    let mut g = c.benchmark_group("audit_append_sqlite");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("baseline_store_insert_no_hash", |b| {
        b.iter(|| {
            rt.block_on(store.append(&Scope::System("bench"), &rows, &|_, _, _| [0; 32]))
                .unwrap()
        })
    });
    g.bench_function("audit_log_record_batch", |b| {
        b.iter(|| rt.block_on(log.record_batch(&batch)).unwrap())
    });
    g.finish();
}

fn verify(c: &mut Criterion) {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let (store, keys) = rt.block_on(open(dir.path()));
    let log = AuditLog::new(
        store.clone() as Arc<dyn Store>,
        SharedKeyRing::new(keys.clone()),
        Arc::new(SystemClock),
        100_000,
    );
    let batch: Vec<_> = (0..10_000).map(event).collect();
    let start = Instant::now();
    for _ in 0..(VERIFY_EVENTS / 10_000) {
        rt.block_on(log.record_batch(&batch)).unwrap();
    }
    eprintln!("built a {VERIFY_EVENTS}-event log in {:?}", start.elapsed());
    let records = rt
        .block_on(store.events_after(&Scope::System("bench"), 0, 1_000_000))
        .unwrap();
    let pks = keys.audit_public_keys();
    let mut g = c.benchmark_group("audit_verify_sqlite");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(30))
        .throughput(Throughput::Elements(VERIFY_EVENTS as u64));
    g.bench_function("baseline_sha256_of_encodings", |b| {
        b.iter(|| {
            let mut buf = Vec::with_capacity(512);
            let mut prev = ChainHead::GENESIS;
            for r in &records {
                audit::encode_event(&mut buf, &prev.hash, r.seq, &r.event);
                prev = ChainHead {
                    seq: r.seq,
                    hash: bastion_crypto::sha256(&buf),
                };
            }
            prev
        })
    });
    g.bench_function("audit_verify_1m_events", |b| {
        b.iter(|| {
            let r = rt
                .block_on(audit::verify(store.as_ref(), &pks, &[], &mut |_| {}))
                .unwrap();
            assert!(r.ok() && r.events == VERIFY_EVENTS);
        })
    });
    g.finish();
}

criterion_group!(benches, append, verify);
criterion_main!(benches);
