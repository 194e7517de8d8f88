//! Storage of licensing (SPEC L1–L7): an org's products and policies, the licenses issued under
//! them, and the machines each license is activated on.
//!
//! Only keyed hashes are stored for license keys and machine identifiers (SPEC L3): bastion-core
//! computes them with the `license_lookup` pepper and looks rows up by them; no store ever sees a
//! raw key or a raw machine identifier. Admin calls run in an org scope (PostgreSQL: RLS by the
//! `licenses.*` permissions); the public activation path, which has no principal, runs as
//! `Scope::System("licensing")`, like sign-in.

use crate::mail::OutboundMail;
use crate::{Scope, StoreResult};

/// A product an org sells (`prd_…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductRow {
    pub id: String,
    pub org_id: String,
    /// Unique per org.
    pub name: String,
    pub created_ms: i64,
}

/// The terms licenses are issued under (`pol_…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRow {
    pub id: String,
    pub org_id: String,
    pub product_id: String,
    /// Unique per product.
    pub name: String,
    /// Machines one license may be active on at once (≥ 1).
    pub max_machines: u32,
    /// How long a license lasts from issue; `None` is perpetual.
    pub duration_ms: Option<i64>,
    /// Sorted, de-duplicated entitlement names.
    pub entitlements: Vec<String>,
    /// How long a machine certificate lets the app run offline.
    pub lease_ms: i64,
    pub created_ms: i64,
}

/// A license as stored: never its key, only the key's keyed hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LicenseRow {
    pub id: String,
    pub org_id: String,
    pub product_id: String,
    pub policy_id: String,
    /// HMAC-SHA256 of the license key under the lookup pepper; unique.
    pub key_hash: [u8; 32],
    /// The licensee's email (normalized): keys are bound to it and revocation links go to it.
    pub email: String,
    /// Copied from the policy at issue, so a later policy change does not alter signed keys.
    pub entitlements: Vec<String>,
    pub max_machines: u32,
    pub lease_ms: i64,
    pub expires_ms: Option<i64>,
    pub created_ms: i64,
    /// Who issued it: a user id or an API key id.
    pub created_by: String,
    /// Failed activations against this key since it was issued or last unfrozen (SPEC L7).
    pub failures: u32,
    pub frozen_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
}

impl LicenseRow {
    /// `revoked` (for good), `frozen` (until an admin unfreezes it) or `active`.
    pub fn status(&self) -> &'static str {
        if self.revoked_ms.is_some() {
            "revoked"
        } else if self.frozen_ms.is_some() {
            "frozen"
        } else {
            "active"
        }
    }
}

/// A machine a license is activated on (`mch_…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineRow {
    pub id: String,
    pub org_id: String,
    pub license_id: String,
    /// HMAC-SHA256 of the canonical machine identifiers under the lookup pepper.
    pub machine_hash: [u8; 32],
    /// A display name the app chose (never an identifier).
    pub name: String,
    pub activated_ms: i64,
    pub last_seen_ms: i64,
}

/// The outcome of [`LicenseStore::activate_machine`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activation {
    /// The machine was added.
    Created(MachineRow),
    /// The machine was already active on this license: its `last_seen_ms` was refreshed.
    Existing(MachineRow),
    /// The license already has `max_machines` other machines; nothing was written.
    LimitReached,
}

/// The outcome of [`LicenseStore::record_key_failure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyFailure {
    /// Failures counted so far, this one included.
    pub failures: u32,
    /// Whether this failure froze the key (exactly one concurrent caller sees `true`).
    pub froze: bool,
}

#[async_trait::async_trait]
pub trait LicenseStore {
    /// Adds a product; a name taken in the org is `Conflict("product_exists")`.
    async fn insert_product(&self, scope: &Scope, product: &ProductRow) -> StoreResult<()>;
    async fn product(&self, scope: &Scope, id: &str) -> StoreResult<Option<ProductRow>>;
    /// The org's products, by name.
    async fn products(&self, scope: &Scope, org_id: &str) -> StoreResult<Vec<ProductRow>>;

    /// Adds a policy to a product of the same org (else `NotFound`); a name taken in the product
    /// is `Conflict("policy_exists")`.
    async fn insert_policy(&self, scope: &Scope, policy: &PolicyRow) -> StoreResult<()>;
    async fn policy(&self, scope: &Scope, id: &str) -> StoreResult<Option<PolicyRow>>;
    /// A product's policies, by name.
    async fn policies(&self, scope: &Scope, product_id: &str) -> StoreResult<Vec<PolicyRow>>;

