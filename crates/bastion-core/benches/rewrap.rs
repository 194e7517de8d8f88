//! Rewrap throughput (SPEC S3): `Vault::rewrap` over secrets sealed by an older key, on SQLite
//! and (when `BASTION_TEST_POSTGRES_URL` is set) PostgreSQL, beside its same-run baseline:
//! the store-only pass over the same rows (page them, write each envelope back under a new key
//! id with compare-and-swap) without any cryptography, which is the floor a rewrap pays.
//!
//! `cargo bench -p bastion-core --bench rewrap` (ROWS and BATCH from the environment,
//! default 20,000 rows in batches of 500).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bastion_core::clock::ManualClock;
use bastion_core::keys::{KeyRing, KeyRingOptions, SharedKeyRing};
use bastion_core::vault::{Field, Vault};
use bastion_crypto::keyring::Purpose;
use bastion_crypto::master::MasterKey;
use bastion_store::conformance::{in_org, org_with, permission_rows, project_row};
use bastion_store::{Rewrapped, Scope, SealedColumn, SecretRow, Store};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SYS: Scope = Scope::System("bench");
const ORG: &str = "org_00000000000000000000000000000001";
const PRJ: &str = "prj_00000000000000000000000000000001";
const OWNER: &str = "usr_00000000000000000000000000000001";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `rows` secrets sealed by the vault under `secrets-v1`.
async fn seed(store: &Arc<dyn Store>, vault: &Vault, rows: usize) {
    store
        .sync_permissions(&SYS, &permission_rows())
        .await
        .unwrap();
    org_with(store.as_ref(), ORG, &[(OWNER, 100)]).await;
    let me = in_org(OWNER, ORG);
    store
        .create_project(&me, &project_row(PRJ, ORG, "bench"))
        .await
        .unwrap();
    for i in 0..rows {
        let id = format!("sec_{i:032x}");
        let sealed = vault
            .seal(
                &Field::of(SealedColumn::SecretValue, &id),
                format!("value-{i:0>200}").as_bytes(),
            )
            .await
            .unwrap();
        store
            .insert_secret(
                &me,
                &SecretRow {
                    id,
                    org_id: ORG.into(),
                    project_id: PRJ.into(),
                    name: format!("S_{i}"),
                    value_key: sealed.key_id,
                    value: sealed.envelope,
                    version: 1,
                    created_ms: 1,
                    updated_ms: 1,
                    updated_by: OWNER.into(),
                },
            )
            .await
            .unwrap();
    }
}

/// The baseline: the same paging and compare-and-swap writes, no decryption or encryption.
async fn store_only_pass(store: &Arc<dyn Store>, tag: &str, batch: u32) -> (u64, Duration) {
    let start = Instant::now();
    let (mut after, mut done) = (None::<String>, 0u64);
    loop {
        let page = store
            .sealed_batch(
                &SYS,
                SealedColumn::SecretValue,
                tag,
                after.as_deref(),
                batch,
            )
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.row_id.clone());
        let out: Vec<Rewrapped> = page
            .into_iter()
            .map(|r| Rewrapped {
                row_id: r.row_id,
                new: r.envelope.clone(),
                old: r.envelope,
                key_id: tag.to_owned(),
            })
            .collect();
        done += store
            .replace_sealed(&SYS, SealedColumn::SecretValue, &out)
            .await
            .unwrap();
    }
    (done, start.elapsed())
}

async fn run(backend: &str, store: Arc<dyn Store>, rows: usize, batch: u32) {
    let master = MasterKey::from_bytes([1; 32]);
    let clock = ManualClock::new(1_700_000_000_000);
    let ring = SharedKeyRing::new(
        KeyRing::open(store.as_ref(), &master, &clock)
            .await
            .unwrap(),
    );
    let vault = Vault::new(ring.clone(), store.clone());
    seed(&store, &vault, rows).await;

    // Baseline: every row rewritten as-is under a tag no key uses (the envelopes still open).
    let (base_rows, base_t) = store_only_pass(&store, "baseline-pass", batch).await;
    KeyRing::rotate(
        store.as_ref(),
        &master,
        &clock,
        Purpose::Secrets,
        &KeyRingOptions::default(),
    )
    .await
    .unwrap();
    ring.replace(
        KeyRing::open(store.as_ref(), &master, &clock)
            .await
            .unwrap(),
    );
    let start = Instant::now();
    let reports = vault
        .rewrap(Some(Purpose::Secrets), batch, Duration::ZERO, &mut |_| {})
        .await
        .unwrap();
    let t = start.elapsed();
    let done = reports[0].rewrapped;
    assert_eq!(done, rows as u64);
    assert!(reports[0].failed.is_empty());
    let per_min = |n: u64, d: Duration| n as f64 * 60.0 / d.as_secs_f64();
    println!(
        "{backend:<10} rewrap {:>9.0} rows/min ({rows} rows, batch {batch}, {:.2} s); \
         store-only baseline {:>9.0} rows/min; rewrap = {:.1} % of the baseline",
        per_min(done, t),
        t.as_secs_f64(),
        per_min(base_rows, base_t),
        100.0 * per_min(done, t) / per_min(base_rows, base_t),
    );
}

fn main() {
    let rows = env_or("ROWS", 20_000);
    let batch = u32::try_from(env_or("BATCH", 500)).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let sqlite = bastion_testkit::stores::fresh_store(false).await.unwrap();
        run("sqlite", sqlite.store.clone(), rows, batch).await;
        drop(sqlite);
        match bastion_testkit::stores::fresh_store(true).await {
            Some(pg) => run("postgresql", pg.store.clone(), rows, batch).await,
            None => println!("postgresql skipped: BASTION_TEST_POSTGRES_URL is not set"),
        }
    });
}
