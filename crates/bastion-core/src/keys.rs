//! The key ring in use: checks the master key against the canary, creates missing purpose keys,
//! rotates them, and holds the unwrapped keys for the process.

use std::sync::Arc;

use aws_lc_rs::hmac;
use bastion_crypto::CryptoError;
use bastion_crypto::envelope::DataKey;
use bastion_crypto::jwt::{JwtAlgorithm, JwtSigningKey};
use bastion_crypto::keyring::{Kek, KeyAlgorithm, Purpose, PurposeKey, WrappedKey};
use bastion_crypto::license::{LicensePublicKey, LicenseSigner, PublicKeySet};
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
    #[error("stored key {0} has an unknown purpose or algorithm")]
    Unknown(String),
    #[error("no usable {0} key in the key ring")]
    Missing(&'static str),
    #[error("the new master key is the one in use; generate a new one")]
    SameMasterKey,
    #[error("{0} keys do not seal data; only data keys are retired (signing keys stay to verify)")]
    NotRetirable(&'static str),
    #[error("version {newest} is the newest {purpose} key; it cannot be retired (rotate first)")]
    RetireNewest { purpose: &'static str, newest: u32 },
    #[error(
        "license_lookup is the pepper of stored license-key and machine hashes; a new one would orphan every stored hash, so it is not rotated"
    )]
    NotRotatable,
}

/// Choices for keys the ring creates.
#[derive(Debug, Clone, Copy)]
pub struct KeyRingOptions {
    /// Algorithm of new access-token signing keys (RS256 by default; SPEC A2).
    pub token_algorithm: JwtAlgorithm,
    /// Algorithm of new license-signing keys (RS256 by default, EdDSA for shorter keys; SPEC L1).
    pub license_algorithm: JwtAlgorithm,
}

impl Default for KeyRingOptions {
    fn default() -> Self {
        Self {
            token_algorithm: JwtAlgorithm::Rs256,
            license_algorithm: JwtAlgorithm::Rs256,
        }
    }
}

impl KeyRingOptions {
    fn algorithm_for(&self, purpose: Purpose) -> KeyAlgorithm {
        match purpose {
            Purpose::Tokens => KeyAlgorithm::Jwt(self.token_algorithm),
            Purpose::Licenses => KeyAlgorithm::Jwt(self.license_algorithm),
            other => other.default_algorithm(),
        }
    }
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
    /// Per purpose (in `Purpose::ALL` order), the index of its newest active key: sealing
    /// looks it up on every call.
    newest: Vec<Option<usize>>,
    /// Every license public key, parsed once: the server verifies keys on each activation.
    license_keys: PublicKeySet,
    fingerprint: String,
}

/// Whether the database already has a key ring (so a missing master key must not be generated).
pub async fn is_initialised(store: &dyn Store) -> Result<bool, KeyError> {
    Ok(store.canary(&SCOPE).await?.is_some() || !store.keys(&SCOPE).await?.is_empty())
}

fn row_of(w: WrappedKey, now_ms: i64) -> StoredKey {
    StoredKey {
        purpose: w.purpose.as_str().to_owned(),
        version: w.version,
        key_id: w.key_id,
        algorithm: w.algorithm.as_str().to_owned(),
        wrapped: w.wrapped,
        public_key: w.public_key,
        created_ms: now_ms,
        retired: false,
    }
}

fn wrapped_of(record: &StoredKey) -> Result<WrappedKey, KeyError> {
    let unknown = || KeyError::Unknown(record.key_id.clone());
    Ok(WrappedKey {
        purpose: Purpose::parse(&record.purpose).ok_or_else(unknown)?,
        version: record.version,
        key_id: record.key_id.clone(),
        algorithm: KeyAlgorithm::parse(&record.algorithm).ok_or_else(unknown)?,
        wrapped: record.wrapped.clone(),
        public_key: record.public_key.clone(),
    })
}

/// Whether two master keys are the same key (compared by fingerprint, never by bytes).
fn same_master(a: &MasterKey, b: &MasterKey) -> Result<bool, KeyError> {
    Ok(bastion_crypto::ct_eq(
        a.fingerprint()?.as_bytes(),
        b.fingerprint()?.as_bytes(),
    ))
}

async fn checked_kek(
    store: &dyn Store,
    master: &MasterKey,
    clock: &dyn Clock,
) -> Result<Kek, KeyError> {
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
    Ok(kek)
}

impl KeyRing {
    /// [`KeyRing::open_with`] with default options.
    pub async fn open(
        store: &dyn Store,
        master: &MasterKey,
        clock: &dyn Clock,
    ) -> Result<Arc<Self>, KeyError> {
        Self::open_with(store, master, clock, &KeyRingOptions::default()).await
    }

