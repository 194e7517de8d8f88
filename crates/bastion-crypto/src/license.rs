//! Signed license documents (SPEC L1, L4, C4): license keys, machine certificates and revocation
//! lists, all in one compact, self-describing format that an app verifies offline.
//!
//! A document is `<prefix>.<payload>.<signature>`: the prefix names its kind and format version
//! (`BSTL1` license key, `BSTM1` machine certificate, `BSTR1` revocation list), the payload is
//! base64url (no padding) of a JSON object that names the signing key (`kid`) and algorithm
//! (`alg`), and the signature is base64url of RSASSA-PKCS1-v1_5 SHA-256 (`RS256`) or Ed25519
//! (`EdDSA`) over the ASCII bytes `<prefix>.<payload>`. Because the prefix is signed, a document of
//! one kind never verifies as another. docs/licenses.md specifies it for other languages.

use std::collections::HashMap;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::PublicKeyComponents;
use aws_lc_rs::signature::{self, Ed25519KeyPair, KeyPair, ParsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::CryptoError;
use crate::jwt::JwtAlgorithm;

/// Longest document accepted before any decoding (a pasted key is far shorter).
const MAX_DOCUMENT: usize = 64 * 1024;
/// Most machine components and the longest one (a fingerprint is a few identifiers).
const MAX_COMPONENTS: usize = 16;
const MAX_COMPONENT_LEN: usize = 256;

/// The three kinds of signed document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentKind {
    License,
    Certificate,
    Revocations,
}

impl DocumentKind {
    pub fn prefix(self) -> &'static str {
        match self {
            Self::License => "BSTL1",
            Self::Certificate => "BSTM1",
            Self::Revocations => "BSTR1",
        }
    }
}

/// Why a document was refused. Nothing here carries the document or an email.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LicenseError {
    #[error("not a {0} document (malformed)")]
    Malformed(&'static str),
    #[error("signed by key {0}, which is not among the trusted public keys")]
    UnknownKey(String),
    #[error("the document's algorithm does not match its key")]
    AlgorithmMismatch,
    #[error("the signature does not verify")]
    BadSignature,
    #[error("the license is bound to another email address")]
    EmailMismatch,
    #[error("the certificate was issued for another machine or license")]
    WrongMachine,
    #[error("expired")]
    Expired,
    #[error("issued in the future (check the device clock)")]
    NotYetValid,
    #[error("the license has been revoked")]
    Revoked,
    #[error("invalid public key: {0}")]
    BadPublicKey(&'static str),
    #[error("invalid machine identifiers: {0}")]
    BadMachine(&'static str),
}

/// What a license key says (the signed payload of a `BSTL1` document).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LicenseClaims {
    /// Payload format version (1).
    pub v: u32,
    pub kid: String,
    pub alg: String,
    /// License id (`lic_…`).
    pub lic: String,
    /// Product and policy ids (`prd_…`, `pol_…`).
    pub prd: String,
    pub pol: String,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expiry in Unix seconds; `None` for a perpetual license.
    pub exp: Option<i64>,
    /// Entitlements, sorted.
    pub ent: Vec<String>,
    /// [`email_hash`] of the licensee's email, base64url.
    pub eml: String,
}

/// What a machine certificate says (`BSTM1`): this license may run on this machine until `exp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateClaims {
    pub v: u32,
    pub kid: String,
    pub alg: String,
    pub lic: String,
    /// Machine id (`mch_…`).
    pub mch: String,
    /// [`machine_binding`] of the machine's canonical identifiers, base64url.
    pub mh: String,
    pub ent: Vec<String>,
    pub iat: i64,
    /// End of the offline lease, Unix seconds (never after the license's own expiry).
    pub exp: i64,
}

/// The revoked licenses of a product (`BSTR1`), newest wins by `iat`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationClaims {
    pub v: u32,
    pub kid: String,
    pub alg: String,
    pub prd: String,
    pub iat: i64,
    /// Revoked license ids, sorted.
    pub revoked: Vec<String>,
    /// Deactivated machines (`mch_…`) whose certificates are revoked though their lease has not
    /// ended, sorted. Absent in lists signed before this field existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub machines: Vec<String>,
}

