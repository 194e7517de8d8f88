//! Cryptographic building blocks of Bastion, all on one backend (aws-lc-rs).
//!
//! - [`master`]: the 256-bit master key, kept apart from the database.
//! - [`envelope`]: AES-256-GCM envelopes that carry their key id and version, bound to a context.
//! - [`jwt`]: token signing keys (RS256, ES256, EdDSA), JWKS and verification.
//! - [`keyring`]: per-purpose keys wrapped by the master key, with ids, versions and a canary.
//! - [`license`]: signed license keys, machine certificates and revocation lists (offline).
//! - [`password`]: Argon2id and bcrypt password hashes, with upgrade detection.
//! - [`signing`]: Ed25519 signing keys (audit checkpoints) and verification.
//!
//! This crate never depends on a server runtime or a database driver: desktop apps link it.

pub mod envelope;
pub mod jwt;
pub mod keyring;
pub mod license;
pub mod master;
pub mod password;
pub mod signing;

use aws_lc_rs::digest;

/// Errors from cryptographic operations. They never carry key material or plaintext.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("the master key must be 32 bytes, given as 64 hex characters or base64")]
    BadMasterKeyEncoding,
    #[error("the master key does not open this database's key ring (canary check failed)")]
    WrongMasterKey,
    #[error("ciphertext is malformed: {0}")]
    Malformed(&'static str),
    #[error("ciphertext does not authenticate under key {key_id} v{version} and this context")]
    Unauthentic { key_id: String, version: u32 },
    #[error("no key {key_id} v{version} in the key ring")]
    UnknownKey { key_id: String, version: u32 },
    #[error("signature is invalid")]
    BadSignature,
    #[error("key material is invalid: {0}")]
    BadKey(&'static str),
    #[error("the system random generator failed")]
    Random,
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Incremental SHA-256, for canonical encodings written field by field.
pub struct Sha256(digest::Context);

impl Default for Sha256 {
    fn default() -> Self {
        Self(digest::Context::new(&digest::SHA256))
    }
}

impl Sha256 {
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    pub fn finish(self) -> [u8; 32] {
        let d = self.0.finish();
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        out
    }
}

/// Fills `buf` from the operating system's CSPRNG.
pub fn random_bytes(buf: &mut [u8]) -> Result<(), CryptoError> {
    aws_lc_rs::rand::fill(buf).map_err(|_| CryptoError::Random)
}

/// Constant-time equality for secrets and MACs; lengths are compared first (lengths are public).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}
