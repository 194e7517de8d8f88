//! Offline checks (SPEC C4): a license key, a machine certificate and the revocation list, all
//! verified with the public keys the app ships, without the network.
//!
//! The cryptography is `bastion_crypto::license`; this module only applies it with the default
//! clock tolerance and the anti-rollback rule for revocation lists.

use bastion_crypto::license::{
    CertificateClaims, DEFAULT_SKEW_SECS, LicenseClaims, LicenseError, PublicKeySet,
    RevocationClaims,
};

use crate::{ClientError, Fingerprint};

/// Verifies a license key for `email` at `now_s` (Unix seconds): signature by a trusted key,
/// bound to the email, issued and not expired (± [`DEFAULT_SKEW_SECS`]).
pub fn verify_offline(
    key: &str,
    email: &str,
    keys: &PublicKeySet,
    now_s: i64,
) -> Result<LicenseClaims, ClientError> {
    Ok(keys.verify_license(key, Some(email), now_s, DEFAULT_SKEW_SECS)?)
}

/// Verifies a machine certificate: for `license_id`, for this machine, within its lease.
pub fn verify_certificate(
    certificate: &str,
    license_id: &str,
    machine: &Fingerprint,
    keys: &PublicKeySet,
    now_s: i64,
) -> Result<CertificateClaims, ClientError> {
    let canonical = machine.canonical()?;
    Ok(keys.verify_certificate(
        certificate,
        license_id,
        &canonical,
        now_s,
        DEFAULT_SKEW_SECS,
    )?)
}

/// Refuses a certificate whose machine was deactivated (or whose license was revoked), found in
/// `revocations` (already verified, e.g. by a [`RevocationCache`]).
pub fn check_certificate_not_revoked(
    certificate: &CertificateClaims,
    revocations: Option<&RevocationClaims>,
) -> Result<(), ClientError> {
    match revocations {
        Some(list) if list.is_certificate_revoked(certificate) => Err(LicenseError::Revoked.into()),
        _ => Ok(()),
    }
}

/// Refuses a license found in `revocations` (already verified, e.g. by a [`RevocationCache`]).
pub fn check_not_revoked(
    claims: &LicenseClaims,
    revocations: Option<&RevocationClaims>,
) -> Result<(), ClientError> {
    match revocations {
        Some(list) if list.is_revoked(&claims.lic) => Err(LicenseError::Revoked.into()),
        _ => Ok(()),
    }
}

/// The newest verified revocation list of one product. A list only replaces one with an older
/// `iat`, so replaying an old list (or a stale cached answer) cannot un-revoke a license.
#[derive(Debug, Clone)]
pub struct RevocationCache {
    product_id: String,
    current: Option<(String, RevocationClaims)>,
}

impl RevocationCache {
    pub fn new(product_id: impl Into<String>) -> Self {
        Self {
            product_id: product_id.into(),
            current: None,
        }
    }

    /// Verifies `list` and keeps it if it is newer than the one held. Returns whether it was
    /// taken; an older list is ignored (`Ok(false)`); a list that does not verify or names
    /// another product is an error and changes nothing. `iat` has one-second resolution, so a
    /// list of the same second is taken only if it revokes strictly more (revocations are
    /// permanent: of two lists of one second, the longer one was signed later).
    pub fn offer(&mut self, keys: &PublicKeySet, list: &str) -> Result<bool, ClientError> {
        let claims = keys.verify_revocations(list)?;
        if claims.prd != self.product_id {
            return Err(ClientError::WrongProduct);
        }
        let newer = match self.current.as_ref() {
            None => true,
            Some((_, held)) if claims.iat != held.iat => claims.iat > held.iat,
            Some((_, held)) => {
                claims.revoked.len() + claims.machines.len()
                    > held.revoked.len() + held.machines.len()
                    && held.revoked.iter().all(|l| claims.revoked.contains(l))
                    && held.machines.iter().all(|m| claims.machines.contains(m))
            }
        };
        if !newer {
            return Ok(false);
        }
        self.current = Some((list.trim().to_owned(), claims));
        Ok(true)
    }

    pub fn product_id(&self) -> &str {
        &self.product_id
    }

    /// The list held, verified.
    pub fn claims(&self) -> Option<&RevocationClaims> {
        self.current.as_ref().map(|(_, c)| c)
    }

    /// The signed list held, to persist (e.g. in [`crate::StoredLicense::revocations`]).
    pub fn document(&self) -> Option<&str> {
        self.current.as_ref().map(|(d, _)| d.as_str())
    }

    /// [`check_not_revoked`] against the list held.
    pub fn check(&self, claims: &LicenseClaims) -> Result<(), ClientError> {
        check_not_revoked(claims, self.claims())
    }

    /// [`check_certificate_not_revoked`] against the list held.
    pub fn check_certificate(&self, certificate: &CertificateClaims) -> Result<(), ClientError> {
        check_certificate_not_revoked(certificate, self.claims())
    }
}

/// A license that passed every offline check on this machine.
#[derive(Debug, Clone)]
pub struct OfflineStatus {
    pub license: LicenseClaims,
    pub certificate: CertificateClaims,
}

impl OfflineStatus {
    /// Until when (Unix seconds) the app may run without reaching the server: the end of the
    /// certificate's lease, never after the license's own expiry.
    pub fn runs_until(&self) -> i64 {
        match self.license.exp {
            Some(exp) => exp.min(self.certificate.exp),
            None => self.certificate.exp,
        }
    }

    /// The entitlements the certificate grants.
    pub fn entitlements(&self) -> &[String] {
        &self.certificate.ent
    }
}

/// Every offline check at once: the key for `email`, the certificate for this machine and the
/// key's license, and the revocation list.
pub fn verify_all(
    key: &str,
    email: &str,
    certificate: &str,
    machine: &Fingerprint,
    keys: &PublicKeySet,
    revocations: &RevocationCache,
    now_s: i64,
) -> Result<OfflineStatus, ClientError> {
    let license = verify_offline(key, email, keys, now_s)?;
    let certificate = verify_certificate(certificate, &license.lic, machine, keys, now_s)?;
    if revocations.product_id() != license.prd {
        return Err(ClientError::WrongProduct);
    }
    revocations.check(&license)?;
    revocations.check_certificate(&certificate)?;
    Ok(OfflineStatus {
        license,
        certificate,
    })
}