/// Fields every payload carries, read before the signature is checked.
#[derive(Deserialize)]
struct Header {
    kid: String,
    alg: String,
}

/// How far a device clock may be ahead of or behind the issuer when checking `iat` and `exp`.
pub const DEFAULT_SKEW_SECS: i64 = 300;

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// SHA-256 over `label`, then each part preceded by a NUL, so parts cannot run into each other.
fn bound_hash(label: &str, parts: &[&str]) -> String {
    let mut h = crate::Sha256::default();
    h.update(label.as_bytes());
    for p in parts {
        h.update(&[0]);
        h.update(p.as_bytes());
    }
    b64(&h.finish())
}

/// The email a license binds, as both sides compare it: trimmed and lower-cased.
pub fn canonical_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// The email binding inside a license key: salted with the license id so no table of common
/// addresses matches keys in bulk.
pub fn email_hash(license_id: &str, email: &str) -> String {
    bound_hash(
        "bastion-license-email-v1",
        &[license_id, &canonical_email(email)],
    )
}

/// A machine's identifiers in canonical form: each trimmed and case-folded, empty ones dropped,
/// sorted and de-duplicated, joined by newlines. The same machine gives the same string whatever
/// order or case its parts were gathered in.
pub fn canonical_machine(components: &[String]) -> Result<String, LicenseError> {
    if components.len() > MAX_COMPONENTS {
        return Err(LicenseError::BadMachine("at most 16 components"));
    }
    let mut parts = Vec::with_capacity(components.len());
    for c in components {
        let c = c.trim().to_lowercase();
        if c.len() > MAX_COMPONENT_LEN {
            return Err(LicenseError::BadMachine(
                "a component is longer than 256 bytes",
            ));
        }
        if c.chars().any(char::is_control) {
            return Err(LicenseError::BadMachine(
                "a component holds control characters",
            ));
        }
        if !c.is_empty() {
            parts.push(c);
        }
    }
    parts.sort();
    parts.dedup();
    if parts.is_empty() {
        return Err(LicenseError::BadMachine("no non-empty component"));
    }
    Ok(parts.join("\n"))
}

/// What a machine certificate binds: the license and the machine's canonical identifiers. It is
/// not keyed (the app recomputes it offline); the server stores only a keyed hash.
pub fn machine_binding(license_id: &str, canonical_machine: &str) -> String {
    bound_hash("bastion-machine-v1", &[license_id, canonical_machine])
}

fn algorithm_of(alg: &str) -> Option<JwtAlgorithm> {
    match JwtAlgorithm::parse(alg)? {
        JwtAlgorithm::Rs256 => Some(JwtAlgorithm::Rs256),
        JwtAlgorithm::EdDsa => Some(JwtAlgorithm::EdDsa),
        JwtAlgorithm::Es256 => None,
    }
}

enum SignerKey {
    Rsa(aws_lc_rs::rsa::KeyPair),
    Ed25519(Ed25519KeyPair),
}

/// A license-signing key (private half inside aws-lc) with its id.
pub struct LicenseSigner {
    kid: String,
    alg: JwtAlgorithm,
    key: SignerKey,
    public: LicensePublicKey,
}

