//! Per-purpose keys wrapped by the master key, and the canary that detects a wrong master key.
//!
//! Each purpose (audit checkpoints, access-token signing, refresh-token derivation, …) has its
//! own random keys, so a key for one purpose never opens another's data (SPEC S2). The key ring
//! stores them wrapped (AES-256-GCM) under a key-encryption key derived from the master key,
//! bound to their purpose, version, id and algorithm.

use aws_lc_rs::hmac;
use zeroize::Zeroizing;

use crate::CryptoError;
use crate::envelope::{DataKey, context};
use crate::jwt::{JwtAlgorithm, JwtSigningKey};
use crate::license::LicenseSigner;
use crate::master::MasterKey;
use crate::signing::Ed25519Signer;

const CANARY_PLAINTEXT: &[u8] = b"bastion key-ring canary v1";

/// What a key is for. Adding a purpose never changes the keys of another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Purpose {
    /// Ed25519 keys that sign audit checkpoints.
    Audit,
    /// Keys that sign access tokens (JWT; RS256 by default).
    Tokens,
    /// HMAC keys that derive each refresh token's successor from it (no token is stored).
    Refresh,
    /// AES-256-GCM keys that seal queued email, which may carry a magic link.
    Mail,
    /// AES-256-GCM keys that seal org project secrets.
    Secrets,
    /// AES-256-GCM keys that seal tokens of connected integrations.
    Integrations,
    /// AES-256-GCM keys that seal OAuth refresh tokens from social sign-in providers.
    OauthTokens,
    /// AES-256-GCM keys that seal AI-provider API keys.
    AiKeys,
    /// AES-256-GCM keys that seal webhook signing secrets.
    Webhooks,
    /// AES-256-GCM keys that seal the responses kept for idempotent retries (SPEC P4).
    Idempotency,
    /// Keys that sign license keys, machine certificates and revocation lists (RS256 by default,
    /// EdDSA for shorter keys; SPEC L1).
    Licenses,
    /// The HMAC pepper under which license keys and machine identifiers are stored (SPEC L3).
    /// Stored hashes depend on it, so it is never rotated.
    LicenseLookup,
}

/// The algorithm of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlgorithm {
    Ed25519,
    Aes256Gcm,
    HmacSha256,
    Jwt(JwtAlgorithm),
}

impl KeyAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ed25519 => "Ed25519",
            Self::Aes256Gcm => "AES-256-GCM",
            Self::HmacSha256 => "HMAC-SHA256",
            Self::Jwt(a) => a.as_str(),
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Ed25519" => Some(Self::Ed25519),
            "AES-256-GCM" => Some(Self::Aes256Gcm),
            "HMAC-SHA256" => Some(Self::HmacSha256),
            other => JwtAlgorithm::parse(other).map(Self::Jwt),
        }
    }
}

impl Purpose {
    pub const ALL: &'static [Purpose] = &[
        Purpose::Audit,
        Purpose::Tokens,
        Purpose::Refresh,
        Purpose::Mail,
        Purpose::Secrets,
        Purpose::Integrations,
        Purpose::OauthTokens,
        Purpose::AiKeys,
        Purpose::Webhooks,
        Purpose::Idempotency,
        Purpose::Licenses,
        Purpose::LicenseLookup,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Audit => "audit",
            Self::Tokens => "tokens",
            Self::Refresh => "refresh",
            Self::Mail => "mail",
            Self::Secrets => "secrets",
            Self::Integrations => "integrations",
            Self::OauthTokens => "oauth_tokens",
            Self::AiKeys => "ai_keys",
            Self::Webhooks => "webhooks",
            Self::Idempotency => "idempotency",
            Self::Licenses => "licenses",
            Self::LicenseLookup => "license_lookup",
        }
    }

    /// Whether this purpose's keys seal data (AES-256-GCM envelopes), so rewrap and retire apply.
    pub fn seals_data(self) -> bool {
        self.default_algorithm() == KeyAlgorithm::Aes256Gcm
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|p| p.as_str() == s)
    }

    /// The algorithm new keys of this purpose use unless configured otherwise.
    pub fn default_algorithm(self) -> KeyAlgorithm {
        match self {
            Self::Audit => KeyAlgorithm::Ed25519,
            Self::Tokens | Self::Licenses => KeyAlgorithm::Jwt(JwtAlgorithm::Rs256),
            Self::Refresh | Self::LicenseLookup => KeyAlgorithm::HmacSha256,
            Self::Mail
            | Self::Secrets
            | Self::Integrations
            | Self::OauthTokens
            | Self::AiKeys
            | Self::Webhooks
            | Self::Idempotency => KeyAlgorithm::Aes256Gcm,
        }
    }

    /// Whether `alg` may serve this purpose.
    pub fn accepts(self, alg: KeyAlgorithm) -> bool {
        matches!(
            (self, alg),
            (Self::Audit, KeyAlgorithm::Ed25519)
                | (Self::Tokens, KeyAlgorithm::Jwt(_))
                | (
                    Self::Licenses,
                    KeyAlgorithm::Jwt(JwtAlgorithm::Rs256 | JwtAlgorithm::EdDsa)
                )
                | (
                    Self::Refresh | Self::LicenseLookup,
                    KeyAlgorithm::HmacSha256
                )
                | (
                    Self::Mail
                        | Self::Secrets
                        | Self::Integrations
                        | Self::OauthTokens
                        | Self::AiKeys
                        | Self::Webhooks
                        | Self::Idempotency,
                    KeyAlgorithm::Aes256Gcm
                )
        )
    }
}

