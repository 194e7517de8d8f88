//! Licensing (SPEC L1–L7): products and policies, signed license keys bound to an email,
//! machine activation under an atomic limit with signed certificates for offline use, abuse
//! counters that hold across nodes, and revocation confirmed through a magic link.
//!
//! - Keys and certificates are signed by the key ring's `licenses` key (RS256 by default) in
//!   the format of `bastion_crypto::license`, which the app verifies offline with
//!   `bastion-client`. Old signing keys stay in the ring, so keys signed before a rotation verify.
//! - Only keyed hashes of keys and machine identifiers are stored, under the `license_lookup`
//!   pepper (SPEC L3).
//! - A failed activation counts against the caller's IP (5 → locked 15 minutes, SPEC L6) and,
//!   when the key is known, against the key (20 → frozen and the customer emailed, SPEC L7).

mod admin;
mod public;

use std::sync::Arc;

use aws_lc_rs::hmac;
use bastion_store::{LicenseRow, Store, StoreError, ThrottleRule};

use crate::Clock;
use crate::audit::{AuditEvent, AuditLog};
use crate::keys::{KeyError, SharedKeyRing};
use crate::links::{LinkError, MagicLinks};
use crate::mail::{MailError, Mailer};
use crate::orgs::{OrgError, Orgs};

pub use admin::{IssuedLicense, LicenseDetail, PolicyInput};
pub use public::{ActivationRequest, MachineCertificate};

/// Limits of the licensing service (config `[licenses]`).
#[derive(Debug, Clone)]
pub struct LicensingConfig {
    /// Failed activations from one IP before it is locked out (SPEC L6: 5).
    pub ip_failures: u32,
    /// The window those failures are counted in, and how long the lock lasts (15 minutes).
    pub ip_window_ms: i64,
    pub ip_lockout_ms: i64,
    /// Failed activations against one key before it is frozen (SPEC L7: 20).
    pub key_failures: u32,
    /// Offline lease of a policy that names none (30 days).
    pub default_lease_ms: i64,
    /// Machines a license may deactivate per day (activation churn; each deactivation also
    /// revokes that machine's certificates).
    pub deactivations_per_day: u32,
}

impl Default for LicensingConfig {
    fn default() -> Self {
        Self {
            ip_failures: 5,
            ip_window_ms: 15 * 60_000,
            ip_lockout_ms: 15 * 60_000,
            key_failures: 20,
            default_lease_ms: 30 * 86_400_000,
            deactivations_per_day: 10,
        }
    }
}

impl LicensingConfig {
    /// The failure limit whose `ip_failures`-th failure in the window sets the lock.
    /// The budget of deactivations per license: `deactivations_per_day` a day.
    fn deactivation_rule(&self) -> ThrottleRule {
        ThrottleRule {
            max_attempts: self.deactivations_per_day,
            window_ms: 86_400_000,
            lockout_ms: 86_400_000,
        }
    }

