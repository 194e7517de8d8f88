//! Per-purpose keys wrapped by the master key, and the canary that detects a wrong master key.
//!
//! Each purpose (audit checkpoints, token signing, licenses, project secrets, …) has its own
//! random keys, so a key for one purpose never opens another's data (SPEC S2). The key ring
//! stores them wrapped (AES-256-GCM) under a key-encryption key derived from the master key,
//! bound to their purpose and version.

use zeroize::Zeroizing;

use crate::CryptoError;
use crate::envelope::{DataKey, context};
use crate::master::MasterKey;
use crate::signing::Ed25519Signer;

const CANARY_PLAINTEXT: &[u8] = b"bastion key-ring canary v1";

/// What a key is for. Adding a purpose never changes the keys of another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Purpose {
    /// Ed25519 keys that sign audit checkpoints.
    Audit,
}

/// The algorithm of a purpose's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Ed25519,
    Aes256Gcm,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ed25519 => "Ed25519",
            Self::Aes256Gcm => "AES-256-GCM",
        }
    }
}

impl Purpose {
    pub const ALL: &'static [Purpose] = &[Purpose::Audit];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Audit => "audit",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|p| p.as_str() == s)
    }

    pub fn algorithm(self) -> Algorithm {
        match self {
            Self::Audit => Algorithm::Ed25519,
        }
    }
}

/// A purpose key as the database keeps it: wrapped, with its public half where it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    pub purpose: Purpose,
    pub version: u32,
    pub key_id: String,
    pub wrapped: Vec<u8>,
    pub public_key: Option<Vec<u8>>,
}

/// An unwrapped purpose key, ready for use.
#[derive(Debug)]
pub enum PurposeKey {
    Signing(Ed25519Signer),
    Data(DataKey),
}

/// The key-encryption key: derived from the master key, it wraps purpose keys and the canary.
pub struct Kek(DataKey);

impl Kek {
    pub fn from_master(master: &MasterKey) -> Result<Self, CryptoError> {
        let mut material = Zeroizing::new(master.derive(b"key-encryption-key")?);
        let key = DataKey::new("kek", 1, material.as_mut())?;
        Ok(Self(key))
    }

    /// A ciphertext only this master key opens, stored beside the key ring.
    pub fn make_canary(&self) -> Result<Vec<u8>, CryptoError> {
        self.0.seal(&context(&["canary"]), CANARY_PLAINTEXT)
    }

    /// Fails with [`CryptoError::WrongMasterKey`] unless `blob` was made by this master key.
    pub fn check_canary(&self, blob: &[u8]) -> Result<(), CryptoError> {
        match self.0.open(&context(&["canary"]), blob) {
            Ok(p) if crate::ct_eq(&p, CANARY_PLAINTEXT) => Ok(()),
            _ => Err(CryptoError::WrongMasterKey),
        }
    }

    /// Generates version `version` of `purpose`'s key and returns it wrapped.
    pub fn generate(&self, purpose: Purpose, version: u32) -> Result<WrappedKey, CryptoError> {
        let mut material = Zeroizing::new([0u8; 32]);
        crate::random_bytes(material.as_mut())?;
        let (key_id, public_key) = match purpose.algorithm() {
            Algorithm::Ed25519 => {
                let signer =
                    Ed25519Signer::from_seed(&key_prefix(purpose, version), material.as_ref())?;
                (
                    signer.key_id().to_owned(),
                    Some(signer.public_key().to_vec()),
                )
            }
            Algorithm::Aes256Gcm => {
                let fp = crate::sha256(&[b"key-id".as_slice(), material.as_ref()].concat());
                (
                    format!("{}-{}", key_prefix(purpose, version), &hex::encode(fp)[..8]),
                    None,
                )
            }
        };
        let wrapped = self
            .0
            .seal(&wrap_context(purpose, version, &key_id), material.as_ref())?;
        Ok(WrappedKey {
            purpose,
            version,
            key_id,
            wrapped,
            public_key,
        })
    }

    /// Unwraps a stored key; a key moved to another purpose, version or id does not open.
    pub fn unwrap(&self, key: &WrappedKey) -> Result<PurposeKey, CryptoError> {
        let material = self.0.open(
            &wrap_context(key.purpose, key.version, &key.key_id),
            &key.wrapped,
        )?;
        match key.purpose.algorithm() {
            Algorithm::Ed25519 => {
                let signer =
                    Ed25519Signer::from_seed(&key_prefix(key.purpose, key.version), &material)?;
                if signer.key_id() != key.key_id {
                    return Err(CryptoError::BadKey("key id does not match the key"));
                }
                Ok(PurposeKey::Signing(signer))
            }
            Algorithm::Aes256Gcm => Ok(PurposeKey::Data(DataKey::new(
                key.key_id.clone(),
                key.version,
                &material,
            )?)),
        }
    }
}

fn key_prefix(purpose: Purpose, version: u32) -> String {
    format!("{}-v{version}", purpose.as_str())
}

fn wrap_context(purpose: Purpose, version: u32, key_id: &str) -> Vec<u8> {
    context(&["keyring", purpose.as_str(), &version.to_string(), key_id])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canary_detects_a_wrong_master_key() {
        let a = Kek::from_master(&MasterKey::from_bytes([1; 32])).unwrap();
        let b = Kek::from_master(&MasterKey::from_bytes([2; 32])).unwrap();
        let canary = a.make_canary().unwrap();
        assert!(a.check_canary(&canary).is_ok());
        assert!(matches!(
            b.check_canary(&canary),
            Err(CryptoError::WrongMasterKey)
        ));
    }

    #[test]
    fn wrapped_keys_open_only_under_their_master_and_identity() {
        let a = Kek::from_master(&MasterKey::from_bytes([1; 32])).unwrap();
        let b = Kek::from_master(&MasterKey::from_bytes([2; 32])).unwrap();
        let k = a.generate(Purpose::Audit, 1).unwrap();
        assert!(matches!(a.unwrap(&k).unwrap(), PurposeKey::Signing(_)));
        assert!(b.unwrap(&k).is_err());
        let mut moved = k.clone();
        moved.version = 2;
        assert!(a.unwrap(&moved).is_err());
    }
}
