//! Password hashing (SPEC A1): Argon2id by default with OWASP parameters, bcrypt (cost 12) as
//! a configurable choice and for imported hashes (`$2a$`, `$2b$`, `$2y$`). A verification also
//! says whether the stored hash should be upgraded to the configured algorithm and parameters.
//!
//! These functions are CPU-heavy on purpose: callers run them on a bounded blocking pool.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretString};

use crate::CryptoError;

/// Which algorithm new hashes use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordAlgorithm {
    Argon2id,
    Bcrypt,
}

/// The configured hashing policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordPolicy {
    pub algorithm: PasswordAlgorithm,
    /// Argon2id memory in KiB, iterations and lanes.
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub argon2_parallelism: u32,
    pub bcrypt_cost: u32,
}

impl PasswordPolicy {
    /// OWASP's Argon2id recommendation (19 MiB, 2 iterations, 1 lane) and bcrypt cost 12.
    pub fn owasp() -> Self {
        Self {
            algorithm: PasswordAlgorithm::Argon2id,
            argon2_memory_kib: 19_456,
            argon2_iterations: 2,
            argon2_parallelism: 1,
            bcrypt_cost: 12,
        }
    }

    fn argon2(&self) -> Result<Argon2<'static>, CryptoError> {
        let params = Params::new(
            self.argon2_memory_kib,
            self.argon2_iterations,
            self.argon2_parallelism,
            None,
        )
        .map_err(|_| CryptoError::BadKey("invalid Argon2 parameters"))?;
        Ok(Argon2::new(
            argon2::Algorithm::Argon2id,
            Version::V0x13,
            params,
        ))
    }
}

/// The outcome of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verification {
    pub matches: bool,
    /// The hash uses another algorithm or weaker parameters than the policy: re-hash it now
    /// that the plaintext is at hand (only meaningful when `matches`).
    pub needs_rehash: bool,
}

/// Hashes `password` under `policy`.
pub fn hash(policy: &PasswordPolicy, password: &SecretString) -> Result<String, CryptoError> {
    let pw = password.expose_secret().as_bytes();
    match policy.algorithm {
        PasswordAlgorithm::Argon2id => {
            let mut salt = [0u8; 16];
            crate::random_bytes(&mut salt)?;
            let salt = SaltString::encode_b64(&salt).map_err(|_| CryptoError::BadKey("salt"))?;
            let h = policy
                .argon2()?
                .hash_password(pw, &salt)
                .map_err(|_| CryptoError::BadKey("argon2 hashing failed"))?;
            Ok(h.to_string())
        }
        // bcrypt ignores bytes past 72; refuse rather than silently weaken long passwords.
        PasswordAlgorithm::Bcrypt => bcrypt::non_truncating_hash(pw, policy.bcrypt_cost)
            .map_err(|_| CryptoError::BadKey("bcrypt accepts at most 72 bytes of password")),
    }
}

/// Checks `password` against `stored` (an Argon2 PHC string or a bcrypt hash). Comparison is
/// constant-time in both libraries. An unrecognised format is an error, never a match.
pub fn verify(
    policy: &PasswordPolicy,
    password: &SecretString,
    stored: &str,
) -> Result<Verification, CryptoError> {
    let pw = password.expose_secret().as_bytes();
    if is_bcrypt(stored) {
        let matches =
            bcrypt::verify(pw, stored).map_err(|_| CryptoError::Malformed("bcrypt hash"))?;
        let cost: u32 = stored.get(4..6).and_then(|c| c.parse().ok()).unwrap_or(0);
        let needs_rehash =
            policy.algorithm != PasswordAlgorithm::Bcrypt || cost < policy.bcrypt_cost;
        return Ok(Verification {
            matches,
            needs_rehash,
        });
    }
    let parsed = PasswordHash::new(stored).map_err(|_| CryptoError::Malformed("password hash"))?;
    if parsed.algorithm.as_str() != "argon2id" {
        return Err(CryptoError::Malformed(
            "unsupported password hash algorithm",
        ));
    }
    let matches = Argon2::default().verify_password(pw, &parsed).is_ok();
    let params = Params::try_from(&parsed).ok();
    let weaker = params.is_none_or(|p| {
        p.m_cost() < policy.argon2_memory_kib
            || p.t_cost() < policy.argon2_iterations
            || p.p_cost() < policy.argon2_parallelism
    });
    Ok(Verification {
        matches,
        needs_rehash: policy.algorithm != PasswordAlgorithm::Argon2id || weaker,
    })
}

