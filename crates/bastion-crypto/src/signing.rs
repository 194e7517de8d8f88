//! Ed25519 signing keys (audit checkpoints) and verification against a public key.

use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

use crate::CryptoError;

/// An Ed25519 key pair with its id. The seed stays inside aws-lc.
pub struct Ed25519Signer {
    key_id: String,
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for Ed25519Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ed25519Signer")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl Ed25519Signer {
    /// Builds the pair from a 32-byte seed; the key id is `{prefix}-{first 8 hex of SHA-256(public key)}`.
    pub fn from_seed(prefix: &str, seed: &[u8]) -> Result<Self, CryptoError> {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed)
            .map_err(|_| CryptoError::BadKey("Ed25519 seed must be 32 bytes"))?;
        let key_id = format!(
            "{prefix}-{}",
            &hex::encode(crate::sha256(pair.public_key().as_ref()))[..8]
        );
        Ok(Self { key_id, pair })
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn public_key(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        self.pair.sign(msg).as_ref().to_vec()
    }
}

/// Verifies an Ed25519 signature.
pub fn verify_ed25519(public_key: &[u8], msg: &[u8], signature: &[u8]) -> Result<(), CryptoError> {
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(msg, signature)
        .map_err(|_| CryptoError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_forgery() {
        let s = Ed25519Signer::from_seed("audit-v1", &[5; 32]).unwrap();
        let sig = s.sign(b"checkpoint");
        assert!(verify_ed25519(s.public_key(), b"checkpoint", &sig).is_ok());
        assert!(verify_ed25519(s.public_key(), b"checkpoinT", &sig).is_err());
        let other = Ed25519Signer::from_seed("audit-v1", &[6; 32]).unwrap();
        assert!(verify_ed25519(other.public_key(), b"checkpoint", &sig).is_err());
        assert!(s.key_id().starts_with("audit-v1-"));
    }
}
