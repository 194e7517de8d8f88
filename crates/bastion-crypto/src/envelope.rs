//! AES-256-GCM envelopes: `[format][key id][key version][nonce][ciphertext+tag]`.
//!
//! The header is authenticated together with a caller-supplied context (purpose, table, column,
//! row), so a ciphertext copied to another row, column or purpose does not decrypt.
//! Nonces are 96 random bits; callers rotate a key version well before 2^32 encryptions.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use zeroize::Zeroizing;

use crate::CryptoError;

const FORMAT_V1: u8 = 1;
const TAG_LEN: usize = 16;
const MAX_KEY_ID: usize = 64;

/// A symmetric data key with its identity. The raw bytes live only inside aws-lc.
pub struct DataKey {
    key_id: String,
    version: u32,
    key: LessSafeKey,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey")
            .field("key_id", &self.key_id)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl DataKey {
    pub fn new(
        key_id: impl Into<String>,
        version: u32,
        material: &[u8],
    ) -> Result<Self, CryptoError> {
        let key_id = key_id.into();
        if key_id.is_empty() || key_id.len() > MAX_KEY_ID || !key_id.is_ascii() {
            return Err(CryptoError::BadKey("key id must be 1-64 ASCII bytes"));
        }
        let unbound = UnboundKey::new(&AES_256_GCM, material)
            .map_err(|_| CryptoError::BadKey("AES-256 key must be 32 bytes"))?;
        Ok(Self {
            key_id,
            version,
            key: LessSafeKey::new(unbound),
        })
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    /// Encrypts `plaintext` bound to `context` (see [`context`]).
    pub fn seal(&self, context: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        crate::random_bytes(&mut nonce)?;
        let mut out = header(&self.key_id, self.version);
        let header_len = out.len();
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let aad = aad_bytes(&out[..header_len], context);
        let (head, body) = out.split_at_mut(header_len + NONCE_LEN);
        let _ = head;
        let tag = self
            .key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(&aad), body)
            .map_err(|_| CryptoError::Malformed("seal failed"))?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Decrypts an envelope sealed by this key under the same `context`.
    pub fn open(&self, context: &[u8], envelope: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let parsed = EnvelopeHeader::parse(envelope)?;
        if parsed.key_id != self.key_id || parsed.version != self.version {
            return Err(CryptoError::UnknownKey {
                key_id: parsed.key_id.to_owned(),
                version: parsed.version,
            });
        }
        let aad = aad_bytes(&envelope[..parsed.header_len], context);
        let nonce_end = parsed.header_len + NONCE_LEN;
        let nonce = Nonce::try_assume_unique_for_key(&envelope[parsed.header_len..nonce_end])
            .map_err(|_| CryptoError::Malformed("nonce"))?;
        let mut buf = Zeroizing::new(envelope[nonce_end..].to_vec());
        let unauthentic = || CryptoError::Unauthentic {
            key_id: self.key_id.clone(),
            version: self.version,
        };
        let plain_len = self
            .key
            .open_in_place(nonce, Aad::from(&aad), &mut buf)
            .map_err(|_| unauthentic())?
            .len();
        buf.truncate(plain_len);
        Ok(buf)
    }
}

/// The public part of an envelope: which key and version opens it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeHeader<'a> {
    pub key_id: &'a str,
    pub version: u32,
    header_len: usize,
}

impl<'a> EnvelopeHeader<'a> {
    pub fn parse(envelope: &'a [u8]) -> Result<Self, CryptoError> {
        let (&format, rest) = envelope
            .split_first()
            .ok_or(CryptoError::Malformed("empty"))?;
        if format != FORMAT_V1 {
            return Err(CryptoError::Malformed("unknown format version"));
        }
        let (&id_len, rest) = rest
            .split_first()
            .ok_or(CryptoError::Malformed("truncated header"))?;
        let id_len = usize::from(id_len);
        if id_len == 0 || id_len > MAX_KEY_ID || rest.len() < id_len + 4 + NONCE_LEN + TAG_LEN {
            return Err(CryptoError::Malformed("truncated"));
        }
        let key_id =
            std::str::from_utf8(&rest[..id_len]).map_err(|_| CryptoError::Malformed("key id"))?;
        let mut v = [0u8; 4];
        v.copy_from_slice(&rest[id_len..id_len + 4]);
        Ok(Self {
            key_id,
            version: u32::from_be_bytes(v),
            header_len: 2 + id_len + 4,
        })
    }
}

fn header(key_id: &str, version: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + key_id.len() + 4 + NONCE_LEN + 64);
    out.push(FORMAT_V1);
    // DataKey::new bounds the id to 64 bytes, so it fits a u8.
    out.push(u8::try_from(key_id.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(key_id.as_bytes());
    out.extend_from_slice(&version.to_be_bytes());
    out
}

fn aad_bytes(header: &[u8], context: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + context.len());
    aad.extend_from_slice(header);
    aad.extend_from_slice(context);
    aad
}

/// Builds an unambiguous context from parts (each length-prefixed), e.g.
/// `context(&["project_secrets", "secrets", "value", row_id])`.
pub fn context(parts: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        out.extend_from_slice(&(p.len() as u64).to_be_bytes());
        out.extend_from_slice(p.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(v: u32, b: u8) -> DataKey {
        DataKey::new("test", v, &[b; 32]).unwrap()
    }

    #[test]
    fn round_trip_and_context_binding() {
        let k = key(1, 9);
        let ctx = context(&["t", "c", "row1"]);
        let ct = k.seal(&ctx, b"hello").unwrap();
        assert_eq!(&k.open(&ctx, &ct).unwrap()[..], b"hello");
        let moved = context(&["t", "c", "row2"]);
        assert!(matches!(
            k.open(&moved, &ct),
            Err(CryptoError::Unauthentic { .. })
        ));
    }

    #[test]
    fn every_flipped_bit_is_refused() {
        let k = key(1, 9);
        let ct = k.seal(b"ctx", b"secret value").unwrap();
        for i in 0..ct.len() * 8 {
            let mut bad = ct.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(k.open(b"ctx", &bad).is_err(), "bit {i} accepted");
        }
    }

    #[test]
    fn another_key_or_version_is_refused() {
        let ct = key(1, 9).seal(b"ctx", b"x").unwrap();
        assert!(matches!(
            key(1, 8).open(b"ctx", &ct),
            Err(CryptoError::Unauthentic { .. })
        ));
        assert!(matches!(
            key(2, 9).open(b"ctx", &ct),
            Err(CryptoError::UnknownKey { .. })
        ));
    }

    #[test]
    fn context_parts_are_unambiguous() {
        assert_ne!(context(&["ab", "c"]), context(&["a", "bc"]));
    }
}
