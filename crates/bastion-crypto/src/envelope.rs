//! AES-256-GCM envelopes: `[format][key id][key version][nonce][ciphertext+tag]`.
//!
//! The header is authenticated together with a caller-supplied context (purpose, table, column,
//! row), so a ciphertext copied to another row, column or purpose does not decrypt.
//! Nonces are 96 random bits; callers rotate a key version well before 2^32 encryptions.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use zeroize::Zeroize;

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
        self.seal_with(Ctx::Bytes(context), plaintext)
    }

    /// [`DataKey::seal`] with the context given as its parts, encoded as [`context`] encodes
    /// them but without building it on the heap (the vault's hot path).
    pub fn seal_parts(&self, parts: &[&str], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.seal_with(Ctx::Parts(parts), plaintext)
    }

    /// Decrypts an envelope sealed by this key under the same `context`.
    pub fn open(&self, context: &[u8], envelope: &[u8]) -> Result<Plaintext, CryptoError> {
        self.open_with(Ctx::Bytes(context), envelope)
    }

    /// [`DataKey::open`] with the context given as its parts (see [`DataKey::seal_parts`]).
    pub fn open_parts(&self, parts: &[&str], envelope: &[u8]) -> Result<Plaintext, CryptoError> {
        self.open_with(Ctx::Parts(parts), envelope)
    }

    fn seal_with(&self, ctx: Ctx<'_>, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        crate::random_bytes(&mut nonce)?;
        let mut out = header(&self.key_id, self.version, plaintext.len());
        let header_len = out.len();
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let (head, rest) = out.split_at_mut(header_len);
        let body = &mut rest[NONCE_LEN..];
        let tag = ctx
            .with_aad(head, |aad| {
                self.key.seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(aad),
                    body,
                )
            })
            .map_err(|_| CryptoError::Malformed("seal failed"))?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    fn open_with(&self, ctx: Ctx<'_>, envelope: &[u8]) -> Result<Plaintext, CryptoError> {
        self.open_parsed(&EnvelopeHeader::parse(envelope)?, ctx, envelope)
    }

    /// [`DataKey::open_parts`] for a header the caller already parsed from `envelope`.
    pub fn open_parts_with_header(
        &self,
        header: &EnvelopeHeader<'_>,
        parts: &[&str],
        envelope: &[u8],
    ) -> Result<Plaintext, CryptoError> {
        self.open_parsed(header, Ctx::Parts(parts), envelope)
    }

    fn open_parsed(
        &self,
        parsed: &EnvelopeHeader<'_>,
        ctx: Ctx<'_>,
        envelope: &[u8],
    ) -> Result<Plaintext, CryptoError> {
        if parsed.key_id != self.key_id || parsed.version != self.version {
            return Err(CryptoError::UnknownKey {
                key_id: parsed.key_id.to_owned(),
                version: parsed.version,
            });
        }
        // The header may have been parsed by the caller: the envelope must still hold it all.
        if envelope.len() < parsed.header_len + NONCE_LEN + TAG_LEN {
            return Err(CryptoError::Malformed("truncated"));
        }
        let nonce_end = parsed.header_len + NONCE_LEN;
        let nonce = Nonce::try_assume_unique_for_key(&envelope[parsed.header_len..nonce_end])
            .map_err(|_| CryptoError::Malformed("nonce"))?;
        let mut buf = Plaintext(envelope[nonce_end..].to_vec());
        let unauthentic = || CryptoError::Unauthentic {
            key_id: self.key_id.clone(),
            version: self.version,
        };
        let plain_len = ctx
            .with_aad(&envelope[..parsed.header_len], |aad| {
                self.key
                    .open_in_place(nonce, Aad::from(aad), &mut buf.0)
                    .map(|p| p.len())
            })
            .map_err(|_| unauthentic())?;
        buf.0.truncate(plain_len);
        Ok(buf)
    }
}

/// A context as bytes already encoded, or as the parts [`context`] would encode.
#[derive(Clone, Copy)]
enum Ctx<'a> {
    Bytes(&'a [u8]),
    Parts(&'a [&'a str]),
}

impl Ctx<'_> {
    /// Calls `f` with the additional data: `header` then the context. On the stack when it
    /// fits (every context Bastion builds does), else in one exact heap allocation. Public
    /// bytes only, so nothing to zeroize.
    fn with_aad<R>(self, header: &[u8], f: impl FnOnce(&[u8]) -> R) -> R {
        let len = header.len()
            + match self {
                Self::Bytes(b) => b.len(),
                Self::Parts(parts) => parts.iter().map(|p| 8 + p.len()).sum(),
            };
        if len <= AAD_STACK {
            let mut stack = [0u8; AAD_STACK];
            let mut at = 0;
            let mut put = |bytes: &[u8]| {
                stack[at..at + bytes.len()].copy_from_slice(bytes);
                at += bytes.len();
            };
            self.write(header, &mut put);
            f(&stack[..len])
        } else {
            let mut heap = Vec::with_capacity(len);
            self.write(header, &mut |bytes: &[u8]| heap.extend_from_slice(bytes));
            f(&heap)
        }
    }

    fn write(self, header: &[u8], put: &mut impl FnMut(&[u8])) {
        put(header);
        match self {
            Self::Bytes(b) => put(b),
            Self::Parts(parts) => {
                for p in parts {
                    put(&(p.len() as u64).to_be_bytes());
                    put(p.as_bytes());
                }
            }
        }
    }
}

/// Room for a header (≤ 70 bytes) and a context of four parts with ids of a few dozen bytes.
const AAD_STACK: usize = 256;

/// A decrypted value: reads as its bytes, zeroized on drop, redacted in `Debug`.
///
/// Only the plaintext's own bytes are wiped: the spare capacity beyond them holds the
/// authentication tag, which is public (`Zeroizing<Vec>` would wipe it too, at twice the cost
/// on the vault's hot path).
pub struct Plaintext(Vec<u8>);

impl std::ops::Deref for Plaintext {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Plaintext([REDACTED])")
    }
}

impl Drop for Plaintext {
    fn drop(&mut self) {
        self.0.as_mut_slice().zeroize();
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

/// The header, in a buffer with room for the rest of the envelope (no reallocation later).
fn header(key_id: &str, version: u32, plaintext_len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + key_id.len() + 4 + NONCE_LEN + plaintext_len + TAG_LEN);
    out.push(FORMAT_V1);
    // DataKey::new bounds the id to 64 bytes, so it fits a u8.
    out.push(u8::try_from(key_id.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(key_id.as_bytes());
    out.extend_from_slice(&version.to_be_bytes());
    out
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
    fn parts_and_encoded_contexts_are_the_same_binding() {
        let k = key(1, 9);
        let parts = ["secrets", "secrets", "value", "sec_1"];
        let ct = k.seal_parts(&parts, b"v").unwrap();
        assert_eq!(&k.open(&context(&parts), &ct).unwrap()[..], b"v");
        let ct = k.seal(&context(&parts), b"v").unwrap();
        assert_eq!(&k.open_parts(&parts, &ct).unwrap()[..], b"v");
        // A context longer than the stack buffer still binds.
        let long = "r".repeat(600);
        let ct = k.seal_parts(&["p", &long], b"v").unwrap();
        assert_eq!(&k.open_parts(&["p", &long], &ct).unwrap()[..], b"v");
        assert!(k.open_parts(&["p", &long[1..]], &ct).is_err());
    }

    #[test]
    fn context_parts_are_unambiguous() {
        assert_ne!(context(&["ab", "c"]), context(&["a", "bc"]));
    }
}