fn is_bcrypt(stored: &str) -> bool {
    ["$2a$", "$2b$", "$2y$", "$2x$"]
        .iter()
        .any(|p| stored.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    /// Cheap parameters for tests; the OWASP ones are exercised once below.
    fn cheap() -> PasswordPolicy {
        PasswordPolicy {
            argon2_memory_kib: 256,
            argon2_iterations: 1,
            bcrypt_cost: 4,
            ..PasswordPolicy::owasp()
        }
    }

    #[test]
    fn a1_argon2id_round_trip_and_wrong_password() {
        let p = cheap();
        let h = hash(&p, &secret("correct horse")).unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=256,t=1,p=1$"), "{h}");
        assert!(!h.contains("correct horse"));
        assert_eq!(
            verify(&p, &secret("correct horse"), &h).unwrap(),
            Verification {
                matches: true,
                needs_rehash: false
            }
        );
        assert!(!verify(&p, &secret("correct horsf"), &h).unwrap().matches);
        // Two hashes of one password differ (random salt).
        assert_ne!(h, hash(&p, &secret("correct horse")).unwrap());
    }

    #[test]
    fn a1_owasp_parameters_are_the_default() {
        let p = PasswordPolicy::owasp();
        let h = hash(&p, &secret("pw-under-owasp")).unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify(&p, &secret("pw-under-owasp"), &h).unwrap().matches);
    }

    #[test]
    fn a1_weaker_parameters_ask_for_a_rehash() {
        let h = hash(&cheap(), &secret("pw")).unwrap();
        let stronger = PasswordPolicy {
            argon2_memory_kib: 512,
            ..cheap()
        };
        assert_eq!(
            verify(&stronger, &secret("pw"), &h).unwrap(),
            Verification {
                matches: true,
                needs_rehash: true
            }
        );
    }

    #[test]
    fn a1_published_bcrypt_vector_verifies() {
        // OpenBSD's bcrypt test vector, as shipped with most implementations.
        let v = "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW";
        let r = verify(&cheap(), &secret("U*U"), v).unwrap();
        assert!(r.matches && r.needs_rehash);
        assert!(!verify(&cheap(), &secret("U*V"), v).unwrap().matches);
    }

    #[test]
    fn a1_imported_bcrypt_cost_12_verifies_and_is_upgraded_to_argon2id() {
        let imported = bcrypt::hash("imported-pw", 12)
            .unwrap()
            .replacen("$2b$", "$2y$", 1);
        let r = verify(&cheap(), &secret("imported-pw"), &imported).unwrap();
        assert_eq!(
            r,
            Verification {
                matches: true,
                needs_rehash: true
            }
        );
        let bcrypt_policy = PasswordPolicy {
            algorithm: PasswordAlgorithm::Bcrypt,
            bcrypt_cost: 12,
            ..cheap()
        };
        assert!(
            !verify(&bcrypt_policy, &secret("imported-pw"), &imported)
                .unwrap()
                .needs_rehash
        );
    }

    #[test]
    fn a1_bcrypt_policy_refuses_passwords_it_would_truncate() {
        let p = PasswordPolicy {
            algorithm: PasswordAlgorithm::Bcrypt,
            ..cheap()
        };
        assert!(hash(&p, &secret(&"x".repeat(73))).is_err());
        let h = hash(&p, &secret("short")).unwrap();
        assert!(h.starts_with("$2b$04$"));
        assert!(verify(&p, &secret("short"), &h).unwrap().matches);
    }

    #[test]
    fn a1_unknown_or_garbage_hashes_never_match() {
        for bad in [
            "",
            "plaintext",
            "$argon2i$v=19$m=256,t=1,p=1$c2FsdHNhbHQ$aGFzaA",
            "$1$md5$xyz",
            "$2b$12$short",
        ] {
            assert!(verify(&cheap(), &secret("x"), bad).is_err(), "{bad}");
        }
    }
}