    /// Checks `master` against the canary (writing one on a fresh database), creates each
    /// purpose's first key if missing, and unwraps every key. A wrong master key fails before
    /// anything is written.
    pub async fn open_with(
        store: &dyn Store,
        master: &MasterKey,
        clock: &dyn Clock,
        opts: &KeyRingOptions,
    ) -> Result<Arc<Self>, KeyError> {
        let kek = checked_kek(store, master, clock).await?;
        let mut stored = store.keys(&SCOPE).await?;
        for &purpose in Purpose::ALL {
            if !stored.iter().any(|k| k.purpose == purpose.as_str()) {
                let row = row_of(
                    kek.generate(purpose, 1, opts.algorithm_for(purpose))?,
                    clock.now_ms(),
                );
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
            let key = kek.unwrap(&wrapped_of(&record)?)?;
            entries.push(RingEntry { record, key });
        }
        let newest = Purpose::ALL
            .iter()
            .map(|p| {
                entries
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| e.record.purpose == p.as_str() && !e.record.retired)
                    .max_by_key(|(_, e)| e.record.version)
                    .map(|(i, _)| i)
            })
            .collect();
        let public: Vec<LicensePublicKey> = entries
            .iter()
            .filter_map(|e| match &e.key {
                PurposeKey::License(l) => Some(l.public_key().clone()),
                _ => None,
            })
            .collect();
        let license_keys = PublicKeySet::new(&public)
            .map_err(|_| KeyError::Unknown("a license public key".to_owned()))?;
        Ok(Arc::new(Self {
            entries,
            newest,
            license_keys,
            fingerprint: master.fingerprint()?,
        }))
    }

    /// Adds the next version of `purpose`'s key; new work uses it, older versions stay usable
    /// for verification. Running servers pick it up when they reload the ring.
    pub async fn rotate(
        store: &dyn Store,
        master: &MasterKey,
        clock: &dyn Clock,
        purpose: Purpose,
        opts: &KeyRingOptions,
    ) -> Result<StoredKey, KeyError> {
        if purpose == Purpose::LicenseLookup {
            return Err(KeyError::NotRotatable);
        }
        let kek = checked_kek(store, master, clock).await?;
        let next = store
            .keys(&SCOPE)
            .await?
            .iter()
            .filter(|k| k.purpose == purpose.as_str())
            .map(|k| k.version)
            .max()
            .unwrap_or(0)
            + 1;
        let row = row_of(
            kek.generate(purpose, next, opts.algorithm_for(purpose))?,
            clock.now_ms(),
        );
        store.insert_key(&SCOPE, &row).await?;
        Ok(row)
    }

    /// Re-wraps every purpose key under `new` and replaces the canary, in one transaction that
    /// only commits while the database still holds `old`'s canary. Afterwards `old` opens
    /// nothing and `new` opens everything; the keys themselves (and so every ciphertext and
    /// signature) are unchanged. Returns how many keys were re-wrapped.
    pub async fn rotate_master(
        store: &dyn Store,
        old: &MasterKey,
        new: &MasterKey,
        clock: &dyn Clock,
    ) -> Result<usize, KeyError> {
        if crate::keys::same_master(old, new)? {
            return Err(KeyError::SameMasterKey);
        }
        let old_kek = checked_kek(store, old, clock).await?;
        let old_canary = store.canary(&SCOPE).await?.ok_or(KeyError::MissingCanary)?;
        let new_kek = Kek::from_master(new)?;
        let mut rows = Vec::new();
        for record in store.keys(&SCOPE).await? {
            let wrapped = wrapped_of(&record)?;
            let rewrapped = old_kek.rewrap(&new_kek, &wrapped)?;
            rows.push(StoredKey {
                wrapped: rewrapped.wrapped,
                ..record
            });
        }
        store
            .replace_key_ring(&SCOPE, &old_canary, &new_kek.make_canary()?, &rows)
            .await?;
        Ok(rows.len())
    }

    fn newest(&self, purpose: Purpose) -> Option<&RingEntry> {
        let slot = Purpose::ALL.iter().position(|p| *p == purpose)?;
        self.newest
            .get(slot)
            .copied()
            .flatten()
            .and_then(|i| self.entries.get(i))
    }

    /// When the newest key of `purpose` was created.
    pub fn newest_created_ms(&self, purpose: Purpose) -> Option<i64> {
        self.newest(purpose).map(|e| e.record.created_ms)
    }

