//! JWT signing keys and verification (SPEC A2, A5) on `jsonwebtoken` with its aws-lc-rs
//! backend. Keys are generated here (RS256 by default, ES256 and EdDSA available), kept by the
//! caller as PKCS#8 wrapped in the key ring, and published as a JWKS. Verification looks the
//! key up by `kid` and accepts only that key's own algorithm, so `alg: none`, an HMAC-for-RSA
//! confusion or an unknown key id never validate.

use std::collections::HashMap;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, EllipticCurveKeyParameters,
    EllipticCurveKeyType, Jwk, JwkSet, KeyAlgorithm, OctetKeyPairParameters, OctetKeyPairType,
    PublicKeyUse, RSAKeyParameters, RSAKeyType,
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::Serialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use crate::CryptoError;

/// The signature algorithms Bastion issues tokens with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlgorithm {
    Rs256,
    Es256,
    EdDsa,
}

impl JwtAlgorithm {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "RS256" => Some(Self::Rs256),
            "ES256" => Some(Self::Es256),
            "EdDSA" => Some(Self::EdDsa),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
        }
    }

    fn jwt(self) -> Algorithm {
        match self {
            Self::Rs256 => Algorithm::RS256,
            Self::Es256 => Algorithm::ES256,
            Self::EdDsa => Algorithm::EdDSA,
        }
    }

    /// A fresh private key as PKCS#8 DER (RSA keys are 2048-bit).
    pub fn generate_pkcs8(self) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let fail = |_| CryptoError::BadKey("key generation failed");
        Ok(Zeroizing::new(match self {
            Self::Rs256 => {
                let kp = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                    .map_err(fail)?;
                kp.as_der().map_err(fail)?.as_ref().to_vec()
            }
            Self::Es256 => EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING)
                .map_err(fail)?
                .to_pkcs8v1()
                .map_err(fail)?
                .as_ref()
                .to_vec(),
            Self::EdDsa => Ed25519KeyPair::generate()
                .map_err(fail)?
                .to_pkcs8v1()
                .map_err(fail)?
                .as_ref()
                .to_vec(),
        }))
    }
}

/// A token-signing key: private half inside `jsonwebtoken`, public half as a JWK.
pub struct JwtSigningKey {
    alg: JwtAlgorithm,
    kid: String,
    encoding: EncodingKey,
    jwk: Jwk,
}

impl std::fmt::Debug for JwtSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSigningKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl JwtSigningKey {
    /// Loads a PKCS#8 key; the key id is `{prefix}-{first 8 hex of SHA-256(public key)}`.
    pub fn from_pkcs8(
        alg: JwtAlgorithm,
        kid_prefix: &str,
        pkcs8: &[u8],
    ) -> Result<Self, CryptoError> {
        let bad = |_| CryptoError::BadKey("not a PKCS#8 key of the expected algorithm");
        let (encoding, public, params) = match alg {
            JwtAlgorithm::Rs256 => {
                let kp = aws_lc_rs::rsa::KeyPair::from_pkcs8(pkcs8).map_err(bad)?;
                // jsonwebtoken's aws-lc backend takes the PKCS#1 key inside the PKCS#8 wrapper.
                let info = pkcs8::PrivateKeyInfo::try_from(pkcs8)
                    .map_err(|_| CryptoError::BadKey("PKCS#8"))?;
                let public = kp.public_key();
                let (n, e) = (
                    public.modulus().big_endian_without_leading_zero(),
                    public.exponent().big_endian_without_leading_zero(),
                );
                let params = AlgorithmParameters::RSA(RSAKeyParameters {
                    key_type: RSAKeyType::RSA,
                    n: b64(n),
                    e: b64(e),
                });
                (
                    EncodingKey::from_rsa_der(info.private_key),
                    public.as_ref().to_vec(),
                    params,
                )
            }
            JwtAlgorithm::Es256 => {
                let kp =
                    EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
                        .map_err(bad)?;
                let point = kp.public_key().as_ref().to_vec();
                // Uncompressed SEC1 point: 0x04 || x (32) || y (32).
                if point.len() != 65 || point[0] != 4 {
                    return Err(CryptoError::BadKey("unexpected P-256 public key encoding"));
                }
                let params = AlgorithmParameters::EllipticCurve(EllipticCurveKeyParameters {
                    key_type: EllipticCurveKeyType::EC,
                    curve: EllipticCurve::P256,
                    x: b64(&point[1..33]),
                    y: b64(&point[33..]),
                });
                (EncodingKey::from_ec_der(pkcs8), point, params)
            }
            JwtAlgorithm::EdDsa => {
                let kp = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(bad)?;
                let public = kp.public_key().as_ref().to_vec();
                let params = AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
                    key_type: OctetKeyPairType::OctetKeyPair,
                    curve: EllipticCurve::Ed25519,
                    x: b64(&public),
                });
                (EncodingKey::from_ed_der(pkcs8), public, params)
            }
        };
        let kid = format!("{kid_prefix}-{}", &hex::encode(crate::sha256(&public))[..8]);
        let key_algorithm = match alg {
            JwtAlgorithm::Rs256 => KeyAlgorithm::RS256,
            JwtAlgorithm::Es256 => KeyAlgorithm::ES256,
            JwtAlgorithm::EdDsa => KeyAlgorithm::EdDSA,
        };
        let jwk = Jwk {
            common: CommonParameters {
                public_key_use: Some(PublicKeyUse::Signature),
                key_algorithm: Some(key_algorithm),
                key_id: Some(kid.clone()),
                ..Default::default()
            },
            algorithm: params,
        };
        Ok(Self {
            alg,
            kid,
            encoding,
            jwk,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn algorithm(&self) -> JwtAlgorithm {
        self.alg
    }

    /// The public key as published in the JWKS.
    pub fn jwk(&self) -> &Jwk {
        &self.jwk
    }

    /// Signs `claims` with `kid` and `typ: JWT` in the header.
    pub fn sign<C: Serialize>(&self, claims: &C) -> Result<String, CryptoError> {
        let mut header = Header::new(self.alg.jwt());
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".to_owned());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|_| CryptoError::BadKey("JWT signing failed"))
    }
}

/// Why a token was refused. None of these carries the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("malformed token")]
    Malformed,
    #[error("the token names no key id")]
    MissingKid,
    #[error("unknown key id")]
    UnknownKid,
    #[error("the token's algorithm is not its key's")]
    WrongAlgorithm,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("wrong issuer")]
    WrongIssuer,
    #[error("wrong audience")]
    WrongAudience,
    #[error("invalid signature")]
    BadSignature,
    #[error("a required claim is missing or malformed")]
    BadClaims,
}

