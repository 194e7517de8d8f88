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

/// Encodings of the eight points of small order (with the sign bit cleared), as published with
/// libsodium's `has_small_order` check; byte 31 is compared under `0x7f`.
const SMALL_ORDER: [[u8; 32]; 5] = [
    // 0 (order 4) and 1 (order 1, the identity).
    [0; 32],
    [
        1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0,
    ],
    // The two y coordinates of the points of order 8.
    [
        0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98,
        0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53,
        0xfc, 0x05,
    ],
    [
        0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67,
        0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac,
        0x03, 0x7a,
    ],
    // p - 1 (order 2).
    [
        0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
];

/// Whether a 32-byte Ed25519 point encoding is canonical (y < p = 2^255 - 19) and not of small
/// order. A small-order public key lets anyone forge signatures that verify under it, and
/// non-canonical encodings give one point several byte strings.
pub fn ed25519_point_is_strong(encoded: &[u8]) -> bool {
    let Ok(bytes) = <[u8; 32]>::try_from(encoded) else {
        return false;
    };
    let mut y = bytes;
    y[31] &= 0x7f;
    // y >= p: byte 31 is 0x7f, bytes 30..1 are 0xff and byte 0 is at least 0xed.
    let non_canonical = y[31] == 0x7f && y[1..31].iter().all(|b| *b == 0xff) && y[0] >= 0xed;
    !non_canonical && !SMALL_ORDER.contains(&y)
}

/// Ed25519 verification that also refuses a weak public key or a weak `R` (the first half of
/// the signature): what "strict" verification adds to RFC 8032's equation.
pub fn verify_ed25519_strict(
    public_key: &[u8],
    msg: &[u8],
    signature: &[u8],
) -> Result<(), CryptoError> {
    let r = signature.get(..32).ok_or(CryptoError::BadSignature)?;
    if !ed25519_point_is_strong(public_key) || !ed25519_point_is_strong(r) {
        return Err(CryptoError::BadSignature);
    }
    verify_ed25519(public_key, msg, signature)
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

    #[test]
    fn p2_small_order_and_non_canonical_points_are_weak_and_forge_nothing() {
        let identity = SMALL_ORDER[1];
        assert!(!ed25519_point_is_strong(&identity));
        let mut with_sign = identity;
        with_sign[31] |= 0x80;
        assert!(
            !ed25519_point_is_strong(&with_sign),
            "the sign bit does not hide it"
        );
        // p + 1, a non-canonical encoding of 1.
        let mut p_plus_1 = [0xff; 32];
        p_plus_1[0] = 0xee;
        p_plus_1[31] = 0x7f;
        assert!(!ed25519_point_is_strong(&p_plus_1));
        assert!(!ed25519_point_is_strong(&[1; 31]), "wrong length");
        let real = Ed25519Signer::from_seed("k-v1", &[9; 32]).unwrap();
        assert!(ed25519_point_is_strong(real.public_key()));
        // The forgery a small-order key allows: R = identity, s = 0 "signs" any message.
        let mut forged = identity.to_vec();
        forged.extend([0; 32]);
        assert!(verify_ed25519_strict(&identity, b"any message", &forged).is_err());
        let sig = real.sign(b"m");
        assert!(verify_ed25519_strict(real.public_key(), b"m", &sig).is_ok());
        assert!(verify_ed25519_strict(real.public_key(), b"n", &sig).is_err());
    }
}
