//! The activated license in the OS keychain (SPEC C1): Keychain on macOS, Credential Manager on
//! Windows, the kernel key store (keyutils) on Linux.
//!
//! One entry holds a JSON blob with the key, email, license id, certificate and the newest
//! revocation list. [`LicenseStorage::load`] verifies everything it reads and deletes an entry
//! that no longer holds: unreadable, a key that does not verify, a certificate that expired or is
//! for another machine, or a revoked license.
//!
//! On Linux a thread with no session keyring (a process started outside a login session: a
//! service, CI) joins a fresh one on first use; entries are also linked into the user's
//! persistent keyring, which is how other threads and later runs find them.

use bastion_crypto::license::{DocumentKind, LicenseClaims, LicenseError, PublicKeySet};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::api::Activated;
use crate::offline::{self, OfflineStatus, RevocationCache};
use crate::{ClientError, Fingerprint};

const USER: &str = "license";
const FORMAT: u32 = 1;

/// What the app keeps between runs. `Debug` shows only the license id.
#[derive(Clone)]
pub struct StoredLicense {
    pub key: SecretString,
    pub email: String,
    pub license_id: String,
    /// `BSTM1.…`: this machine's lease.
    pub certificate: String,
    /// `BSTR1.…`: the newest revocation list seen, if any.
    pub revocations: Option<String>,
}

impl std::fmt::Debug for StoredLicense {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredLicense")
            .field("license_id", &self.license_id)
            .field("key", &"[redacted]")
            .field("email", &"[redacted]")
            .field("has_revocations", &self.revocations.is_some())
            .finish_non_exhaustive()
    }
}

impl StoredLicense {
    /// What to store after a successful activation or validation.
    pub fn from_activation(key: SecretString, email: &str, activated: &Activated) -> Self {
        Self {
            key,
            email: email.to_owned(),
            license_id: activated.license_id.clone(),
            certificate: activated.certificate.clone(),
            revocations: None,
        }
    }

    /// Verifies `list` and keeps it if it is newer than the list held (anti-rollback, see
    /// [`RevocationCache`]). Returns whether it was taken; save the license afterwards.
    pub fn offer_revocations(
        &mut self,
        keys: &PublicKeySet,
        list: &str,
    ) -> Result<bool, ClientError> {
        // Only the product id is needed here; expiry and email are checked on use.
        let license: LicenseClaims =
            keys.verify_document(DocumentKind::License, self.key.expose_secret())?;
        let mut cache = RevocationCache::new(license.prd);
        if let Some(held) = &self.revocations {
            // A held list that no longer verifies is simply replaced.
            let _ = cache.offer(keys, held);
        }
        let taken = cache.offer(keys, list)?;
        if taken {
            self.revocations = cache.document().map(str::to_owned);
        }
        Ok(taken)
    }

    /// Every offline check for `machine` at `now_s` (Unix seconds): the key for the email, the
    /// certificate for this machine and license within its lease, the stored revocation list.
    /// Call it while the app runs, e.g. once an hour, to notice the lease running out.
    pub fn verify(
        &self,
        keys: &PublicKeySet,
        machine: &Fingerprint,
        now_s: i64,
    ) -> Result<OfflineStatus, ClientError> {
        self.check(keys, machine, now_s)?.map_err(|reason| {
            ClientError::License(match reason {
                ClearReason::License(e) | ClearReason::Certificate(e) => e,
                ClearReason::Revoked => LicenseError::Revoked,
                ClearReason::Unreadable | ClearReason::BadRevocationList => {
                    LicenseError::Malformed("revocation list")
                }
            })
        })
    }

    /// All offline checks for this machine at `now_s`; `Ok(Err(reason))` when the stored data
    /// is no longer good, `Err` when the check itself cannot run (e.g. no machine identifiers).
    fn check(
        &self,
        keys: &PublicKeySet,
        machine: &Fingerprint,
        now_s: i64,
    ) -> Result<Result<OfflineStatus, ClearReason>, ClientError> {
        machine.canonical()?;
        let license =
            match offline::verify_offline(self.key.expose_secret(), &self.email, keys, now_s) {
                Ok(c) => c,
                Err(ClientError::License(e)) => return Ok(Err(ClearReason::License(e))),
                Err(e) => return Err(e),
            };
        if license.lic != self.license_id {
            return Ok(Err(ClearReason::Certificate(LicenseError::WrongMachine)));
        }
        let certificate = match offline::verify_certificate(
            &self.certificate,
            &license.lic,
            machine,
            keys,
            now_s,
        ) {
            Ok(c) => c,
            Err(ClientError::License(e)) => return Ok(Err(ClearReason::Certificate(e))),
            Err(e) => return Err(e),
        };
        let mut cache = RevocationCache::new(license.prd.clone());
        if self
            .revocations
            .as_deref()
            .is_some_and(|list| cache.offer(keys, list).is_err())
        {
            return Ok(Err(ClearReason::BadRevocationList));
        }
        if cache.check(&license).is_err() {
            return Ok(Err(ClearReason::Revoked));
        }
        Ok(Ok(OfflineStatus {
            license,
            certificate,
        }))
    }
}

/// The keychain blob. Its strings are wiped when it is dropped.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(deny_unknown_fields)]
struct Blob {
    v: u32,
    key: String,
    email: String,
    license_id: String,
    certificate: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revocations: Option<String>,
}

