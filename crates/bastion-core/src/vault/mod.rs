//! The vault: the one way Bastion seals a secret it must read back (SPEC S1–S4).
//!
//! - [`Vault::seal`] / [`Vault::open`]: AES-256-GCM envelopes under the newest key of a purpose
//!   (S2), bound to their table, column and row, so a value copied elsewhere does not open.
//! - [`budget`]: at most [`budget::LIMIT`] encryptions per key version, counted in the database
//!   across nodes, so random 96-bit nonces never come near a repeat.
//! - [`rotation`]: rewrap older rows under the newest key, retire old versions, status.
//! - [`secrets`]: org projects and their named secrets, revealed only with a reason, audited.
//!
//! Purpose keys themselves are wrapped by the master key in the key ring ([`crate::keys`]),
//! with the same envelope format.

pub mod budget;
pub mod rotation;
pub mod secrets;

use std::sync::Arc;

use bastion_crypto::CryptoError;
use bastion_crypto::envelope::{EnvelopeHeader, Plaintext};
use bastion_crypto::keyring::{Purpose, PurposeKey};
use bastion_store::{SealedColumn, Store, StoreError};

use crate::keys::{KeyError, SharedKeyRing};

pub use budget::Budget;

/// Why a value could not be sealed or opened. Never carries a plaintext or key material.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error(
        "the value does not authenticate under key {key_id} for {field}: it was altered, or moved from another row, column or purpose"
    )]
    Tampered { key_id: String, field: String },
    #[error("the value was sealed by key {key_id}, which is not a {purpose} key")]
    WrongPurpose {
        key_id: String,
        purpose: &'static str,
    },
    #[error(
        "the value was sealed by key {key_id}, which is retired; nothing opens under a retired key"
    )]
    Retired { key_id: String },
    #[error("the value was sealed by key {key_id}, which is not in the key ring")]
    UnknownKey { key_id: String },
    #[error("the value is not a vault envelope: {0}")]
    Malformed(&'static str),
    #[error(
        "key {key_id} has sealed its budget of {limit} values; rotate it (bastion keys rotate --purpose {purpose})"
    )]
    BudgetExhausted {
        key_id: String,
        purpose: &'static str,
        limit: u64,
    },
    #[error(
        "rows are still sealed by a {purpose} key below v{below_version}; run `bastion keys rewrap --purpose {purpose}` first"
    )]
    StillSealed {
        purpose: &'static str,
        below_version: u32,
    },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("vault storage: {0}")]
    Store(#[from] StoreError),
    #[error("vault: {0}")]
    Crypto(CryptoError),
}

/// Where a sealed value lives: its purpose, table, column and row. The envelope is bound to all
/// four, so the same bytes anywhere else fail to open.
#[derive(Debug, Clone, Copy)]
pub struct Field<'a> {
    pub purpose: Purpose,
    pub table: &'a str,
    pub column: &'a str,
    pub row: &'a str,
}

impl<'a> Field<'a> {
    /// A row of one of the columns `bastion keys rewrap` knows.
    pub fn of(column: SealedColumn, row: &'a str) -> Self {
        Self {
            purpose: purpose_of(column),
            table: column.table(),
            column: column.column(),
            row,
        }
    }

    fn parts(&self) -> [&str; 4] {
        [self.purpose.as_str(), self.table, self.column, self.row]
    }

    fn describe(&self) -> String {
        format!("{}.{} row {}", self.table, self.column, self.row)
    }
}

/// The purpose whose keys seal `column`.
pub fn purpose_of(column: SealedColumn) -> Purpose {
    match column {
        SealedColumn::MailBody => Purpose::Mail,
        SealedColumn::SecretValue => Purpose::Secrets,
        SealedColumn::WebhookSecret => Purpose::Webhooks,
        SealedColumn::IdempotentResponse => Purpose::Idempotency,
    }
}

/// A sealed value and the id of the key that sealed it (stored beside it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub envelope: Vec<u8>,
}

/// Seals and opens values for every purpose. Cheap to share (`Arc`).
pub struct Vault {
    ring: Arc<SharedKeyRing>,
    store: Arc<dyn Store>,
    budget: Budget,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault").finish_non_exhaustive()
    }
}

impl Vault {
    pub fn new(ring: Arc<SharedKeyRing>, store: Arc<dyn Store>) -> Self {
        Self::with_budget(ring, store, Budget::default())
    }

    pub fn with_budget(ring: Arc<SharedKeyRing>, store: Arc<dyn Store>, budget: Budget) -> Self {
        Self {
            ring,
            store,
            budget,
        }
    }

    /// Seals `plaintext` for `field` under the newest key of its purpose.
    pub async fn seal(&self, field: &Field<'_>, plaintext: &[u8]) -> Result<Sealed, VaultError> {
        let ring = self.ring.current();
        let key = ring.data_key(field.purpose)?;
        self.budget
            .take(self.store.as_ref(), key.key_id(), field.purpose)
            .await?;
        let envelope = key
            .seal_parts(&field.parts(), plaintext)
            .map_err(VaultError::Crypto)?;
        Ok(Sealed {
            key_id: key.key_id().to_owned(),
            envelope,
        })
    }

    /// Opens a value sealed for `field`. Refuses a value of another purpose, under a retired or
    /// unknown key, altered, or moved from another field.
    pub fn open(&self, field: &Field<'_>, envelope: &[u8]) -> Result<Plaintext, VaultError> {
        let header = EnvelopeHeader::parse(envelope).map_err(|e| match e {
            CryptoError::Malformed(what) => VaultError::Malformed(what),
            other => VaultError::Crypto(other),
        })?;
        self.ring.with_current(|ring| {
            let entry =
                ring.entry_by_key_id(header.key_id)
                    .ok_or_else(|| VaultError::UnknownKey {
                        key_id: header.key_id.to_owned(),
                    })?;
            let key_id = || header.key_id.to_owned();
            if entry.record.purpose != field.purpose.as_str() {
                return Err(VaultError::WrongPurpose {
                    key_id: key_id(),
                    purpose: field.purpose.as_str(),
                });
            }
            if entry.record.retired {
                return Err(VaultError::Retired { key_id: key_id() });
            }
            let PurposeKey::Data(key) = &entry.key else {
                return Err(VaultError::WrongPurpose {
                    key_id: key_id(),
                    purpose: field.purpose.as_str(),
                });
            };
            key.open_parts_with_header(&header, &field.parts(), envelope)
                .map_err(|e| match e {
                    CryptoError::Unauthentic { .. } => VaultError::Tampered {
                        key_id: key_id(),
                        field: field.describe(),
                    },
                    CryptoError::UnknownKey { .. } => VaultError::UnknownKey { key_id: key_id() },
                    CryptoError::Malformed(what) => VaultError::Malformed(what),
                    other => VaultError::Crypto(other),
                })
        })
    }
}