    /// The newest active Ed25519 signer for audit checkpoints.
    pub fn audit_signer(&self) -> Option<&Ed25519Signer> {
        match &self.newest(Purpose::Audit)?.key {
            PurposeKey::Signing(s) => Some(s),
            _ => None,
        }
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

    /// The key that signs new access tokens.
    pub fn token_signer(&self) -> Result<&JwtSigningKey, KeyError> {
        match self.newest(Purpose::Tokens).map(|e| &e.key) {
            Some(PurposeKey::Jwt(j)) => Ok(j),
            _ => Err(KeyError::Missing("token signing")),
        }
    }

    /// Token keys to publish (SPEC A5): the newest, and every older one whose successor is
    /// younger than `overlap_ms` (the longest an access token it signed can still live).
    pub fn token_jwks(&self, now_ms: i64, overlap_ms: i64) -> jsonwebtoken::jwk::JwkSet {
        let mut tokens: Vec<&RingEntry> = self
            .entries
            .iter()
            .filter(|e| e.record.purpose == Purpose::Tokens.as_str())
            .collect();
        tokens.sort_by_key(|e| std::cmp::Reverse(e.record.version));
        let mut keys = Vec::new();
        let mut successor_created: Option<i64> = None;
        for e in tokens {
            let published = successor_created.is_none_or(|t| now_ms - t < overlap_ms);
            if let (true, PurposeKey::Jwt(j)) = (published, &e.key) {
                keys.push(j.jwk().clone());
            }
            successor_created = Some(e.record.created_ms);
        }
        jsonwebtoken::jwk::JwkSet { keys }
    }

    /// The key that derives refresh-token successors.
    pub fn refresh_key(&self) -> Result<&hmac::Key, KeyError> {
        match self.newest(Purpose::Refresh).map(|e| &e.key) {
            Some(PurposeKey::Mac(k)) => Ok(k),
            _ => Err(KeyError::Missing("refresh")),
        }
    }

    /// The key that signs new license keys, machine certificates and revocation lists.
    pub fn license_signer(&self) -> Result<&LicenseSigner, KeyError> {
        match self.newest(Purpose::Licenses).map(|e| &e.key) {
            Some(PurposeKey::License(l)) => Ok(l),
            _ => Err(KeyError::Missing("license signing")),
        }
    }

    /// Every license-signing key's public half, oldest first: apps ship them all, so keys
    /// signed before a rotation keep verifying.
    pub fn license_public_keys(&self) -> Vec<LicensePublicKey> {
        let mut keys: Vec<(u32, LicensePublicKey)> = self
            .entries
            .iter()
            .filter_map(|e| match &e.key {
                PurposeKey::License(l) => Some((e.record.version, l.public_key().clone())),
                _ => None,
            })
            .collect();
        keys.sort_by_key(|(v, _)| *v);
        keys.into_iter().map(|(_, k)| k).collect()
    }

    /// The same keys, parsed for verification.
    pub fn license_verifier(&self) -> &PublicKeySet {
        &self.license_keys
    }

    /// The pepper of stored license-key and machine hashes (SPEC L3): the first
    /// `license_lookup` key, which is never rotated.
    pub fn license_pepper(&self) -> Result<&hmac::Key, KeyError> {
        self.entries
            .iter()
            .filter(|e| e.record.purpose == Purpose::LicenseLookup.as_str())
            .min_by_key(|e| e.record.version)
            .and_then(|e| match &e.key {
                PurposeKey::Mac(k) => Some(&**k),
                _ => None,
            })
            .ok_or(KeyError::Missing("license lookup"))
    }

    /// The newest AES-256-GCM key of `purpose`: it seals new data.
    pub fn data_key(&self, purpose: Purpose) -> Result<&DataKey, KeyError> {
        match self.newest(purpose).map(|e| &e.key) {
            Some(PurposeKey::Data(k)) => Ok(k),
            _ => Err(KeyError::Missing(purpose.as_str())),
        }
    }

    /// The data key an envelope names (its header's key id), with its record.
    pub fn entry_by_key_id(&self, key_id: &str) -> Option<&RingEntry> {
        self.entries.iter().find(|e| match &e.key {
            PurposeKey::Data(k) => k.key_id() == key_id,
            _ => e.record.key_id == key_id,
        })
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

/// The process's current key ring, swapped whole when it is reloaded (after a rotation here or
/// on another node). Readers never block and never wait for a reload (`arc-swap`: the vault
/// reads it twice per sealed value, so a lock showed up in its profile).
#[derive(Debug)]
pub struct SharedKeyRing(arc_swap::ArcSwap<KeyRing>);

impl SharedKeyRing {
    pub fn new(ring: Arc<KeyRing>) -> Arc<Self> {
        Arc::new(Self(arc_swap::ArcSwap::new(ring)))
    }

    pub fn current(&self) -> Arc<KeyRing> {
        self.0.load_full()
    }

    /// Runs `f` with the current ring without taking a reference count (the vault's hot path).
    pub fn with_current<R>(&self, f: impl FnOnce(&KeyRing) -> R) -> R {
        f(&self.0.load())
    }

    pub fn replace(&self, ring: Arc<KeyRing>) {
        self.0.store(ring);
    }
}