impl std::fmt::Debug for LicenseSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LicenseSigner")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl LicenseSigner {
    /// Loads a PKCS#8 key (RS256 or EdDSA); the id is `{prefix}-{8 hex of SHA-256(public key)}`.
    pub fn from_pkcs8(
        alg: JwtAlgorithm,
        kid_prefix: &str,
        pkcs8: &[u8],
    ) -> Result<Self, CryptoError> {
        let bad = |_| CryptoError::BadKey("not a PKCS#8 key of the expected algorithm");
        let (key, raw_public, jwk) = match alg {
            JwtAlgorithm::Rs256 => {
                let kp = aws_lc_rs::rsa::KeyPair::from_pkcs8(pkcs8).map_err(bad)?;
                let public = kp.public_key();
                let raw = public.as_ref().to_vec();
                let jwk = PublicJwk::Rsa {
                    n: b64(public.modulus().big_endian_without_leading_zero()),
                    e: b64(public.exponent().big_endian_without_leading_zero()),
                };
                (SignerKey::Rsa(kp), raw, jwk)
            }
            JwtAlgorithm::EdDsa => {
                let kp = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(bad)?;
                let raw = kp.public_key().as_ref().to_vec();
                let jwk = PublicJwk::Okp {
                    crv: "Ed25519".into(),
                    x: b64(&raw),
                };
                (SignerKey::Ed25519(kp), raw, jwk)
            }
            JwtAlgorithm::Es256 => {
                return Err(CryptoError::BadKey("licenses sign with RS256 or EdDSA"));
            }
        };
        let kid = format!(
            "{kid_prefix}-{}",
            &hex::encode(crate::sha256(&raw_public))[..8]
        );
        let public = LicensePublicKey {
            kid: kid.clone(),
            alg: alg.as_str().to_owned(),
            jwk,
        };
        Ok(Self {
            kid,
            alg,
            key,
            public,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn algorithm(&self) -> JwtAlgorithm {
        self.alg
    }

    /// The public key an app ships to verify what this key signs.
    pub fn public_key(&self) -> &LicensePublicKey {
        &self.public
    }

    fn sign_bytes(&self, msg: &[u8]) -> Result<Vec<u8>, CryptoError> {
        match &self.key {
            SignerKey::Rsa(kp) => {
                let mut sig = vec![0u8; kp.public_modulus_len()];
                kp.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    msg,
                    &mut sig,
                )
                .map_err(|_| CryptoError::BadKey("RSA signing failed"))?;
                Ok(sig)
            }
            SignerKey::Ed25519(kp) => Ok(kp.sign(msg).as_ref().to_vec()),
        }
    }

    /// Signs `claims` as a document of `kind`. The claims must carry this key's `kid` and `alg`
    /// (use [`LicenseSigner::kid`] and [`LicenseSigner::alg_name`] when building them).
    pub fn sign<C: Serialize>(
        &self,
        kind: DocumentKind,
        claims: &C,
    ) -> Result<String, CryptoError> {
        let json = serde_json::to_vec(claims).map_err(|_| CryptoError::Malformed("claims"))?;
        let mut doc = format!("{}.{}", kind.prefix(), b64(&json));
        let sig = self.sign_bytes(doc.as_bytes())?;
        doc.push('.');
        doc.push_str(&b64(&sig));
        Ok(doc)
    }

    /// The `alg` value documents signed by this key carry.
    pub fn alg_name(&self) -> &'static str {
        self.alg.as_str()
    }
}

/// A public key in the JWK members that identify it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kty")]
pub enum PublicJwk {
    #[serde(rename = "RSA")]
    Rsa { n: String, e: String },
    #[serde(rename = "OKP")]
    Okp { crv: String, x: String },
}

/// A license public key as apps ship it: a JWK with `kid` and `alg`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LicensePublicKey {
    pub kid: String,
    pub alg: String,
    #[serde(flatten)]
    pub jwk: PublicJwk,
}

/// The public keys an app trusts, by id: parsed once, so each verification only verifies.
pub struct PublicKeySet {
    keys: HashMap<String, (JwtAlgorithm, ParsedPublicKey)>,
}

impl std::fmt::Debug for PublicKeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<_> = self.keys.keys().collect();
        ids.sort();
        f.debug_struct("PublicKeySet").field("kids", &ids).finish()
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum KeysFile {
    Set { keys: Vec<LicensePublicKey> },
    One(LicensePublicKey),
}

