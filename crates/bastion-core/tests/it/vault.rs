//! The vault mechanism (SPEC S1–S3): what opens and what is refused, with which error; the
//! per-key encryption budget across nodes; master-key rotation.

use std::sync::Arc;

use bastion_core::clock::ManualClock;
use bastion_core::keys::{KeyError, KeyRing, KeyRingOptions, SharedKeyRing};
use bastion_core::vault::{Budget, Field, Vault, VaultError};
use bastion_crypto::envelope::EnvelopeHeader;
use bastion_crypto::keyring::Purpose;
use bastion_crypto::master::MasterKey;
use bastion_store::{SealedColumn, Store};

const T0: i64 = 1_700_000_000_000;

async fn store() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let s = bastion_store_sqlite::SqliteStore::open_in_dir(dir.path())
        .await
        .unwrap();
    s.migrate().await.unwrap();
    (Arc::new(s), dir)
}

async fn vault(store: &Arc<dyn Store>, master: &MasterKey, budget: Budget) -> Vault {
    let ring = KeyRing::open(store.as_ref(), master, &ManualClock::new(T0))
        .await
        .unwrap();
    Vault::with_budget(SharedKeyRing::new(ring), store.clone(), budget)
}

fn field(purpose: Purpose, row: &str) -> Field<'_> {
    Field {
        purpose,
        table: "secrets",
        column: "value",
        row,
    }
}

#[tokio::test]
async fn s1_an_envelope_names_its_key_and_version_and_opens_only_in_its_own_field() {
    let (s, _d) = store().await;
    let v = vault(&s, &MasterKey::from_bytes([1; 32]), Budget::default()).await;
    let here = Field::of(SealedColumn::SecretValue, "sec_1");
    let sealed = v.seal(&here, b"hunter2").await.unwrap();
    let header = EnvelopeHeader::parse(&sealed.envelope).unwrap();
    assert_eq!((header.key_id, header.version), ("secrets-v1", 1));
    assert_eq!(sealed.key_id, "secrets-v1");
    assert_eq!(&v.open(&here, &sealed.envelope).unwrap()[..], b"hunter2");
    assert!(
        !sealed.envelope.windows(7).any(|w| w == b"hunter2"),
        "plaintext inside the envelope"
    );
    // Two seals of one value differ (fresh nonce each time).
    assert_ne!(
        v.seal(&here, b"hunter2").await.unwrap().envelope,
        sealed.envelope
    );
}

#[tokio::test]
async fn s1_s2_tampered_moved_and_foreign_values_are_refused_each_with_its_own_error() {
    let (s, _d) = store().await;
    let v = vault(&s, &MasterKey::from_bytes([1; 32]), Budget::default()).await;
    let here = field(Purpose::Secrets, "sec_1");
    let sealed = v.seal(&here, b"value").await.unwrap().envelope;

    // Tampered: any flipped bit after the header.
    for i in [sealed.len() - 1, sealed.len() - 20, 16] {
        let mut bad = sealed.clone();
        bad[i] ^= 0x01;
        let err = v.open(&here, &bad).unwrap_err();
        assert!(matches!(err, VaultError::Tampered { .. }), "{err}");
    }
    // Moved: another row, column or table.
    for other in [
        field(Purpose::Secrets, "sec_2"),
        Field {
            column: "other",
            ..here
        },
        Field {
            table: "email_outbox",
            ..here
        },
    ] {
        let err = v.open(&other, &sealed).unwrap_err();
        assert!(matches!(err, VaultError::Tampered { .. }), "{err}");
        assert!(err.to_string().contains("moved from another row"), "{err}");
    }
    // Another purpose's field: refused by name before any decryption.
    let err = v
        .open(&field(Purpose::Integrations, "sec_1"), &sealed)
        .unwrap_err();
    assert!(matches!(err, VaultError::WrongPurpose { .. }), "{err}");
    // Another purpose's key: the header relabelled to a same-length purpose does not open.
    let mut relabelled = sealed.clone();
    let at = relabelled
        .windows(10)
        .position(|w| w == b"secrets-v1")
        .unwrap();
    relabelled[at..at + 10].copy_from_slice(b"ai_keys-v1");
    let err = v
        .open(&field(Purpose::AiKeys, "sec_1"), &relabelled)
        .unwrap_err();
    assert!(matches!(err, VaultError::Tampered { .. }), "{err}");
    // Unknown key, truncated, and not an envelope at all.
    let mut unknown = sealed.clone();
    let at = unknown
        .windows(10)
        .position(|w| w == b"secrets-v1")
        .unwrap();
    unknown[at + 9] = b'7';
    assert!(matches!(
        v.open(&here, &unknown).unwrap_err(),
        VaultError::UnknownKey { .. }
    ));
    assert!(matches!(
        v.open(&here, &sealed[..20]).unwrap_err(),
        VaultError::Malformed(_)
    ));
    assert!(matches!(
        v.open(&here, b"plain text").unwrap_err(),
        VaultError::Malformed(_)
    ));
}