    /// Stores a license and queues `mail` (the key's delivery) in one transaction, so a license
    /// is never issued without its email nor an email sent for a license that does not exist.
    async fn insert_license(
        &self,
        scope: &Scope,
        license: &LicenseRow,
        mail: Option<&OutboundMail>,
    ) -> StoreResult<()>;
    async fn license(&self, scope: &Scope, id: &str) -> StoreResult<Option<LicenseRow>>;
    async fn license_by_key_hash(
        &self,
        scope: &Scope,
        key_hash: &[u8; 32],
    ) -> StoreResult<Option<LicenseRow>>;
    /// The org's licenses, newest first, optionally of one product, at most `limit`.
    async fn licenses(
        &self,
        scope: &Scope,
        org_id: &str,
        product_id: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<LicenseRow>>;

    /// Activates `machine` on its license, atomically against the machine limit: of any number
    /// of concurrent calls for one license, at most `max_machines` machines exist afterwards.
    /// The same machine hash again is `Existing` (its name and last-seen time refreshed), which
    /// never counts twice. The license must exist (else `NotFound`). A system path only (the
    /// license key is the proof): request scopes are `Forbidden`.
    async fn activate_machine(
        &self,
        scope: &Scope,
        machine: &MachineRow,
        max_machines: u32,
    ) -> StoreResult<Activation>;
    async fn machine_by_hash(
        &self,
        scope: &Scope,
        license_id: &str,
        machine_hash: &[u8; 32],
    ) -> StoreResult<Option<MachineRow>>;
    /// Sets `last_seen_ms` (validation). `false` when the machine is gone. A system path only.
    async fn touch_machine(
        &self,
        scope: &Scope,
        machine_id: &str,
        now_ms: i64,
    ) -> StoreResult<bool>;
    /// A license's machines, oldest first.
    async fn machines(&self, scope: &Scope, license_id: &str) -> StoreResult<Vec<MachineRow>>;
    /// Deactivates one machine of one license and, in the same transaction, revokes its
    /// certificates until `revoked_until_ms` (the end of the longest lease one issued before now
    /// can have): they go into the signed revocation list (SPEC L2, L4). `false` when the machine
    /// was not there.
    async fn delete_machine(
        &self,
        scope: &Scope,
        license_id: &str,
        machine_id: &str,
        now_ms: i64,
        revoked_until_ms: i64,
    ) -> StoreResult<bool>;

    /// Counts one failed activation against a license in one atomic statement and freezes the
    /// key when the count reaches `freeze_at` (SPEC L7). The freeze notice `mail` is queued in
    /// the same transaction, only by the call that froze the key, so it is sent exactly once.
    /// `None` when the caller saw the key frozen already (nothing to announce, so nothing is
    /// sealed for it); should that call still freeze it (an unfreeze in between), no notice goes.
    async fn record_key_failure(
        &self,
        scope: &Scope,
        license_id: &str,
        now_ms: i64,
        freeze_at: u32,
        mail: Option<&OutboundMail>,
    ) -> StoreResult<KeyFailure>;
    /// Freezes (`Some(now)`) or unfreezes (`None`, which also resets the failure count) a
    /// license. `false` when the license was already in that state or does not exist.
    async fn set_frozen(
        &self,
        scope: &Scope,
        license_id: &str,
        frozen_ms: Option<i64>,
    ) -> StoreResult<bool>;
    /// Revokes a license for good. `false` when it was already revoked or does not exist.
    async fn revoke_license(
        &self,
        scope: &Scope,
        license_id: &str,
        now_ms: i64,
    ) -> StoreResult<bool>;
    /// Ids of a product's revoked licenses, sorted (the signed revocation list).
    async fn revoked_licenses(&self, scope: &Scope, product_id: &str) -> StoreResult<Vec<String>>;
    /// Ids of a product's deactivated machines whose certificates may still be within their
    /// lease at `now_ms`, sorted (the signed revocation list).
    async fn revoked_machines(
        &self,
        scope: &Scope,
        product_id: &str,
        now_ms: i64,
    ) -> StoreResult<Vec<String>>;
}