/// A purpose key as the database keeps it: wrapped, with its public half where it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    pub purpose: Purpose,
    pub version: u32,
    pub key_id: String,
    pub algorithm: KeyAlgorithm,
    pub wrapped: Vec<u8>,
    pub public_key: Option<Vec<u8>>,
}

/// An unwrapped purpose key, ready for use.
pub enum PurposeKey {
    Signing(Ed25519Signer),
    Data(DataKey),
    // Boxed: an HMAC key and a JWT key are far larger than the others.
    Mac(Box<hmac::Key>),
    Jwt(Box<JwtSigningKey>),
    License(Box<LicenseSigner>),
}

impl std::fmt::Debug for PurposeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Signing(s) => s.fmt(f),
            Self::Data(d) => d.fmt(f),
            Self::Mac(_) => f.write_str("Mac([REDACTED])"),
            Self::Jwt(j) => j.fmt(f),
            Self::License(l) => l.fmt(f),
        }
    }
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

    /// Generates version `version` of `purpose`'s key with `algorithm` and returns it wrapped.
    pub fn generate(
        &self,
        purpose: Purpose,
        version: u32,
        algorithm: KeyAlgorithm,
    ) -> Result<WrappedKey, CryptoError> {
        if !purpose.accepts(algorithm) {
            return Err(CryptoError::BadKey("algorithm does not fit the purpose"));
        }
        let prefix = key_prefix(purpose, version);
        let material: Zeroizing<Vec<u8>> = match algorithm {
            KeyAlgorithm::Jwt(alg) => alg.generate_pkcs8()?,
            _ => {
                let mut m = Zeroizing::new(vec![0u8; 32]);
                crate::random_bytes(&mut m)?;
                m
            }
        };
        let (key_id, public_key) = match open_material(purpose, algorithm, version, &material)? {
            PurposeKey::Signing(s) => (s.key_id().to_owned(), Some(s.public_key().to_vec())),
            PurposeKey::Jwt(j) => (j.kid().to_owned(), None),
            PurposeKey::License(l) => (l.kid().to_owned(), None),
            PurposeKey::Data(_) | PurposeKey::Mac(_) => {
                // Hashed incrementally so no unzeroized copy of the material is made.
                let mut h = crate::Sha256::default();
                h.update(b"key-id");
                h.update(&material);
                (format!("{prefix}-{}", &hex::encode(h.finish())[..8]), None)
            }
        };
        let wrapped = self.0.seal(
            &wrap_context(purpose, version, &key_id, algorithm),
            &material,
        )?;
        Ok(WrappedKey {
            purpose,
            version,
            key_id,
            algorithm,
            wrapped,
            public_key,
        })
    }

    /// Re-wraps `key` under `to` (master-key rotation): the key itself, its id and its version
    /// stay; only the wrapping changes. The material never leaves zeroizing memory.
    pub fn rewrap(&self, to: &Kek, key: &WrappedKey) -> Result<WrappedKey, CryptoError> {
        let ctx = wrap_context(key.purpose, key.version, &key.key_id, key.algorithm);
        let material = self.0.open(&ctx, &key.wrapped)?;
        // Prove the material is what the record says before trusting it under the new key.
        self.unwrap(key)?;
        Ok(WrappedKey {
            wrapped: to.0.seal(&ctx, &material)?,
            ..key.clone()
        })
    }

    /// Unwraps a stored key; a key moved to another purpose, version, id or algorithm does not open.
    pub fn unwrap(&self, key: &WrappedKey) -> Result<PurposeKey, CryptoError> {
        let material = self.0.open(
            &wrap_context(key.purpose, key.version, &key.key_id, key.algorithm),
            &key.wrapped,
        )?;
        let opened = open_material(key.purpose, key.algorithm, key.version, &material)?;
        let derived_id = match &opened {
            PurposeKey::Signing(s) => Some(s.key_id()),
            PurposeKey::Jwt(j) => Some(j.kid()),
            PurposeKey::License(l) => Some(l.kid()),
            PurposeKey::Data(_) | PurposeKey::Mac(_) => None,
        };
        if derived_id.is_some_and(|id| id != key.key_id) {
            return Err(CryptoError::BadKey("key id does not match the key"));
        }
        Ok(opened)
    }
}

