//! What an org does with licenses: products, policies, issuing (by a service key or an Admin,
//! SPEC L2), listing, freezing, unfreezing and revoking. Every change is audited.
//!
//! Each action exists twice: for a [`Caller`] (API; authorized through the org's permission map
//! and run in its scope) and for the operator's CLI (`Scope::System("license_cli")`).

use bastion_crypto::license::{DocumentKind, LicenseClaims, email_hash};
use bastion_store::{LicenseRow, MachineRow, PolicyRow, ProductRow, Scope, StoreError};
use secrecy::SecretString;

use super::{LicenseServiceError as E, Licensing, key_hash, secs_of};
use crate::audit::{AuditEvent, Category, Outcome};
use crate::mail::Template;
use crate::orgs::{Caller, OrgError};

const CLI: Scope = Scope::System("license_cli");
/// Licenses bought through a verified payment are issued on the payments path.
const PAYMENTS: Scope = Scope::System("payments");
const CLI_ACTOR: &str = "cli";
const MAX_NAME_CHARS: usize = 100;
const MAX_ENTITLEMENTS: usize = 32;
const MAX_ENTITLEMENT_LEN: usize = 64;
const MAX_MACHINES: u32 = 10_000;
const DAY_MS: i64 = 86_400_000;
/// Leases and terms up to 100 years (perpetual licenses have no term at all).
const MAX_DAYS: u32 = 36_500;

/// The terms of a new policy, as an administrator gives them.
#[derive(Debug, Clone)]
pub struct PolicyInput {
    pub name: String,
    pub max_machines: u32,
    /// `None`: perpetual.
    pub duration_days: Option<u32>,
    pub entitlements: Vec<String>,
    /// `None`: the configured default (30 days).
    pub lease_days: Option<u32>,
}

/// A license just issued, with its key: shown once, and mailed to the licensee.
#[derive(Debug)]
pub struct IssuedLicense {
    pub license: LicenseRow,
    pub key: SecretString,
    /// Whether the key was mailed to the licensee: not when the org's mail budget for that
    /// address is spent (the key is in the answer either way).
    pub mailed: bool,
}

/// A license with its machines.
#[derive(Debug)]
pub struct LicenseDetail {
    pub license: LicenseRow,
    pub machines: Vec<MachineRow>,
}

/// Who acts, where: the scope the store calls run in and the id the audit trail names.
struct Acting {
    scope: Scope,
    actor: String,
    org_id: String,
}

/// The id of the license a payment bought: derived, so the payment issues at most one.
fn payment_license_id(org_id: &str, payment_ref: &str) -> String {
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        format!("payment-license-v1\0{org_id}\0{payment_ref}").as_bytes(),
    );
    format!("lic_{}", hex::encode(&digest.as_ref()[..16]))
}

fn clean_entitlements(raw: &[String]) -> Result<Vec<String>, E> {
    let mut out: Vec<String> = Vec::with_capacity(raw.len());
    for e in raw {
        let e = e.trim().to_lowercase();
        let ok = !e.is_empty()
            && e.len() <= MAX_ENTITLEMENT_LEN
            && e.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b));
        if !ok {
            return Err(E::Invalid(format!(
                "an entitlement is 1 to {MAX_ENTITLEMENT_LEN} of a-z, 0-9, _ . : -"
            )));
        }
        out.push(e);
    }
    out.sort();
    out.dedup();
    if out.len() > MAX_ENTITLEMENTS {
        return Err(E::Invalid(format!(
            "at most {MAX_ENTITLEMENTS} entitlements"
        )));
    }
    Ok(out)
}

fn check_days(days: Option<u32>, what: &str) -> Result<Option<i64>, E> {
    match days {
        Some(d) if d == 0 || d > MAX_DAYS => {
            Err(E::Invalid(format!("{what} must be 1 to {MAX_DAYS} days")))
        }
        Some(d) => Ok(Some(i64::from(d) * DAY_MS)),
        None => Ok(None),
    }
}

impl Licensing {
    async fn acting(&self, caller: &Caller, org_id: &str, permission: &str) -> Result<Acting, E> {
        let access = self.orgs.authorize(caller, org_id, permission).await?;
        Ok(Acting {
            scope: access.scope,
            actor: caller.actor().to_owned(),
            org_id: access.org_id,
        })
    }

    fn cli(org_id: &str) -> Acting {
        Acting {
            scope: CLI,
            actor: CLI_ACTOR.to_owned(),
            org_id: org_id.to_owned(),
        }
    }

    async fn audit_admin(&self, acting: &Acting, action: &str, details: serde_json::Value) {
        self.record(
            AuditEvent::new(Category::Admin, action, Outcome::Success)
                .actor(acting.actor.clone())
                .org(acting.org_id.clone())
                .details(details),
        )
        .await;
    }

