//! The vault's seal + open of a 256-byte secret (SPEC S1) beside its same-run baseline: raw
//! aws-lc-rs AES-256-GCM on the same data, paying what any correct caller pays (a fresh random
//! nonce, a ciphertext buffer that is kept, a plaintext buffer for the decryption, an AAD of
//! the same length, built once). The vault pays on top: the key look-up, the encryption
//! budget, building the row-bound AAD per call, the envelope header, and zeroizing the
//! plaintext it returns. Criterion measures both; then an
//! interleaved run alternates them in short rounds and prints the ratio, which is what
//! docs/BENCHMARKS.md records (on a noisy machine, sequential runs drift apart).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use bastion_core::clock::ManualClock;
use bastion_core::keys::{KeyRing, SharedKeyRing};
use bastion_core::vault::{Field, Vault};
use bastion_crypto::envelope::context;
use bastion_crypto::master::MasterKey;
use bastion_store::{SealedColumn, Store};
use criterion::{Criterion, criterion_group, criterion_main};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROW: &str = "sec_0123456789abcdef0123456789abcdef";

struct Raw {
    key: LessSafeKey,
    aad: Vec<u8>,
}

impl Raw {
    fn new() -> Self {
        let field = Field::of(SealedColumn::SecretValue, ROW);
        // The same AAD length the vault authenticates: header + context.
        let mut aad = vec![0u8; 16];
        aad.extend(context(&[
            field.purpose.as_str(),
            field.table,
            field.column,
            field.row,
        ]));
        Self {
            key: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[7u8; 32]).unwrap()),
            aad,
        }
    }

    fn seal_open(&self, data: &[u8]) -> usize {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).unwrap();
        let mut buf = Vec::with_capacity(data.len() + 16);
        buf.extend_from_slice(data);
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&self.aad[..]),
                &mut buf,
            )
            .unwrap();
        // The ciphertext is what gets stored, so decryption works on a copy of it.
        let mut copy = buf.clone();
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&self.aad[..]),
                &mut copy,
            )
            .unwrap();
        plain.len()
    }
}

async fn vault_seal_open(v: &Vault, data: &[u8]) -> usize {
    let field = Field::of(SealedColumn::SecretValue, ROW);
    let sealed = v.seal(&field, data).await.unwrap();
    v.open(&field, &sealed.envelope).unwrap().len()
}

fn setup(rt: &tokio::runtime::Runtime) -> (Vault, tempfile::TempDir) {
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let s = bastion_store_sqlite::SqliteStore::open_in_dir(dir.path())
            .await
            .unwrap();
        s.migrate().await.unwrap();
        let store: Arc<dyn Store> = Arc::new(s);
        let ring = KeyRing::open(
            store.as_ref(),
            &MasterKey::from_bytes([1; 32]),
            &ManualClock::new(1_700_000_000_000),
        )
        .await
        .unwrap();
        (Vault::new(SharedKeyRing::new(ring), store), dir)
    })
}

fn seal_open(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (vault, _dir) = setup(&rt);
    let raw = Raw::new();
    let data = [0x5au8; 256];
    // `COUNT_OPS=N`: N operations of each kind and exit, for an instruction count under
    // `valgrind --tool=callgrind` (repeatable where wall-clock time is not; see BENCHMARKS.md).
    if let Some(n) = std::env::var("COUNT_OPS")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
    {
        for _ in 0..n {
            std::hint::black_box(raw.seal_open(&data));
        }
        rt.block_on(async {
            for _ in 0..n {
                std::hint::black_box(vault_seal_open(&vault, &data).await);
            }
        });
        return;
    }

    let mut g = c.benchmark_group("vault_seal_open_256b");
    g.bench_function("baseline_raw_aes256gcm", |b| {
        b.iter(|| raw.seal_open(&data))
    });
    g.bench_function("vault_seal_open", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    std::hint::black_box(vault_seal_open(&vault, &data).await);
                }
                start.elapsed()
            })
        })
    });
    g.finish();

    // Interleaved: 30 rounds of 20,000 operations each, alternating; the median ratio.
    let rounds = 30;
    let per_round = 20_000;
    let mut ratios = Vec::with_capacity(rounds);
    let (mut raw_total, mut vault_total) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..rounds {
        let start = Instant::now();
        for _ in 0..per_round {
            std::hint::black_box(raw.seal_open(&data));
        }
        let raw_t = start.elapsed();
        let vault_t = rt.block_on(async {
            let start = Instant::now();
            for _ in 0..per_round {
                std::hint::black_box(vault_seal_open(&vault, &data).await);
            }
            start.elapsed()
        });
        raw_total += raw_t;
        vault_total += vault_t;
        ratios.push(raw_t.as_secs_f64() / vault_t.as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    let ops = f64::from(u32::try_from(rounds * per_round).unwrap());
    println!(
        "interleaved: raw {:.0} ns/op, vault {:.0} ns/op; vault throughput = {:.1} % of raw \
         (median of {rounds} rounds; min {:.1} %, max {:.1} %)",
        raw_total.as_secs_f64() * 1e9 / ops,
        vault_total.as_secs_f64() * 1e9 / ops,
        ratios[rounds / 2] * 100.0,
        ratios[0] * 100.0,
        ratios[rounds - 1] * 100.0,
    );
}

criterion_group!(benches, seal_open);
criterion_main!(benches);
