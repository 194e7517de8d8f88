//! Webhook signature verification of a 4 KB payload (SPEC P2) beside its same-run baseline:
//! one raw aws-lc-rs HMAC-SHA256 over the same signed bytes with a key built once, which is
//! the least any verifier must do. `verify` pays on top: finding and parsing the
//! `Stripe-Signature` header, hex-decoding the signature, checking the timestamp window, keying
//! HMAC from the endpoint's secret, and the constant-time comparison. Criterion measures both;
//! an interleaved run then alternates them and prints the ratio of times (target ≤ 1.25×).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use aws_lc_rs::hmac;
use bastion_core::webhooks::signature::{Delivery, Scheme, WebhookSecret, verify};
use criterion::{Criterion, criterion_group, criterion_main};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SECRET: &str = "whsec_0123456789abcdef0123456789abcdef";
const T: i64 = 1_700_000_000;

fn bench(c: &mut Criterion) {
    let body = vec![b'x'; 4096];
    let signed = [format!("{T}.").into_bytes(), body.clone()].concat();
    let key = hmac::Key::new(hmac::HMAC_SHA256, SECRET.as_bytes());
    let sig = hex::encode(hmac::sign(&key, &signed).as_ref());
    let header = format!("t={T},v1={sig}");
    let headers = [
        ("Content-Type", "application/json"),
        ("Stripe-Signature", header.as_str()),
    ];
    let delivery = Delivery {
        headers: &headers,
        query: None,
        body: &body,
    };
    let secrets = [WebhookSecret::parse(&Scheme::Stripe, SECRET).unwrap()];
    let raw = || hmac::sign(&key, std::hint::black_box(&signed));
    let ours = || {
        verify(
            &Scheme::Stripe,
            &secrets,
            std::hint::black_box(&delivery),
            T,
            300,
        )
    };
    assert!(ours().is_ok());

    let mut g = c.benchmark_group("webhook_verify_4kb");
    g.bench_function("baseline_raw_hmac_sha256", |b| b.iter(raw));
    g.bench_function("stripe_verify", |b| b.iter(ours));
    g.finish();

    let (rounds, per_round) = (30, 5_000);
    let mut ratios = Vec::with_capacity(rounds);
    let (mut raw_total, mut ours_total) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..rounds {
        let start = Instant::now();
        for _ in 0..per_round {
            std::hint::black_box(raw());
        }
        let r = start.elapsed();
        let start = Instant::now();
        for _ in 0..per_round {
            std::hint::black_box(ours().is_ok());
        }
        let o = start.elapsed();
        raw_total += r;
        ours_total += o;
        ratios.push(o.as_secs_f64() / r.as_secs_f64());
    }
    ratios.sort_by(|a, b| a.total_cmp(b));
    let n = f64::from(u32::try_from(rounds * per_round).unwrap());
    println!(
        "interleaved: raw HMAC {:.2} µs, stripe verify {:.2} µs, median time ratio {:.3}x (target <= 1.25x)",
        raw_total.as_secs_f64() * 1e6 / n,
        ours_total.as_secs_f64() * 1e6 / n,
        ratios[rounds / 2]
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
