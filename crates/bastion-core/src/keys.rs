//! The key ring in use: checks the master key against the canary, creates missing purpose keys,
//! and holds the unwrapped keys for the process.

use std::sync::Arc;

use bastion_crypto::CryptoError;
use bastion_crypto::keyring::{Kek, Purpose, PurposeKey, WrappedKey};
use bastion_crypto::master::MasterKey;
use bastion_crypto::signing::Ed25519Signer;
use bastion_store::{Scope, Store, StoreError, StoredKey};

use crate::Clock;

const SCOPE: Scope = Scope::System("keyring");

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "the master key does not match this database (canary check failed); \
         supply the key it was created with (BASTION_MASTER_KEY or <data-dir>/master.key). Nothing was written."
    )]
    WrongMasterKey,
    #[error(
        "the database has purpose keys but no canary: the key ring was tampered with or partially restored"
    )]
    MissingCanary,
    #[error("key ring: {0}")]
    Crypto(#[from] CryptoError),
    #[error("key ring storage: {0}")]
    Store(#[from] StoreError),
    #[error("stored key {0} has an unknown purpose")]
    UnknownPurpose(String),
}

/// One usable key with its public record.
#[derive(Debug)]
pub struct RingEntry {
    pub record: StoredKey,
    pub key: PurposeKey,
}

/// The unwrapped key ring of this process. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct KeyRing {
    entries: Vec<RingEntry>,
    fingerprint: String,
}

/// Whether the database already has a key ring (so a missing master key must not be generated).
pub async fn is_initialised(store: &dyn Store) -> Result<bool, KeyError> {
    Ok(store.canary(&SCOPE).await?.is_some() || !store.keys(&SCOPE).await?.is_empty())
}

impl KeyRing {
    /// Checks `master` against the canary (writing one on a fresh database), creates each
    /// purpose's first key if missing, and unwraps every key. A wrong master key fails before
    /// anything is written.
    pub async fn open(
        store: &dyn Store,
        master: &MasterKey,
        clock: &dyn Clock,
    ) -> Result<Arc<Self>, KeyError> {
        let kek = Kek::from_master(master)?;
        let canary = match store.canary(&SCOPE).await? {
            Some(c) => c,
            None => {
                if !store.keys(&SCOPE).await?.is_empty() {
                    return Err(KeyError::MissingCanary);
                }
                store
                    .init_canary(&SCOPE, &kek.make_canary()?, clock.now_ms())
                    .await?
            }
        };
        kek.check_canary(&canary)
            .map_err(|_| KeyError::WrongMasterKey)?;

        let mut stored = store.keys(&SCOPE).await?;
        for &purpose in Purpose::ALL {
            if !stored.iter().any(|k| k.purpose == purpose.as_str()) {
                let w = kek.generate(purpose, 1)?;
                let row = StoredKey {
                    purpose: purpose.as_str().to_owned(),
                    version: w.version,
                    key_id: w.key_id,
                    algorithm: purpose.algorithm().as_str().to_owned(),
                    wrapped: w.wrapped,
                    public_key: w.public_key,
                    created_ms: clock.now_ms(),
                    retired: false,
                };
                match store.insert_key(&SCOPE, &row).await {
                    // Another node created it first: use theirs.
                    Ok(()) | Err(StoreError::Conflict(_)) => {}
                    Err(e) => return Err(e.into()),
                }
                stored = store.keys(&SCOPE).await?;
            }
        }
        let mut entries = Vec::with_capacity(stored.len());
        for record in stored {
            let purpose = Purpose::parse(&record.purpose)
                .ok_or_else(|| KeyError::UnknownPurpose(record.key_id.clone()))?;
            let wrapped = WrappedKey {
                purpose,
                version: record.version,
                key_id: record.key_id.clone(),
                wrapped: record.wrapped.clone(),
                public_key: record.public_key.clone(),
            };
            let key = kek.unwrap(&wrapped)?;
            entries.push(RingEntry { record, key });
        }
        Ok(Arc::new(Self {
            entries,
            fingerprint: master.fingerprint()?,
        }))
    }

    /// The newest active Ed25519 signer for audit checkpoints.
    pub fn audit_signer(&self) -> Option<&Ed25519Signer> {
        self.entries
            .iter()
            .filter(|e| e.record.purpose == Purpose::Audit.as_str() && !e.record.retired)
            .max_by_key(|e| e.record.version)
            .and_then(|e| match &e.key {
                PurposeKey::Signing(s) => Some(s),
                PurposeKey::Data(_) => None,
            })
    }

    /// Every audit public key by id, retired ones included (old checkpoints stay verifiable).
    pub fn audit_public_keys(&self) -> Vec<(String, Vec<u8>)> {
        self.entries
            .iter()
            .filter(|e| e.record.purpose == Purpose::Audit.as_str())
            .filter_map(|e| {
                e.record
                    .public_key
                    .clone()
                    .map(|pk| (e.record.key_id.clone(), pk))
            })
            .collect()
    }

    /// Key records (no secrets) for `bastion keys status`.
    pub fn records(&self) -> impl Iterator<Item = &StoredKey> {
        self.entries.iter().map(|e| &e.record)
    }

    /// A non-secret fingerprint of the master key in use.
    pub fn master_fingerprint(&self) -> &str {
        &self.fingerprint
    }
}