    pub async fn create_product(
        &self,
        caller: &Caller,
        org_id: &str,
        name: &str,
    ) -> Result<ProductRow, E> {
        let acting = self.acting(caller, org_id, "licenses.issue").await?;
        self.create_product_as(&acting, name).await
    }

    pub async fn create_product_cli(&self, org_id: &str, name: &str) -> Result<ProductRow, E> {
        self.create_product_as(&Self::cli(org_id), name).await
    }

    async fn create_product_as(&self, acting: &Acting, name: &str) -> Result<ProductRow, E> {
        let name = crate::text::clean_text(name, "a product name", 1, MAX_NAME_CHARS)
            .map_err(E::Invalid)?;
        let row = ProductRow {
            id: crate::ids::new_id("prd").map_err(|_| E::Random)?,
            org_id: acting.org_id.clone(),
            name,
            created_ms: self.clock.now_ms(),
        };
        match self.store.insert_product(&acting.scope, &row).await {
            Err(StoreError::Conflict(_)) => return Err(E::Exists("product")),
            other => other?,
        }
        let details = serde_json::json!({ "product": row.id, "name": row.name });
        self.audit_admin(acting, "product.created", details).await;
        Ok(row)
    }

    pub async fn products(&self, caller: &Caller, org_id: &str) -> Result<Vec<ProductRow>, E> {
        let acting = self.acting(caller, org_id, "licenses.read").await?;
        Ok(self.store.products(&acting.scope, org_id).await?)
    }

    pub async fn create_policy(
        &self,
        caller: &Caller,
        org_id: &str,
        product_id: &str,
        input: &PolicyInput,
    ) -> Result<PolicyRow, E> {
        let acting = self.acting(caller, org_id, "licenses.issue").await?;
        self.create_policy_as(&acting, product_id, input).await
    }

    pub async fn create_policy_cli(
        &self,
        org_id: &str,
        product_id: &str,
        input: &PolicyInput,
    ) -> Result<PolicyRow, E> {
        self.create_policy_as(&Self::cli(org_id), product_id, input)
            .await
    }

    async fn create_policy_as(
        &self,
        acting: &Acting,
        product_id: &str,
        input: &PolicyInput,
    ) -> Result<PolicyRow, E> {
        let name = crate::text::clean_text(&input.name, "a policy name", 1, MAX_NAME_CHARS)
            .map_err(E::Invalid)?;
        if input.max_machines == 0 || input.max_machines > MAX_MACHINES {
            return Err(E::Invalid(format!(
                "max_machines must be 1 to {MAX_MACHINES}"
            )));
        }
        let duration_ms = check_days(input.duration_days, "a duration")?;
        let lease_ms =
            check_days(input.lease_days, "a lease")?.unwrap_or(self.config.default_lease_ms);
        let product = self
            .store
            .product(&acting.scope, product_id)
            .await?
            .filter(|p| p.org_id == acting.org_id)
            .ok_or(E::Org(OrgError::NotFound))?;
        let row = PolicyRow {
            id: crate::ids::new_id("pol").map_err(|_| E::Random)?,
            org_id: acting.org_id.clone(),
            product_id: product.id,
            name,
            max_machines: input.max_machines,
            duration_ms,
            entitlements: clean_entitlements(&input.entitlements)?,
            lease_ms,
            created_ms: self.clock.now_ms(),
        };
        match self.store.insert_policy(&acting.scope, &row).await {
            Err(StoreError::Conflict(_)) => return Err(E::Exists("policy")),
            other => other?,
        }
        let details = serde_json::json!({
            "policy": row.id, "product": row.product_id, "name": row.name,
            "max_machines": row.max_machines,
        });
        self.audit_admin(acting, "policy.created", details).await;
        Ok(row)
    }

    pub async fn policies(
        &self,
        caller: &Caller,
        org_id: &str,
        product_id: &str,
    ) -> Result<Vec<PolicyRow>, E> {
        let acting = self.acting(caller, org_id, "licenses.read").await?;
        let policies = self.store.policies(&acting.scope, product_id).await?;
        Ok(policies
            .into_iter()
            .filter(|p| p.org_id == org_id)
            .collect())
    }

    /// Issues a license under `policy_id` to `email`, signs its key, and mails the key to the
    /// licensee in the same transaction as the license is stored (SPEC L1, L2).
    #[tracing::instrument(skip_all, fields(org_id))]
    pub async fn issue(
        &self,
        caller: &Caller,
        org_id: &str,
        policy_id: &str,
        email: &str,
    ) -> Result<IssuedLicense, E> {
        let acting = self.acting(caller, org_id, "licenses.issue").await?;
        let normalized = crate::accounts::normalize_email(email)
            .map_err(|_| E::Invalid("email is not a valid address".to_owned()))?;
        // An org's mail to one address has a budget, license keys included (the payment and CLI
        // paths are bounded by payments and operators).
        let mail = self
            .orgs
            .org_mail_budget(org_id, &normalized)
            .await?
            .is_none();
        self.issue_as(&acting, policy_id, email, None, mail).await
    }