    fn ip_rule(&self) -> ThrottleRule {
        ThrottleRule {
            max_attempts: self.ip_failures,
            window_ms: self.ip_window_ms,
            lockout_ms: self.ip_lockout_ms,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LicenseServiceError {
    #[error(transparent)]
    Org(#[from] OrgError),
    #[error("{0}")]
    Invalid(String),
    #[error("a {0} of that name already exists")]
    Exists(&'static str),
    /// Bad signature, unknown key, another email, or a key this server did not issue:
    /// deliberately one answer.
    #[error("the license key or email is not valid")]
    InvalidLicense,
    #[error("the license has been revoked")]
    Revoked,
    #[error("the license key is frozen after too many failed activations; contact the seller")]
    Frozen,
    #[error("the license has expired")]
    Expired,
    #[error("the license is already active on its maximum of {0} machines")]
    MachineLimit(u32),
    #[error("this machine is not activated on the license")]
    NotActivated,
    #[error("the machine certificate is not valid for this license and machine")]
    InvalidCertificate,
    #[error("too many failed activations from this address; try again later")]
    Locked { retry_after_secs: u64 },
    #[error("this license has deactivated its day's worth of machines; try again later")]
    ChurnLimited { retry_after_secs: u64 },
    #[error("this link is invalid or has expired")]
    InvalidLink,
    #[error("licensing keys: {0}")]
    Key(#[from] KeyError),
    #[error(transparent)]
    Mail(#[from] MailError),
    #[error("licensing storage: {0}")]
    Store(StoreError),
    #[error("no randomness for an id")]
    Random,
    #[error("signing failed")]
    Signing,
}

impl From<StoreError> for LicenseServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            // Another org's row, or a missing one: the same answer as a made-up id.
            StoreError::NotFound | StoreError::Forbidden => Self::Org(OrgError::NotFound),
            other => Self::Store(other),
        }
    }
}

impl From<LinkError> for LicenseServiceError {
    fn from(e: LinkError) -> Self {
        match e {
            LinkError::Invalid => Self::InvalidLink,
            LinkError::Store(s) => s.into(),
            LinkError::Mail(m) => Self::Mail(m),
            LinkError::Random => Self::Random,
        }
    }
}

pub struct Licensing {
    orgs: Arc<Orgs>,
    store: Arc<dyn Store>,
    ring: Arc<SharedKeyRing>,
    mailer: Arc<Mailer>,
    links: Arc<MagicLinks>,
    audit: Arc<AuditLog>,
    clock: Arc<dyn Clock>,
    config: LicensingConfig,
    revocations: RevocationCache,
}

/// Signed revocation lists per product, reused while the key and the ids are unchanged and the
/// list is at most [`RevocationCache::MAX_AGE_S`] old.
#[derive(Default)]
struct RevocationCache(std::sync::Mutex<std::collections::HashMap<String, SignedList>>);

struct SignedList {
    kid: String,
    revoked: Vec<String>,
    iat: i64,
    doc: String,
}

impl RevocationCache {
    const MAX_AGE_S: i64 = 60;

    fn fresh(&self, product_id: &str, kid: &str, revoked: &[String], now_s: i64) -> Option<String> {
        let map = self.0.lock().ok()?;
        let l = map.get(product_id)?;
        let current =
            l.kid == kid && l.revoked == revoked && (0..Self::MAX_AGE_S).contains(&(now_s - l.iat));
        current.then(|| l.doc.clone())
    }

    fn keep(&self, product_id: &str, kid: String, revoked: Vec<String>, iat: i64, doc: String) {
        if let Ok(mut map) = self.0.lock() {
            map.insert(
                product_id.to_owned(),
                SignedList {
                    kid,
                    revoked,
                    iat,
                    doc,
                },
            );
        }
    }
}

impl Licensing {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        orgs: Arc<Orgs>,
        store: Arc<dyn Store>,
        ring: Arc<SharedKeyRing>,
        mailer: Arc<Mailer>,
        links: Arc<MagicLinks>,
        audit: Arc<AuditLog>,
        clock: Arc<dyn Clock>,
        config: LicensingConfig,
    ) -> Self {
        Self {
            orgs,
            store,
            ring,
            mailer,
            links,
            audit,
            clock,
            config,
            revocations: RevocationCache::default(),
        }
    }

    pub fn config(&self) -> &LicensingConfig {
        &self.config
    }

    /// Records an event; a failed write is logged (the action already happened).
    async fn record(&self, ev: AuditEvent) {
        if let Err(e) = self.audit.record(ev).await {
            tracing::error!(error = %e, "audit write failed");
        }
    }

    fn now_s(&self) -> i64 {
        self.clock.now_ms().div_euclid(1000)
    }

    async fn product_name(&self, license: &LicenseRow) -> String {
        match self
            .store
            .product(&public::SCOPE, &license.product_id)
            .await
        {
            Ok(Some(p)) => p.name,
            _ => "your product".to_owned(),
        }
    }
}

/// HMAC-SHA256 under the lookup pepper of `label`, then each part after a NUL.
fn keyed_hash(pepper: &hmac::Key, label: &str, parts: &[&str]) -> [u8; 32] {
    let mut ctx = hmac::Context::with_key(pepper);
    ctx.update(label.as_bytes());
    for p in parts {
        ctx.update(&[0]);
        ctx.update(p.as_bytes());
    }
    let tag = ctx.sign();
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// The stored form of a license key (SPEC L3).
fn key_hash(pepper: &hmac::Key, key: &str) -> [u8; 32] {
    keyed_hash(pepper, "license-key-v1", &[key.trim()])
}

/// The stored form of a machine's canonical identifiers, per license (SPEC L3).
fn machine_hash(pepper: &hmac::Key, license_id: &str, canonical: &str) -> [u8; 32] {
    keyed_hash(pepper, "license-machine-v1", &[license_id, canonical])
}

fn secs_of(ms: i64) -> i64 {
    ms.div_euclid(1000)
}
