//! Access-token validation (SPEC A2) beside its same-run baseline: the raw RS256 signature
//! check of the same token with aws-lc-rs, which is the floor any JWT validation pays.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bastion_core::sessions::AccessClaims;
use bastion_crypto::jwt::{JwtAlgorithm, JwtSigningKey, JwtVerifier};
use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn validation(c: &mut Criterion) {
    let key = JwtSigningKey::from_pkcs8(
        JwtAlgorithm::Rs256,
        "tokens-v1",
        &JwtAlgorithm::Rs256.generate_pkcs8().unwrap(),
    )
    .unwrap();
    let now = i64::try_from(jsonwebtoken::get_current_timestamp()).unwrap();
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
    let token = key.sign(&claims).unwrap();
    let verifier = JwtVerifier::new(
        &JwkSet {
            keys: vec![key.jwk().clone()],
        },
        "bastion",
        "bastion",
        30,
    )
    .unwrap();

    let (n, e) = match &key.jwk().algorithm {
        AlgorithmParameters::RSA(p) => (
            URL_SAFE_NO_PAD.decode(&p.n).unwrap(),
            URL_SAFE_NO_PAD.decode(&p.e).unwrap(),
        ),
        _ => unreachable!(),
    };
    let public = aws_lc_rs::signature::RsaPublicKeyComponents { n, e };
    let (signing_input, sig) = token.rsplit_once('.').unwrap();
    let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();

    let mut g = c.benchmark_group("access_token_rs256");
    g.bench_function("baseline_raw_signature_verify", |b| {
        b.iter(|| {
            public
                .verify(
                    &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
                    signing_input.as_bytes(),
                    &sig,
                )
                .unwrap()
        })
    });
    g.bench_function("jwt_validate_full", |b| {
        b.iter(|| verifier.verify::<AccessClaims>(&token).unwrap())
    });
    g.finish();
}

criterion_group!(benches, validation);
criterion_main!(benches);