    /// Issues the license a verified payment bought (SPEC P1). Its id is derived from the
    /// payment, so a retried or replayed event finds the license already issued and neither
    /// signs nor mails a second one: `None` then.
    #[tracing::instrument(skip_all, fields(org_id))]
    pub async fn issue_for_payment(
        &self,
        org_id: &str,
        policy_id: &str,
        email: &str,
        payment_ref: &str,
    ) -> Result<Option<IssuedLicense>, E> {
        let acting = Self::payments(org_id);
        let id = payment_license_id(org_id, payment_ref);
        match self
            .issue_as(&acting, policy_id, email, Some(id), true)
            .await
        {
            Ok(issued) => Ok(Some(issued)),
            Err(E::Exists("license")) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn issue_cli(
        &self,
        org_id: &str,
        policy_id: &str,
        email: &str,
    ) -> Result<IssuedLicense, E> {
        self.issue_as(&Self::cli(org_id), policy_id, email, None, true)
            .await
    }

    async fn issue_as(
        &self,
        acting: &Acting,
        policy_id: &str,
        email: &str,
        id: Option<String>,
        mail: bool,
    ) -> Result<IssuedLicense, E> {
        let email = crate::accounts::normalize_email(email)
            .map_err(|_| E::Invalid("email is not a valid address".to_owned()))?;
        let policy = self
            .store
            .policy(&acting.scope, policy_id)
            .await?
            .filter(|p| p.org_id == acting.org_id)
            .ok_or(E::Org(OrgError::NotFound))?;
        let product = self
            .store
            .product(&acting.scope, &policy.product_id)
            .await?
            .ok_or(E::Org(OrgError::NotFound))?;
        let now = self.clock.now_ms();
        let id = match id {
            Some(id) => id,
            None => crate::ids::new_id("lic").map_err(|_| E::Random)?,
        };
        let expires_ms = policy.duration_ms.map(|d| now.saturating_add(d));
        let ring = self.ring.current();
        let signer = ring.license_signer()?;
        let claims = LicenseClaims {
            v: 1,
            kid: signer.kid().to_owned(),
            alg: signer.alg_name().to_owned(),
            lic: id.clone(),
            prd: product.id.clone(),
            pol: policy.id.clone(),
            iat: secs_of(now),
            exp: expires_ms.map(secs_of),
            ent: policy.entitlements.clone(),
            eml: email_hash(&id, &email),
        };
        let key = signer
            .sign(DocumentKind::License, &claims)
            .map_err(|_| E::Signing)?;
        let row = LicenseRow {
            id,
            org_id: acting.org_id.clone(),
            product_id: product.id.clone(),
            policy_id: policy.id.clone(),
            key_hash: key_hash(ring.license_pepper()?, &key),
            email: email.clone(),
            entitlements: policy.entitlements.clone(),
            max_machines: policy.max_machines,
            lease_ms: policy.lease_ms,
            expires_ms,
            created_ms: now,
            created_by: acting.actor.clone(),
            failures: 0,
            frozen_ms: None,
            revoked_ms: None,
        };
        let mail = if mail {
            let template = Template::LicenseIssued {
                key: &key,
                product: product.name.clone(),
            };
            Some(self.mailer.prepare(&email, &template).await?)
        } else {
            None
        };
        match self
            .store
            .insert_license(&acting.scope, &row, mail.as_ref())
            .await
        {
            Ok(()) => {}
            // Only a derived id can collide (a payment's license, issued already).
            Err(StoreError::Conflict(_)) => return Err(E::Exists("license")),
            Err(e) => return Err(e.into()),
        }
        if mail.is_some() {
            self.mailer.queued();
        }
        let details = serde_json::json!({
            "license": row.id, "product": row.product_id, "policy": row.policy_id,
            "mailed": mail.is_some(),
        });
        self.audit_admin(acting, "license.issued", details).await;
        Ok(IssuedLicense {
            license: row,
            key: SecretString::from(key),
            mailed: mail.is_some(),
        })
    }

    pub async fn licenses(
        &self,
        caller: &Caller,
        org_id: &str,
        product_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<LicenseRow>, E> {
        let acting = self.acting(caller, org_id, "licenses.read").await?;
        Ok(self
            .store
            .licenses(&acting.scope, org_id, product_id, limit)
            .await?)
    }

    pub async fn licenses_cli(
        &self,
        org_id: &str,
        product_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<LicenseRow>, E> {
        Ok(self.store.licenses(&CLI, org_id, product_id, limit).await?)
    }

    pub async fn license(
        &self,
        caller: &Caller,
        org_id: &str,
        license_id: &str,
    ) -> Result<LicenseDetail, E> {
        let acting = self.acting(caller, org_id, "licenses.read").await?;
        self.detail(&acting, license_id).await
    }

    /// A license by id for the CLI, whatever its org.
    pub async fn license_cli(&self, license_id: &str) -> Result<LicenseDetail, E> {
        let license = self
            .store
            .license(&CLI, license_id)
            .await?
            .ok_or(E::Org(OrgError::NotFound))?;
        let machines = self.store.machines(&CLI, &license.id).await?;
        Ok(LicenseDetail { license, machines })
    }

    async fn detail(&self, acting: &Acting, license_id: &str) -> Result<LicenseDetail, E> {
        let license = self
            .store
            .license(&acting.scope, license_id)
            .await?
            .filter(|l| l.org_id == acting.org_id)
            .ok_or(E::Org(OrgError::NotFound))?;
        let machines = self.store.machines(&acting.scope, &license.id).await?;
        Ok(LicenseDetail { license, machines })
    }

    /// Freezes a key by hand, or unfreezes it (one action, SPEC L7), which also resets its
    /// failure count. Answers whether anything changed.
    pub async fn set_frozen(
        &self,
        caller: &Caller,
        org_id: &str,
        license_id: &str,
        frozen: bool,
    ) -> Result<bool, E> {
        let acting = self.acting(caller, org_id, "licenses.freeze").await?;
        self.set_frozen_as(&acting, license_id, frozen).await
    }

    pub async fn set_frozen_cli(&self, license_id: &str, frozen: bool) -> Result<bool, E> {
        let license = self.license_cli(license_id).await?.license;
        self.set_frozen_as(&Self::cli(&license.org_id), license_id, frozen)
            .await
    }

    async fn set_frozen_as(
        &self,
        acting: &Acting,
        license_id: &str,
        frozen: bool,
    ) -> Result<bool, E> {
        let license = self.detail(acting, license_id).await?.license;
        let at = frozen.then(|| self.clock.now_ms());
        let changed = self
            .store
            .set_frozen(&acting.scope, &license.id, at)
            .await?;
        if changed {
            let action = if frozen {
                "license.frozen"
            } else {
                "license.unfrozen"
            };
            let details =
                serde_json::json!({ "license": license.id, "failures": license.failures });
            self.audit_admin(acting, action, details).await;
        }
        Ok(changed)
    }

    /// Revokes a license for good; its id joins the product's revocation list.
    pub async fn revoke(&self, caller: &Caller, org_id: &str, license_id: &str) -> Result<bool, E> {
        let acting = self.acting(caller, org_id, "licenses.revoke").await?;
        self.revoke_as(&acting, license_id).await
    }

    /// Revokes the license a refunded payment bought. `false` when it was revoked already.
    pub async fn revoke_for_payment(&self, org_id: &str, payment_ref: &str) -> Result<bool, E> {
        let acting = Self::payments(org_id);
        self.revoke_as(&acting, &payment_license_id(org_id, payment_ref))
            .await
    }

    fn payments(org_id: &str) -> Acting {
        Acting {
            scope: PAYMENTS,
            actor: "payments".to_owned(),
            org_id: org_id.to_owned(),
        }
    }

    pub async fn revoke_cli(&self, license_id: &str) -> Result<bool, E> {
        let license = self.license_cli(license_id).await?.license;
        self.revoke_as(&Self::cli(&license.org_id), license_id)
            .await
    }

    async fn revoke_as(&self, acting: &Acting, license_id: &str) -> Result<bool, E> {
        let license = self.detail(acting, license_id).await?.license;
        let changed = self
            .store
            .revoke_license(&acting.scope, &license.id, self.clock.now_ms())
            .await?;
        if changed {
            let details = serde_json::json!({ "license": license.id, "via": "admin" });
            self.audit_admin(acting, "license.revoked", details).await;
        }
        Ok(changed)
    }

    /// Deactivates a machine of a license (e.g. a lost laptop), freeing its seat.
    pub async fn remove_machine(
        &self,
        caller: &Caller,
        org_id: &str,
        license_id: &str,
        machine_id: &str,
    ) -> Result<(), E> {
        let acting = self.acting(caller, org_id, "licenses.revoke").await?;
        let license = self.detail(&acting, license_id).await?.license;
        let now = self.clock.now_ms();
        // Its certificates are revoked until the longest lease issued before now has ended.
        if !self
            .store
            .delete_machine(
                &acting.scope,
                &license.id,
                machine_id,
                now,
                now.saturating_add(license.lease_ms),
            )
            .await?
        {
            return Err(E::Org(OrgError::NotFound));
        }
        let details = serde_json::json!({ "license": license.id, "machine": machine_id });
        self.audit_admin(&acting, "license.machine_removed", details)
            .await;
        Ok(())
    }
}