/// Why [`LicenseStorage::load`] deleted the stored entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClearReason {
    #[error("the stored entry could not be read")]
    Unreadable,
    #[error("the stored license key no longer verifies: {0}")]
    License(LicenseError),
    #[error("the stored certificate no longer verifies: {0}")]
    Certificate(LicenseError),
    #[error("the stored revocation list does not verify")]
    BadRevocationList,
    #[error("the license has been revoked")]
    Revoked,
}

/// What [`LicenseStorage::load`] found.
// Returned once per start and matched at once; boxing would only make matching clumsier.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Loaded {
    /// Nothing stored.
    Missing,
    /// A license that passed every offline check on this machine.
    Valid {
        license: StoredLicense,
        status: OfflineStatus,
    },
    /// Something was stored but failed its checks, and has been deleted.
    Cleared(ClearReason),
}

impl Loaded {
    /// The valid license, if any.
    pub fn valid(self) -> Option<(StoredLicense, OfflineStatus)> {
        match self {
            Self::Valid { license, status } => Some((license, status)),
            Self::Missing | Self::Cleared(_) => None,
        }
    }
}

/// The app's license entry in the OS keychain: service `service`, user `license`.
#[derive(Debug, Clone)]
pub struct LicenseStorage {
    service: String,
}

impl LicenseStorage {
    /// Storage under an explicit keychain service name.
    pub fn new(service: impl Into<String>) -> Self {
        Self {
            service: service.into(),
        }
    }

    /// Storage under the service `bastion:<app_id>` (e.g. `bastion:com.example.editor`).
    pub fn for_app(app_id: &str) -> Self {
        Self::new(format!("bastion:{app_id}"))
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    fn entry(&self) -> Result<keyring::Entry, ClientError> {
        #[cfg(target_os = "linux")]
        ensure_session_keyring()?;
        keyring::Entry::new(&self.service, USER).map_err(ClientError::from_keyring)
    }

    /// Writes `license`, replacing what was stored.
    pub fn save(&self, license: &StoredLicense) -> Result<(), ClientError> {
        let blob = Blob {
            v: FORMAT,
            key: license.key.expose_secret().to_owned(),
            email: license.email.clone(),
            license_id: license.license_id.clone(),
            certificate: license.certificate.clone(),
            revocations: license.revocations.clone(),
        };
        let json = Zeroizing::new(
            serde_json::to_string(&blob)
                .map_err(|_| ClientError::Keychain("could not encode the entry".into()))?,
        );
        self.entry()?
            .set_password(&json)
            .map_err(ClientError::from_keyring)
    }

    /// Reads the stored license and verifies it for `machine` at `now_s` (Unix seconds). An
    /// entry that fails is deleted and reported as [`Loaded::Cleared`].
    pub fn load(
        &self,
        keys: &PublicKeySet,
        machine: &Fingerprint,
        now_s: i64,
    ) -> Result<Loaded, ClientError> {
        let entry = self.entry()?;
        let raw = match entry.get_password() {
            Ok(raw) => Zeroizing::new(raw),
            Err(keyring::Error::NoEntry) => return Ok(Loaded::Missing),
            Err(keyring::Error::BadEncoding(_)) => return self.cleared(ClearReason::Unreadable),
            Err(e) => return Err(ClientError::from_keyring(e)),
        };
        let license = match serde_json::from_str::<Blob>(&raw) {
            Ok(blob) if blob.v == FORMAT => StoredLicense {
                key: SecretString::from(blob.key.clone()),
                email: blob.email.clone(),
                license_id: blob.license_id.clone(),
                certificate: blob.certificate.clone(),
                revocations: blob.revocations.clone(),
            },
            _ => return self.cleared(ClearReason::Unreadable),
        };
        match license.check(keys, machine, now_s)? {
            Ok(status) => Ok(Loaded::Valid { license, status }),
            Err(reason) => self.cleared(reason),
        }
    }

    fn cleared(&self, reason: ClearReason) -> Result<Loaded, ClientError> {
        self.clear()?;
        Ok(Loaded::Cleared(reason))
    }

    /// Deletes the entry; `Ok(false)` if there was none.
    pub fn clear(&self) -> Result<bool, ClientError> {
        match self.entry()?.delete_credential() {
            Ok(()) => Ok(true),
            Err(keyring::Error::NoEntry) => Ok(false),
            Err(e) => Err(ClientError::from_keyring(e)),
        }
    }
}

/// keyutils keeps entries in the session keyring. A thread without one (a service, a CI job,
/// anything started outside a login session) would otherwise get the user-session keyring,
/// whose keys it does not possess: every read after a write fails with EACCES. Joining a fresh
/// session keyring first (what `keyctl new_session` does) makes the entry usable; the keyring
/// crate also links each entry into the user's persistent keyring, where other threads and
/// later runs find it.
#[cfg(target_os = "linux")]
fn ensure_session_keyring() -> Result<(), ClientError> {
    use linux_keyutils::{KeyRing, KeyRingIdentifier};
    KeyRing::from_special_id(KeyRingIdentifier::Session, true)
        .map(drop)
        .map_err(|e| ClientError::Keychain(format!("no session keyring: {e}")))
}