fn open_material(
    purpose: Purpose,
    algorithm: KeyAlgorithm,
    version: u32,
    material: &[u8],
) -> Result<PurposeKey, CryptoError> {
    if !purpose.accepts(algorithm) {
        return Err(CryptoError::BadKey("algorithm does not fit the purpose"));
    }
    let prefix = &key_prefix(purpose, version);
    Ok(match algorithm {
        KeyAlgorithm::Ed25519 => PurposeKey::Signing(Ed25519Signer::from_seed(prefix, material)?),
        // The envelope names the key `<purpose>-v<N>` and carries N, so a reader finds it by id.
        KeyAlgorithm::Aes256Gcm => PurposeKey::Data(DataKey::new(prefix, version, material)?),
        KeyAlgorithm::HmacSha256 => {
            PurposeKey::Mac(Box::new(hmac::Key::new(hmac::HMAC_SHA256, material)))
        }
        KeyAlgorithm::Jwt(alg) if purpose == Purpose::Licenses => {
            PurposeKey::License(Box::new(LicenseSigner::from_pkcs8(alg, prefix, material)?))
        }
        KeyAlgorithm::Jwt(alg) => {
            PurposeKey::Jwt(Box::new(JwtSigningKey::from_pkcs8(alg, prefix, material)?))
        }
    })
}

fn key_prefix(purpose: Purpose, version: u32) -> String {
    format!("{}-v{version}", purpose.as_str())
}

fn wrap_context(purpose: Purpose, version: u32, key_id: &str, algorithm: KeyAlgorithm) -> Vec<u8> {
    context(&[
        "keyring",
        purpose.as_str(),
        &version.to_string(),
        key_id,
        algorithm.as_str(),
    ])
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
    fn s2_wrapped_keys_open_only_under_their_master_purpose_and_identity() {
        let a = Kek::from_master(&MasterKey::from_bytes([1; 32])).unwrap();
        let b = Kek::from_master(&MasterKey::from_bytes([2; 32])).unwrap();
        for purpose in Purpose::ALL {
            let k = a
                .generate(*purpose, 1, purpose.default_algorithm())
                .unwrap();
            assert!(a.unwrap(&k).is_ok(), "{purpose:?}");
            assert!(
                b.unwrap(&k).is_err(),
                "{purpose:?} opened under another master key"
            );
            let mut moved = k.clone();
            moved.version = 2;
            assert!(a.unwrap(&moved).is_err());
            let mut other_purpose = k.clone();
            other_purpose.purpose = if *purpose == Purpose::Audit {
                Purpose::Refresh
            } else {
                Purpose::Audit
            };
            assert!(
                a.unwrap(&other_purpose).is_err(),
                "{purpose:?} key opened for another purpose"
            );
        }
    }

    #[test]
    fn s2_algorithms_must_fit_their_purpose() {
        let a = Kek::from_master(&MasterKey::from_bytes([1; 32])).unwrap();
        assert!(
            a.generate(Purpose::Tokens, 1, KeyAlgorithm::HmacSha256)
                .is_err()
        );
        assert!(
            a.generate(Purpose::Refresh, 1, KeyAlgorithm::Jwt(JwtAlgorithm::EdDsa))
                .is_err()
        );
        let k = a
            .generate(Purpose::Tokens, 1, KeyAlgorithm::Jwt(JwtAlgorithm::EdDsa))
            .unwrap();
        assert!(k.key_id.starts_with("tokens-v1-"));
        assert!(matches!(a.unwrap(&k).unwrap(), PurposeKey::Jwt(_)));
    }
}