impl PublicKeySet {
    pub fn new(keys: &[LicensePublicKey]) -> Result<Self, LicenseError> {
        let mut map = HashMap::with_capacity(keys.len());
        for k in keys {
            let alg = algorithm_of(&k.alg)
                .ok_or(LicenseError::BadPublicKey("alg must be RS256 or EdDSA"))?;
            let decode = |s: &str| {
                URL_SAFE_NO_PAD
                    .decode(s)
                    .map_err(|_| LicenseError::BadPublicKey("not base64url"))
            };
            let parsed = match (&k.jwk, alg) {
                (PublicJwk::Rsa { n, e }, JwtAlgorithm::Rs256) => {
                    let der = PublicKeyComponents {
                        n: decode(n)?,
                        e: decode(e)?,
                    }
                    .as_der()
                    .map_err(|_| LicenseError::BadPublicKey("RSA n/e"))?;
                    ParsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, der.as_ref())
                        .map_err(|_| LicenseError::BadPublicKey("RSA key rejected"))?
                }
                (PublicJwk::Okp { crv, x }, JwtAlgorithm::EdDsa) if crv == "Ed25519" => {
                    ParsedPublicKey::new(&signature::ED25519, decode(x)?)
                        .map_err(|_| LicenseError::BadPublicKey("Ed25519 key rejected"))?
                }
                _ => return Err(LicenseError::BadPublicKey("key type does not match alg")),
            };
            map.insert(k.kid.clone(), (alg, parsed));
        }
        Ok(Self { keys: map })
    }

    /// Reads `{"keys": [...]}` or a single key object (what `bastion license public-keys` prints).
    pub fn from_json(json: &str) -> Result<Self, LicenseError> {
        match serde_json::from_str::<KeysFile>(json) {
            Ok(KeysFile::Set { keys }) => Self::new(&keys),
            Ok(KeysFile::One(k)) => Self::new(&[k]),
            Err(_) => Err(LicenseError::BadPublicKey(
                "expected a JWK or {\"keys\": [...]}",
            )),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks a document's form, key and signature and returns its payload. No claim is
    /// interpreted here; the typed verifiers below do that.
    pub fn verify_document<C: DeserializeOwned>(
        &self,
        kind: DocumentKind,
        document: &str,
    ) -> Result<C, LicenseError> {
        let what = match kind {
            DocumentKind::License => "license key",
            DocumentKind::Certificate => "machine certificate",
            DocumentKind::Revocations => "revocation list",
        };
        let malformed = || LicenseError::Malformed(what);
        let document = document.trim();
        if document.len() > MAX_DOCUMENT {
            return Err(malformed());
        }
        let (signed, sig_b64) = document.rsplit_once('.').ok_or_else(malformed)?;
        let (prefix, payload_b64) = signed.split_once('.').ok_or_else(malformed)?;
        if prefix != kind.prefix() {
            return Err(malformed());
        }
        let payload = URL_SAFE_NO_PAD
            .decode(payload_b64)
            .map_err(|_| malformed())?;
        let sig = URL_SAFE_NO_PAD.decode(sig_b64).map_err(|_| malformed())?;
        let header: Header = serde_json::from_slice(&payload).map_err(|_| malformed())?;
        let (alg, key) = self
            .keys
            .get(&header.kid)
            .ok_or_else(|| LicenseError::UnknownKey(header.kid.clone()))?;
        if alg.as_str() != header.alg {
            return Err(LicenseError::AlgorithmMismatch);
        }
        key.verify_sig(signed.as_bytes(), &sig)
            .map_err(|_| LicenseError::BadSignature)?;
        serde_json::from_slice(&payload).map_err(|_| malformed())
    }

    /// Verifies a license key offline (C4): signature by a trusted key, bound to `email` when
    /// given, and not expired at `now_s` (with `skew_s` of tolerance either way).
    pub fn verify_license(
        &self,
        key: &str,
        email: Option<&str>,
        now_s: i64,
        skew_s: i64,
    ) -> Result<LicenseClaims, LicenseError> {
        let claims: LicenseClaims = self.verify_document(DocumentKind::License, key)?;
        if claims.v != 1 {
            return Err(LicenseError::Malformed("license key"));
        }
        if let Some(email) = email
            && !crate::ct_eq(
                email_hash(&claims.lic, email).as_bytes(),
                claims.eml.as_bytes(),
            )
        {
            return Err(LicenseError::EmailMismatch);
        }
        if claims.iat > now_s.saturating_add(skew_s) {
            return Err(LicenseError::NotYetValid);
        }
        if claims
            .exp
            .is_some_and(|exp| now_s > exp.saturating_add(skew_s))
        {
            return Err(LicenseError::Expired);
        }
        Ok(claims)
    }

    /// Verifies a machine certificate offline (L4): signed by a trusted key, for `license_id`
    /// and for the machine whose canonical identifiers are `canonical_machine`, within its lease.
    pub fn verify_certificate(
        &self,
        certificate: &str,
        license_id: &str,
        canonical_machine: &str,
        now_s: i64,
        skew_s: i64,
    ) -> Result<CertificateClaims, LicenseError> {
        let claims: CertificateClaims =
            self.verify_document(DocumentKind::Certificate, certificate)?;
        if claims.v != 1 {
            return Err(LicenseError::Malformed("machine certificate"));
        }
        let binding = machine_binding(license_id, canonical_machine);
        if claims.lic != license_id || !crate::ct_eq(binding.as_bytes(), claims.mh.as_bytes()) {
            return Err(LicenseError::WrongMachine);
        }
        if claims.iat > now_s.saturating_add(skew_s) {
            return Err(LicenseError::NotYetValid);
        }
        if now_s > claims.exp.saturating_add(skew_s) {
            return Err(LicenseError::Expired);
        }
        Ok(claims)
    }

    /// Verifies a revocation list; callers keep the newest by `iat` so an old list cannot be
    /// replayed to un-revoke a license.
    pub fn verify_revocations(&self, list: &str) -> Result<RevocationClaims, LicenseError> {
        let claims: RevocationClaims = self.verify_document(DocumentKind::Revocations, list)?;
        if claims.v != 1 {
            return Err(LicenseError::Malformed("revocation list"));
        }
        Ok(claims)
    }
}

impl RevocationClaims {
    pub fn is_revoked(&self, license_id: &str) -> bool {
        self.revoked.iter().any(|l| l == license_id)
    }

    /// Whether a machine certificate is revoked: its license is, or its machine was deactivated.
    pub fn is_certificate_revoked(&self, certificate: &CertificateClaims) -> bool {
        self.is_revoked(&certificate.lic) || self.machines.contains(&certificate.mch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(alg: JwtAlgorithm) -> LicenseSigner {
        let pkcs8 = alg.generate_pkcs8().unwrap();
        LicenseSigner::from_pkcs8(alg, "licenses-v1", &pkcs8).unwrap()
    }

    fn claims(s: &LicenseSigner, exp: Option<i64>) -> LicenseClaims {
        LicenseClaims {
            v: 1,
            kid: s.kid().into(),
            alg: s.alg_name().into(),
            lic: "lic_1".into(),
            prd: "prd_1".into(),
            pol: "pol_1".into(),
            iat: 1_000,
            exp,
            ent: vec!["pro".into()],
            eml: email_hash("lic_1", "Ann@Example.com "),
        }
    }

    #[test]
    fn l1_keys_verify_offline_for_both_algorithms_and_bind_the_email() {
        for alg in [JwtAlgorithm::Rs256, JwtAlgorithm::EdDsa] {
            let s = signer(alg);
            let set = PublicKeySet::new(&[s.public_key().clone()]).unwrap();
            let key = s
                .sign(DocumentKind::License, &claims(&s, Some(5_000)))
                .unwrap();
            assert!(key.starts_with("BSTL1."));
            let c = set
                .verify_license(&key, Some("ann@example.com"), 2_000, 300)
                .unwrap();
            assert_eq!(c.lic, "lic_1");
            assert_eq!(
                set.verify_license(&key, Some("eve@example.com"), 2_000, 300),
                Err(LicenseError::EmailMismatch)
            );
            assert_eq!(
                set.verify_license(&key, None, 5_301, 300),
                Err(LicenseError::Expired)
            );
            assert_eq!(
                set.verify_license(&key, None, 600, 300),
                Err(LicenseError::NotYetValid)
            );
        }
    }

    #[test]
    fn l1_one_flipped_bit_anywhere_is_refused() {
        let s = signer(JwtAlgorithm::EdDsa);
        let set = PublicKeySet::new(&[s.public_key().clone()]).unwrap();
        let key = s.sign(DocumentKind::License, &claims(&s, None)).unwrap();
        for i in 0..key.len() {
            let mut bytes = key.clone().into_bytes();
            bytes[i] ^= 1;
            let Ok(tampered) = String::from_utf8(bytes) else {
                continue;
            };
            assert!(
                set.verify_license(&tampered, None, 2_000, 300).is_err(),
                "bit flip at {i} accepted"
            );
        }
    }

    #[test]
    fn c4_unknown_key_ids_other_kinds_and_swapped_algorithms_are_refused() {
        let s = signer(JwtAlgorithm::EdDsa);
        let other = signer(JwtAlgorithm::EdDsa);
        let set = PublicKeySet::new(&[other.public_key().clone()]).unwrap();
        let key = s.sign(DocumentKind::License, &claims(&s, None)).unwrap();
        assert!(matches!(
            set.verify_license(&key, None, 2_000, 300),
            Err(LicenseError::UnknownKey(_))
        ));
        // Signed by a trusted key but naming another kid: the signature fails under that key.
        let mut c = claims(&s, None);
        c.kid = other.kid().into();
        let forged = s.sign(DocumentKind::License, &c).unwrap();
        assert_eq!(
            set.verify_license(&forged, None, 2_000, 300),
            Err(LicenseError::BadSignature)
        );
        // A license key is not a certificate, even from the right key.
        let set_s = PublicKeySet::new(&[s.public_key().clone()]).unwrap();
        assert!(matches!(
            set_s.verify_certificate(&key, "lic_1", "m", 2_000, 300),
            Err(LicenseError::Malformed(_))
        ));
        let mut wrong_alg = claims(&s, None);
        wrong_alg.alg = "RS256".into();
        let doc = s.sign(DocumentKind::License, &wrong_alg).unwrap();
        assert_eq!(
            set_s.verify_license(&doc, None, 2_000, 300),
            Err(LicenseError::AlgorithmMismatch)
        );
    }

    #[test]
    fn l3_machine_identifiers_are_canonical() {
        let a = canonical_machine(&[" ABC ".into(), "def".into(), "".into()]).unwrap();
        let b = canonical_machine(&["DEF".into(), "abc".into(), "abc".into()]).unwrap();
        assert_eq!(a, b);
        assert!(canonical_machine(&["  ".into()]).is_err());
        assert!(canonical_machine(&["a\u{0}b".into()]).is_err());
    }

    #[test]
    fn l4_certificates_bind_license_machine_and_lease() {
        let s = signer(JwtAlgorithm::Rs256);
        let set = PublicKeySet::new(&[s.public_key().clone()]).unwrap();
        let m = canonical_machine(&["machine-a".into()]).unwrap();
        let c = CertificateClaims {
            v: 1,
            kid: s.kid().into(),
            alg: s.alg_name().into(),
            lic: "lic_1".into(),
            mch: "mch_1".into(),
            mh: machine_binding("lic_1", &m),
            ent: vec![],
            iat: 1_000,
            exp: 10_000,
        };
        let cert = s.sign(DocumentKind::Certificate, &c).unwrap();
        assert!(
            set.verify_certificate(&cert, "lic_1", &m, 5_000, 300)
                .is_ok()
        );
        let other = canonical_machine(&["machine-b".into()]).unwrap();
        assert_eq!(
            set.verify_certificate(&cert, "lic_1", &other, 5_000, 300),
            Err(LicenseError::WrongMachine)
        );
        assert_eq!(
            set.verify_certificate(&cert, "lic_2", &m, 5_000, 300),
            Err(LicenseError::WrongMachine)
        );
        assert_eq!(
            set.verify_certificate(&cert, "lic_1", &m, 10_301, 300),
            Err(LicenseError::Expired)
        );
    }

    #[test]
    fn public_keys_round_trip_through_json() {
        for alg in [JwtAlgorithm::Rs256, JwtAlgorithm::EdDsa] {
            let s = signer(alg);
            let json =
                serde_json::to_string(&serde_json::json!({ "keys": [s.public_key()] })).unwrap();
            let set = PublicKeySet::from_json(&json).unwrap();
            let one =
                PublicKeySet::from_json(&serde_json::to_string(s.public_key()).unwrap()).unwrap();
            let key = s.sign(DocumentKind::License, &claims(&s, None)).unwrap();
            assert!(set.verify_license(&key, None, 2_000, 300).is_ok());
            assert!(one.verify_license(&key, None, 2_000, 300).is_ok());
        }
        assert!(PublicKeySet::from_json("{}").is_err());
    }
}
