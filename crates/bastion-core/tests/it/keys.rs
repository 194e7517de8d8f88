use std::sync::Arc;

use bastion_core::clock::ManualClock;
use bastion_core::keys::{KeyError, KeyRing, KeyRingOptions};
use bastion_crypto::jwt::{JwtAlgorithm, JwtVerifier};
use bastion_crypto::keyring::Purpose;
use bastion_crypto::master::MasterKey;
use bastion_store_sqlite::SqliteStore;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    sub: String,
    iat: u64,
    nbf: u64,
    exp: u64,
}

async fn store() -> (Arc<SqliteStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open_in_dir(dir.path()).await.unwrap();
    s.migrate().await.unwrap();
    (Arc::new(s), dir)
}

fn claims(now_s: u64) -> Claims {
    Claims {
        iss: "iss".into(),
        aud: "aud".into(),
        sub: "usr_1".into(),
        iat: now_s,
        nbf: now_s,
        exp: now_s + 900,
    }
}

#[tokio::test]
async fn a5_a_rotated_out_key_stays_published_and_verifying_for_the_token_lifetime() {
    let (s, _d) = store().await;
    let master = MasterKey::from_bytes([4; 32]);
    let t0 = 1_700_000_000_000;
    let clock = ManualClock::new(t0);
    let ring1 = KeyRing::open(s.as_ref(), &master, &clock).await.unwrap();
    let old = ring1.token_signer().unwrap();
    assert_eq!(old.algorithm(), JwtAlgorithm::Rs256, "RS256 is the default");
    let token = old
        .sign(&claims(jsonwebtoken::get_current_timestamp()))
        .unwrap();

    clock.advance_ms(1000);
    let new_row = KeyRing::rotate(
        s.as_ref(),
        &master,
        &clock,
        Purpose::Tokens,
        &KeyRingOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(new_row.version, 2);
    let ring2 = KeyRing::open(s.as_ref(), &master, &clock).await.unwrap();
    assert_eq!(
        ring2.token_signer().unwrap().kid(),
        new_row.key_id,
        "new tokens use the new key"
    );

    let overlap = 960_000;
    let jwks = ring2.token_jwks(t0 + 1000 + 10, overlap);
    assert_eq!(jwks.keys.len(), 2, "the old key is still published");
    let v = JwtVerifier::new(&jwks, "iss", "aud", 5).unwrap();
    assert!(
        v.verify::<Claims>(&token).is_ok(),
        "a token from the rotated-out key still verifies"
    );

    let later = ring2.token_jwks(t0 + 1000 + overlap, overlap);
    assert_eq!(
        later.keys.len(),
        1,
        "after the overlap only the current key is published"
    );
    assert_eq!(
        later.keys[0].common.key_id.as_deref(),
        Some(new_row.key_id.as_str())
    );
}

#[tokio::test]
async fn a2_configured_algorithm_applies_to_new_keys_and_wrong_master_keys_fail() {
    let (s, _d) = store().await;
    let master = MasterKey::from_bytes([5; 32]);
    let clock = ManualClock::new(1);
    let opts = KeyRingOptions {
        token_algorithm: JwtAlgorithm::EdDsa,
        ..KeyRingOptions::default()
    };
    let ring = KeyRing::open_with(s.as_ref(), &master, &clock, &opts)
        .await
        .unwrap();
    assert_eq!(
        ring.token_signer().unwrap().algorithm(),
        JwtAlgorithm::EdDsa
    );
    assert!(ring.refresh_key().is_ok());
    let wrong = MasterKey::from_bytes([6; 32]);
    assert!(matches!(
        KeyRing::open(s.as_ref(), &wrong, &clock).await,
        Err(KeyError::WrongMasterKey)
    ));
    assert!(matches!(
        KeyRing::rotate(s.as_ref(), &wrong, &clock, Purpose::Tokens, &opts).await,
        Err(KeyError::WrongMasterKey)
    ));
}

fn license_claims(
    signer: &bastion_crypto::license::LicenseSigner,
) -> bastion_crypto::license::LicenseClaims {
    bastion_crypto::license::LicenseClaims {
        v: 1,
        kid: signer.kid().into(),
        alg: signer.alg_name().into(),
        lic: "lic_1".into(),
        prd: "prd_1".into(),
        pol: "pol_1".into(),
        iat: 1_700_000_000,
        exp: None,
        ent: vec![],
        eml: bastion_crypto::license::email_hash("lic_1", "a@example.com"),
    }
}

#[tokio::test]
async fn l1_after_a_license_key_rotation_keys_signed_before_still_verify() {
    use bastion_crypto::license::DocumentKind;
    let (store, _dir) = store().await;
    let master = MasterKey::from_bytes([3; 32]);
    let clock = ManualClock::new(1_700_000_000_000);
    let ring = KeyRing::open(store.as_ref(), &master, &clock)
        .await
        .unwrap();
    let v1 = ring.license_signer().unwrap();
    assert_eq!(v1.alg_name(), "RS256", "RS256 by default (SPEC L1)");
    let old_key = v1.sign(DocumentKind::License, &license_claims(v1)).unwrap();
    KeyRing::rotate(
        store.as_ref(),
        &master,
        &clock,
        Purpose::Licenses,
        &KeyRingOptions {
            license_algorithm: JwtAlgorithm::EdDsa,
            ..KeyRingOptions::default()
        },
    )
    .await
    .unwrap();
    let ring = KeyRing::open(store.as_ref(), &master, &clock)
        .await
        .unwrap();
    let v2 = ring.license_signer().unwrap();
    assert!(v2.kid().starts_with("licenses-v2-"), "{}", v2.kid());
    assert_eq!(v2.alg_name(), "EdDSA");
    let new_key = v2.sign(DocumentKind::License, &license_claims(v2)).unwrap();
    assert!(
        new_key.len() < old_key.len(),
        "Ed25519 keys are the short alternative"
    );
    let published = ring.license_public_keys();
    assert_eq!(published.len(), 2, "apps ship every key by id");
    for key in [&old_key, &new_key] {
        ring.license_verifier()
            .verify_license(key, Some("a@example.com"), 1_700_000_100, 300)
            .unwrap();
    }
}

#[tokio::test]
async fn l3_the_lookup_pepper_is_never_rotated() {
    let (store, _dir) = store().await;
    let master = MasterKey::from_bytes([3; 32]);
    let clock = ManualClock::new(1_700_000_000_000);
    let ring = KeyRing::open(store.as_ref(), &master, &clock)
        .await
        .unwrap();
    assert!(ring.license_pepper().is_ok());
    let refused = KeyRing::rotate(
        store.as_ref(),
        &master,
        &clock,
        Purpose::LicenseLookup,
        &KeyRingOptions::default(),
    )
    .await;
    assert!(matches!(refused, Err(KeyError::NotRotatable)));
}
