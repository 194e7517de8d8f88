//! The master key: 256 bits from `BASTION_MASTER_KEY` or a 0600 file, never stored in the database.

use aws_lc_rs::hkdf;
use base64::Engine;
use secrecy::{ExposeSecret, SecretBox};
use zeroize::Zeroize;

use crate::CryptoError;

/// The 256-bit master key. `Debug` is redacted by `secrecy`; memory is zeroized on drop.
pub struct MasterKey(SecretBox<[u8; 32]>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey([REDACTED])")
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(SecretBox::new(Box::new(bytes)))
    }

    /// A fresh key from the OS CSPRNG.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut k = [0u8; 32];
        crate::random_bytes(&mut k)?;
        let key = Self::from_bytes(k);
        k.zeroize();
        Ok(key)
    }

    /// Parses 64 hex characters or standard/URL-safe base64 of exactly 32 bytes (whitespace trimmed).
    pub fn parse(encoded: &str) -> Result<Self, CryptoError> {
        let s = encoded.trim();
        let mut bytes = if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(s).map_err(|_| CryptoError::BadMasterKeyEncoding)?
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s))
                .map_err(|_| CryptoError::BadMasterKeyEncoding)?
        };
        let out =
            <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| CryptoError::BadMasterKeyEncoding);
        bytes.zeroize();
        out.map(Self::from_bytes)
    }

    /// Hex encoding for writing the key file. The caller must treat the result as a secret.
    pub fn to_hex(&self) -> secrecy::SecretString {
        hex::encode(self.0.expose_secret()).into()
    }

    /// Derives a 256-bit sub-key for `label` (HKDF-SHA256, salt fixed per application).
    pub(crate) fn derive(&self, label: &[u8]) -> Result<[u8; 32], CryptoError> {
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"bastion.master.v1");
        let prk = salt.extract(self.0.expose_secret());
        let info = [label];
        let okm = prk
            .expand(&info, hkdf::HKDF_SHA256)
            .map_err(|_| CryptoError::BadKey("hkdf expand"))?;
        let mut out = [0u8; 32];
        okm.fill(&mut out)
            .map_err(|_| CryptoError::BadKey("hkdf fill"))?;
        Ok(out)
    }

    /// A short, non-secret fingerprint so operators can tell two master keys apart.
    pub fn fingerprint(&self) -> Result<String, CryptoError> {
        let mut d = self.derive(b"fingerprint")?;
        let fp = hex::encode(&d[..6]);
        d.zeroize();
        Ok(fp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hex_and_base64_and_rejects_wrong_lengths() {
        let hex_key = "00".repeat(32);
        assert!(MasterKey::parse(&hex_key).is_ok());
        let b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert!(MasterKey::parse(&b64).is_ok());
        assert!(MasterKey::parse("00").is_err());
        assert!(
            MasterKey::parse(&base64::engine::general_purpose::STANDARD.encode([7u8; 31])).is_err()
        );
        assert!(MasterKey::parse("not a key").is_err());
    }

    #[test]
    fn debug_is_redacted() {
        let k = MasterKey::from_bytes([0xAB; 32]);
        let dbg = format!("{k:?}");
        assert!(!dbg.to_lowercase().contains("ab"), "{dbg}");
    }

    #[test]
    fn different_keys_have_different_fingerprints() {
        let a = MasterKey::from_bytes([1; 32]).fingerprint().unwrap();
        let b = MasterKey::from_bytes([2; 32]).fingerprint().unwrap();
        assert_ne!(a, b);
    }
}
