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