/// Verifies tokens against a set of public keys (current and retired, by `kid`).
pub struct JwtVerifier {
    /// Per key id: the key, its algorithm and the validation rules, built once.
    keys: HashMap<String, (DecodingKey, Algorithm, Validation)>,
}

impl JwtVerifier {
    /// `jwks` are the keys to accept; each must carry a `kid` and an algorithm.
    pub fn new(
        jwks: &JwkSet,
        issuer: &str,
        audience: &str,
        leeway_secs: u64,
    ) -> Result<Self, CryptoError> {
        let mut keys = HashMap::new();
        for jwk in &jwks.keys {
            let kid = jwk
                .common
                .key_id
                .clone()
                .ok_or(CryptoError::BadKey("JWK without kid"))?;
            let alg = match jwk.common.key_algorithm {
                Some(KeyAlgorithm::RS256) => Algorithm::RS256,
                Some(KeyAlgorithm::ES256) => Algorithm::ES256,
                Some(KeyAlgorithm::EdDSA) => Algorithm::EdDSA,
                _ => return Err(CryptoError::BadKey("JWK with an unsupported algorithm")),
            };
            let key =
                DecodingKey::from_jwk(jwk).map_err(|_| CryptoError::BadKey("unusable JWK"))?;
            let mut v = Validation::new(alg);
            v.leeway = leeway_secs;
            v.validate_nbf = true;
            v.set_issuer(&[issuer]);
            v.set_audience(&[audience]);
            v.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
            keys.insert(kid, (key, alg, v));
        }
        Ok(Self { keys })
    }