#[tokio::test]
async fn s3_a_value_under_a_retired_version_is_refused_and_the_newest_cannot_retire() {
    let (s, _d) = store().await;
    let master = MasterKey::from_bytes([1; 32]);
    let clock = ManualClock::new(T0);
    let v1 = vault(&s, &master, Budget::default()).await;
    let here = field(Purpose::Secrets, "sec_1");
    let old = v1.seal(&here, b"old").await.unwrap().envelope;
    KeyRing::rotate(
        s.as_ref(),
        &master,
        &clock,
        Purpose::Secrets,
        &KeyRingOptions::default(),
    )
    .await
    .unwrap();
    let v2 = vault(&s, &master, Budget::default()).await;
    assert_eq!(
        &v2.open(&here, &old).unwrap()[..],
        b"old",
        "old versions open until retired"
    );
    assert_eq!(v2.seal(&here, b"new").await.unwrap().key_id, "secrets-v2");
    assert!(matches!(
        v2.retire(Purpose::Secrets, 3).await.unwrap_err(),
        VaultError::Key(KeyError::RetireNewest { .. })
    ));
    assert!(matches!(
        v2.retire(Purpose::Tokens, 2).await.unwrap_err(),
        VaultError::Key(KeyError::NotRetirable(_))
    ));
    // No stored row uses v1 (this envelope was never stored), so it retires.
    assert_eq!(v2.retire(Purpose::Secrets, 2).await.unwrap(), 1);
    let v3 = vault(&s, &master, Budget::default()).await;
    let err = v3.open(&here, &old).unwrap_err();
    assert!(matches!(err, VaultError::Retired { .. }), "{err}");
    assert!(err.to_string().contains("retired"));
}

#[tokio::test]
async fn s1_the_encryption_budget_holds_across_nodes_and_rotation_restores_sealing() {
    let (s, _d) = store().await;
    let master = MasterKey::from_bytes([1; 32]);
    // Two nodes, one database: 10 encryptions per key version, reserved 3 at a time.
    let a = vault(&s, &master, Budget::new(10, 3)).await;
    let b = vault(&s, &master, Budget::new(10, 3)).await;
    let here = field(Purpose::Secrets, "sec_1");
    let mut sealed = 0;
    for i in 0..12 {
        let node = if i % 2 == 0 { &a } else { &b };
        match node.seal(&here, b"x").await {
            Ok(_) => sealed += 1,
            Err(VaultError::BudgetExhausted { limit, .. }) => assert_eq!(limit, 10),
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        sealed <= 10,
        "{sealed} encryptions under one key with a budget of 10"
    );
    assert!(sealed >= 7, "blocks wasted beyond one per node: {sealed}");
    let err = a.seal(&here, b"x").await.unwrap_err();
    assert!(
        err.to_string()
            .contains("bastion keys rotate --purpose secrets"),
        "{err}"
    );
    KeyRing::rotate(
        s.as_ref(),
        &master,
        &ManualClock::new(T0),
        Purpose::Secrets,
        &KeyRingOptions::default(),
    )
    .await
    .unwrap();
    let c = vault(&s, &master, Budget::new(10, 3)).await;
    assert_eq!(c.seal(&here, b"x").await.unwrap().key_id, "secrets-v2");
    // Other purposes have budgets of their own.
    assert!(a.seal(&field(Purpose::Webhooks, "w"), b"x").await.is_ok());
}

#[tokio::test]
async fn s3_after_master_rotation_the_old_key_opens_nothing_and_the_new_one_everything() {
    let (s, _d) = store().await;
    let old = MasterKey::from_bytes([1; 32]);
    let new = MasterKey::from_bytes([2; 32]);
    let clock = ManualClock::new(T0);
    let v = vault(&s, &old, Budget::default()).await;
    let here = field(Purpose::Secrets, "sec_1");
    let sealed = v.seal(&here, b"survives").await.unwrap().envelope;
    let before = s.keys(&bastion_store::Scope::System("test")).await.unwrap();

    assert!(matches!(
        KeyRing::rotate_master(s.as_ref(), &old, &old, &clock)
            .await
            .unwrap_err(),
        KeyError::SameMasterKey
    ));
    // A wrong current key rotates nothing.
    let wrong = MasterKey::from_bytes([3; 32]);
    assert!(matches!(
        KeyRing::rotate_master(s.as_ref(), &wrong, &new, &clock)
            .await
            .unwrap_err(),
        KeyError::WrongMasterKey
    ));
    assert_eq!(
        s.keys(&bastion_store::Scope::System("test")).await.unwrap(),
        before
    );

    let n = KeyRing::rotate_master(s.as_ref(), &old, &new, &clock)
        .await
        .unwrap();
    assert_eq!(n, before.len());
    assert!(matches!(
        KeyRing::open(s.as_ref(), &old, &clock).await.unwrap_err(),
        KeyError::WrongMasterKey
    ));
    let after = vault(&s, &new, Budget::default()).await;
    assert_eq!(&after.open(&here, &sealed).unwrap()[..], b"survives");
    // The keys are the same keys: only their wrapping changed.
    let rows = s.keys(&bastion_store::Scope::System("test")).await.unwrap();
    for (b, a) in before.iter().zip(&rows) {
        assert_eq!((&b.key_id, b.version), (&a.key_id, a.version));
        assert_ne!(b.wrapped, a.wrapped);
    }
    // A second rotation from the old key (a stale operator) is refused.
    assert!(
        KeyRing::rotate_master(s.as_ref(), &old, &MasterKey::from_bytes([4; 32]), &clock)
            .await
            .is_err()
    );
}
