//! Offline license verification (SPEC C4) beside its same-run baseline: the raw signature check
//! of the same algorithm by aws-lc-rs (a pre-parsed public key, the same signed bytes). The
//! verifier pays on top: splitting and base64-decoding the key, parsing its JSON, finding the
//! key by `kid`, and checking the email binding and expiry. Criterion measures both, for RS256
//! and Ed25519; then an interleaved run alternates them in short rounds and prints the ratio of
//! rates, which docs/BENCHMARKS.md records (sequential runs drift apart on a noisy machine).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use aws_lc_rs::signature::{self, ParsedPublicKey, VerificationAlgorithm};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bastion_crypto::jwt::JwtAlgorithm;
use bastion_crypto::license::{
    DocumentKind, LicenseClaims, LicenseSigner, PublicKeySet, email_hash,
};
use criterion::{Criterion, criterion_group, criterion_main};

const EMAIL: &str = "buyer@example.com";
const NOW: i64 = 1_800_000_000;

struct Case {
    name: &'static str,
    key: String,
    set: PublicKeySet,
    raw: ParsedPublicKey,
    signed: Vec<u8>,
    sig: Vec<u8>,
}

fn case(alg: JwtAlgorithm) -> Case {
    let pkcs8 = alg.generate_pkcs8().unwrap();
    let signer = LicenseSigner::from_pkcs8(alg, "licenses-v1", &pkcs8).unwrap();
    let claims = LicenseClaims {
        v: 1,
        kid: signer.kid().into(),
        alg: signer.alg_name().into(),
        lic: "lic_0123456789abcdef0123456789abcdef".into(),
        prd: "prd_0123456789abcdef0123456789abcdef".into(),
        pol: "pol_0123456789abcdef0123456789abcdef".into(),
        iat: NOW - 86_400,
        exp: Some(NOW + 365 * 86_400),
        ent: vec!["export".into(), "pro".into()],
        eml: email_hash("lic_0123456789abcdef0123456789abcdef", EMAIL),
    };
    let key = signer.sign(DocumentKind::License, &claims).unwrap();
    let set = PublicKeySet::new(&[signer.public_key().clone()]).unwrap();
    let (signed, sig) = key.rsplit_once('.').unwrap();
    let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    // The baseline key, parsed once from the same public key the set holds.
    let (algorithm, der): (&'static dyn VerificationAlgorithm, Vec<u8>) = match alg {
        JwtAlgorithm::Rs256 => {
            let kp = aws_lc_rs::rsa::KeyPair::from_pkcs8(&pkcs8).unwrap();
            use aws_lc_rs::signature::KeyPair;
            (
                &signature::RSA_PKCS1_2048_8192_SHA256,
                kp.public_key().as_ref().to_vec(),
            )
        }
        _ => {
            let kp = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(&pkcs8).unwrap();
            use aws_lc_rs::signature::KeyPair;
            (&signature::ED25519, kp.public_key().as_ref().to_vec())
        }
    };
    Case {
        name: if alg == JwtAlgorithm::Rs256 {
            "rs256"
        } else {
            "ed25519"
        },
        raw: ParsedPublicKey::new(algorithm, der).unwrap(),
        signed: signed.as_bytes().to_vec(),
        sig,
        key,
        set,
    }
}

fn raw_verify(c: &Case) -> bool {
    c.raw.verify_sig(&c.signed, &c.sig).is_ok()
}

fn offline_verify(c: &Case) -> bool {
    c.set
        .verify_license(
            &c.key,
            Some(EMAIL),
            NOW,
            bastion_crypto::license::DEFAULT_SKEW_SECS,
        )
        .is_ok()
}

fn bench(c: &mut Criterion) {
    for case in [case(JwtAlgorithm::Rs256), case(JwtAlgorithm::EdDsa)] {
        assert!(raw_verify(&case) && offline_verify(&case));
        let mut g = c.benchmark_group(format!("license_verify_{}", case.name));
        g.bench_function("baseline_raw_signature_verify", |b| {
            b.iter(|| raw_verify(&case))
        });
        g.bench_function("verify_offline", |b| b.iter(|| offline_verify(&case)));
        g.finish();

        // Interleaved: 30 rounds of 2,000 verifications each, alternating; the median ratio.
        let (rounds, per_round) = (30, 2_000);
        let mut ratios = Vec::with_capacity(rounds);
        let (mut raw_total, mut ours_total) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..rounds {
            let start = Instant::now();
            for _ in 0..per_round {
                std::hint::black_box(raw_verify(std::hint::black_box(&case)));
            }
            let raw = start.elapsed();
            let start = Instant::now();
            for _ in 0..per_round {
                std::hint::black_box(offline_verify(std::hint::black_box(&case)));
            }
            let ours = start.elapsed();
            raw_total += raw;
            ours_total += ours;
            // Rate ratio = time ratio inverted.
            ratios.push(raw.as_secs_f64() / ours.as_secs_f64());
        }
        ratios.sort_by(|a, b| a.total_cmp(b));
        let n = f64::from(u32::try_from(rounds * per_round).unwrap());
        println!(
            "interleaved {}: raw {:.0}/s, verify_offline {:.0}/s, median rate ratio {:.1} % (target >= 80 %)",
            case.name,
            n / raw_total.as_secs_f64(),
            n / ours_total.as_secs_f64(),
            ratios[rounds / 2] * 100.0
        );
    }
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