    /// Checks signature, `kid`, algorithm, `iss`, `aud`, `exp`, `nbf` (with leeway) and the
    /// presence of `sub` and `iat`; returns the claims.
    pub fn verify<C: DeserializeOwned>(&self, token: &str) -> Result<C, JwtError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Malformed)?;
        let kid = header.kid.ok_or(JwtError::MissingKid)?;
        let (key, alg, validation) = self.keys.get(&kid).ok_or(JwtError::UnknownKid)?;
        if header.alg != *alg {
            return Err(JwtError::WrongAlgorithm);
        }
        jsonwebtoken::decode::<C>(token, key, validation)
            .map(|d| d.claims)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as K;
                match e.kind() {
                    K::ExpiredSignature => JwtError::Expired,
                    K::ImmatureSignature => JwtError::NotYetValid,
                    K::InvalidIssuer => JwtError::WrongIssuer,
                    K::InvalidAudience => JwtError::WrongAudience,
                    K::InvalidSignature => JwtError::BadSignature,
                    K::InvalidAlgorithm => JwtError::WrongAlgorithm,
                    K::MissingRequiredClaim(_) | K::Json(_) => JwtError::BadClaims,
                    _ => JwtError::Malformed,
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Claims {
        iss: String,
        aud: String,
        sub: String,
        iat: u64,
        nbf: u64,
        exp: u64,
        jti: String,
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn claims(exp_in: i64) -> Claims {
        let n = now();
        Claims {
            iss: "https://auth.example".into(),
            aud: "bastion".into(),
            sub: "usr_1".into(),
            iat: n,
            nbf: n,
            exp: n.saturating_add_signed(exp_in),
            jti: "j1".into(),
        }
    }

    fn key(alg: JwtAlgorithm) -> JwtSigningKey {
        JwtSigningKey::from_pkcs8(alg, "tokens-v1", &alg.generate_pkcs8().unwrap()).unwrap()
    }

    fn verifier(keys: &[&JwtSigningKey]) -> JwtVerifier {
        let set = JwkSet {
            keys: keys.iter().map(|k| k.jwk().clone()).collect(),
        };
        JwtVerifier::new(&set, "https://auth.example", "bastion", 5).unwrap()
    }

    #[test]
    fn a2_every_algorithm_signs_and_verifies_through_its_jwk() {
        for alg in [
            JwtAlgorithm::Rs256,
            JwtAlgorithm::Es256,
            JwtAlgorithm::EdDsa,
        ] {
            let k = key(alg);
            let t = k.sign(&claims(900)).unwrap();
            let got: Claims = verifier(&[&k]).verify(&t).unwrap();
            assert_eq!(got.sub, "usr_1", "{alg:?}");
            let header = jsonwebtoken::decode_header(&t).unwrap();
            assert_eq!(header.kid.as_deref(), Some(k.kid()));
        }
    }

    #[test]
    fn a2_refuses_expired_wrong_audience_issuer_unknown_kid_and_tampering() {
        let k = key(JwtAlgorithm::Rs256);
        let v = verifier(&[&k]);
        assert_eq!(
            v.verify::<Claims>(&k.sign(&claims(-60)).unwrap()),
            Err(JwtError::Expired)
        );
        let mut c = claims(900);
        c.aud = "other".into();
        assert_eq!(
            v.verify::<Claims>(&k.sign(&c).unwrap()),
            Err(JwtError::WrongAudience)
        );
        let mut c = claims(900);
        c.iss = "https://evil.example".into();
        assert_eq!(
            v.verify::<Claims>(&k.sign(&c).unwrap()),
            Err(JwtError::WrongIssuer)
        );
        let mut c = claims(900);
        c.nbf = now() + 600;
        assert_eq!(
            v.verify::<Claims>(&k.sign(&c).unwrap()),
            Err(JwtError::NotYetValid)
        );
        let stranger = key(JwtAlgorithm::Rs256);
        assert_eq!(
            v.verify::<Claims>(&stranger.sign(&claims(900)).unwrap()),
            Err(JwtError::UnknownKid)
        );
        // A payload swapped under a valid signature.
        let t = k.sign(&claims(900)).unwrap();
        let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
        let mut forged = claims(900);
        forged.sub = "usr_admin".into();
        parts[1] = b64(&serde_json::to_vec(&forged).unwrap());
        assert_eq!(
            v.verify::<Claims>(&parts.join(".")),
            Err(JwtError::BadSignature)
        );
    }

    #[test]
    fn a2_alg_none_and_algorithm_confusion_are_refused() {
        let k = key(JwtAlgorithm::Rs256);
        let v = verifier(&[&k]);
        let body = b64(&serde_json::to_vec(&claims(900)).unwrap());
        let none = format!(
            "{}.{body}.",
            b64(format!(r#"{{"alg":"none","typ":"JWT","kid":"{}"}}"#, k.kid()).as_bytes())
        );
        assert!(v.verify::<Claims>(&none).is_err());
        // HS256 "signed" with the public key as the HMAC secret: the classic confusion attack.
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some(k.kid().to_owned());
        let n = match &k.jwk().algorithm {
            AlgorithmParameters::RSA(p) => p.n.clone(),
            _ => unreachable!(),
        };
        let hs = jsonwebtoken::encode(&h, &claims(900), &EncodingKey::from_secret(n.as_bytes()))
            .unwrap();
        assert_eq!(v.verify::<Claims>(&hs), Err(JwtError::WrongAlgorithm));
        // No kid at all.
        let mut h = Header::new(Algorithm::RS256);
        h.kid = None;
        assert_eq!(
            v.verify::<Claims>(&format!(
                "{}.{body}.x",
                b64(&serde_json::to_vec(&h).unwrap())
            )),
            Err(JwtError::MissingKid)
        );
    }

    #[test]
    fn a5_a_retired_key_keeps_verifying_while_published() {
        let (old, new) = (key(JwtAlgorithm::Rs256), key(JwtAlgorithm::Rs256));
        let t = old.sign(&claims(900)).unwrap();
        assert!(verifier(&[&new, &old]).verify::<Claims>(&t).is_ok());
        assert_eq!(
            verifier(&[&new]).verify::<Claims>(&t),
            Err(JwtError::UnknownKid)
        );
    }

    #[test]
    fn a2_missing_required_claims_are_refused() {
        #[derive(Serialize)]
        struct NoSub {
            iss: String,
            aud: String,
            iat: u64,
            nbf: u64,
            exp: u64,
        }
        let k = key(JwtAlgorithm::EdDsa);
        let n = now();
        let t = k
            .sign(&NoSub {
                iss: "https://auth.example".into(),
                aud: "bastion".into(),
                iat: n,
                nbf: n,
                exp: n + 60,
            })
            .unwrap();
        assert_eq!(
            verifier(&[&k]).verify::<Claims>(&t),
            Err(JwtError::BadClaims)
        );
    }
}
