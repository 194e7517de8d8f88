//! What the app calls with a license key (no account): activate, validate, deactivate, list
//! machines, ask for revocation; and the signed documents anyone may fetch.

use bastion_crypto::license::{
    CertificateClaims, DocumentKind, LicenseClaims, LicenseError, LicensePublicKey,
    RevocationClaims, canonical_machine, email_hash, machine_binding,
};
use bastion_store::{Activation, AttemptDecision, AttemptOutcome, LicenseRow, MachineRow, Scope};
use secrecy::{ExposeSecret, SecretString};

use super::{LicenseServiceError as E, Licensing, key_hash, machine_hash, secs_of};
use crate::audit::{AuditEvent, Category, Outcome};
use crate::limits::{Limit, Limiter, Refusal};
use crate::links::LinkPurpose;
use crate::mail::Template;

/// The system path of requests proved by a license key rather than a principal.
pub(super) const SCOPE: Scope = Scope::System("licensing");
const MAX_MACHINE_NAME_CHARS: usize = 100;

/// A license key with the email it is bound to and the machine asking (SPEC L2).
pub struct ActivationRequest {
    pub key: SecretString,
    pub email: String,
    pub components: Vec<String>,
    /// A display name; only activation uses it.
    pub machine_name: String,
    /// The caller's IP (the abuse counters key on it).
    pub ip: String,
}

impl std::fmt::Debug for ActivationRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActivationRequest")
            .field("ip", &self.ip)
            .finish_non_exhaustive()
    }
}

/// A machine's signed, expiring permission to run offline (SPEC L4).
#[derive(Debug, Clone)]
pub struct MachineCertificate {
    pub license_id: String,
    pub machine_id: String,
    pub certificate: String,
    pub lease_expires_ms: i64,
    pub entitlements: Vec<String>,
}

/// Why an attempt failed, as counted and audited.
#[derive(Debug, Clone, Copy)]
enum Failure {
    Signature,
    UnknownKey,
    EmailMismatch,
    Revoked,
    Frozen,
}

impl Failure {
    fn as_str(self) -> &'static str {
        match self {
            Self::Signature => "bad_signature",
            Self::UnknownKey => "unknown_key",
            Self::EmailMismatch => "email_mismatch",
            Self::Revoked => "revoked",
            Self::Frozen => "frozen",
        }
    }

    fn error(self) -> E {
        match self {
            Self::Signature | Self::UnknownKey | Self::EmailMismatch => E::InvalidLicense,
            Self::Revoked => E::Revoked,
            Self::Frozen => E::Frozen,
        }
    }
}

fn ip_key(ip: &str) -> String {
    crate::accounts::attempt_key("license-ip", ip)
}

impl Licensing {
    fn limiter(&self) -> Limiter {
        Limiter::new(self.store.clone(), self.clock.clone(), SCOPE)
    }

    /// Refuses the request while its IP is locked out (SPEC L6). Counts nothing: only failures
    /// are counted, so an office activating many machines is never locked out. Unlike sign-in,
    /// a check holds no reservation: the limit of 5 would cap one address at 5 activations in
    /// flight (measured: 55–90 % of activation throughput lost), so a burst already in flight
    /// when the 5th failure lands still finishes.
    async fn check_ip(&self, ip: &str) -> Result<(), E> {
        let now = self.clock.now_ms();
        match self.limiter().locked_until(&ip_key(ip)).await? {
            Some(until_ms) => Err(E::Locked {
                retry_after_secs: Refusal::Locked { until_ms }.retry_after_secs(now),
            }),
            None => Ok(()),
        }
    }

    /// Counts a failure against the IP and, when the key is known, against the key; the 20th
    /// against a key freezes it and mails its licensee, once (SPEC L6, L7).
    async fn fail(&self, ip: &str, license: Option<&LicenseRow>, why: Failure) -> E {
        let now = self.clock.now_ms();
        let mut details = serde_json::json!({ "ip": ip, "reason": why.as_str() });
        let mut org = None;
        let limit = Limit {
            key: ip_key(ip),
            rule: self.config.ip_rule(),
        };
        let settled = match self.limiter().record(&limit, AttemptOutcome::Failed).await {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, "license failure not counted against the ip");
                None
            }
        };
        if let Some(until_ms) = settled.and_then(|s| s.lock_started_until_ms) {
            details["ip_locked"] = true.into();
            // Audited once per lock, not once per request it refuses.
            self.record(
                AuditEvent::new(
                    Category::Action,
                    "license.activation_locked",
                    Outcome::Denied,
                )
                .details(serde_json::json!({ "ip": ip, "until_ms": until_ms })),
            )
            .await;
        }
        if let Some(lic) = license {
            details["license"] = lic.id.clone().into();
            org = Some(lic.org_id.clone());
            let frozen = async {
                // A key already frozen has nothing to announce: no lookup, nothing sealed.
                let mail = match lic.frozen_ms {
                    Some(_) => None,
                    None => {
                        let product = self.product_name(lic).await;
                        Some(
                            self.mailer
                                .prepare(&lic.email, &Template::LicenseFrozen { product })
                                .await?,
                        )
                    }
                };
                let counted = self
                    .store
                    .record_key_failure(
                        &SCOPE,
                        &lic.id,
                        now,
                        self.config.key_failures,
                        mail.as_ref(),
                    )
                    .await?;
                Ok::<_, E>(counted)
            }
            .await;
            match frozen {
                Ok(counted) => {
                    details["key_failures"] = counted.failures.into();
                    if counted.froze {
                        self.mailer.queued();
                        let mut ev =
                            AuditEvent::new(Category::Action, "license.frozen", Outcome::Success)
                                .org(lic.org_id.clone())
                                .details(serde_json::json!({
                                    "license": lic.id, "failures": counted.failures,
                                }));
                        ev = ev.actor("system:licensing");
                        self.record(ev).await;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "license failure not counted against the key")
                }
            }
        }
        let mut ev = AuditEvent::new(
            Category::Action,
            "license.activation_failed",
            Outcome::Failure,
        )
        .details(details);
        if let Some(org) = org {
            ev = ev.org(org);
        }
        self.record(ev).await;
        why.error()
    }

    /// Checks a key offline, finds its license by keyed hash, and checks the email, the
    /// license's state and its expiry. Every failure the abuse counters care about is counted.
    async fn authenticate(
        &self,
        key: &SecretString,
        email: &str,
        ip: &str,
    ) -> Result<(LicenseClaims, LicenseRow), E> {
        self.check_ip(ip).await?;
        let key = key.expose_secret().trim();
        let now_s = self.now_s();
        let ring = self.ring.current();
        // Email and expiry are checked below, against the stored license.
        let claims = match ring.license_verifier().verify_license(key, None, now_s, 0) {
            Ok(c) => c,
            // Genuine but past its term: not an attack, so not counted.
            Err(LicenseError::Expired) => return Err(E::Expired),
            Err(_) => return Err(self.fail(ip, None, Failure::Signature).await),
        };
        let hash = key_hash(ring.license_pepper()?, key);
        let license = match self.store.license_by_key_hash(&SCOPE, &hash).await? {
            Some(l) if l.id == claims.lic => l,
            _ => return Err(self.fail(ip, None, Failure::UnknownKey).await),
        };
        // Keys are issued to the normalized address (UTS 46 domain, NFKC): the same form here.
        let email = crate::accounts::normalize_email(email).unwrap_or_else(|_| email.to_owned());
        let expected = email_hash(&license.id, &email);
        if !bastion_crypto::ct_eq(expected.as_bytes(), claims.eml.as_bytes()) {
            return Err(self.fail(ip, Some(&license), Failure::EmailMismatch).await);
        }
        if license.revoked_ms.is_some() {
            return Err(self.fail(ip, Some(&license), Failure::Revoked).await);
        }
        if license.frozen_ms.is_some() {
            return Err(self.fail(ip, Some(&license), Failure::Frozen).await);
        }
        if license.expires_ms.is_some_and(|e| e <= self.clock.now_ms()) {
            return Err(E::Expired);
        }
        Ok((claims, license))
    }

    fn canonical(components: &[String]) -> Result<String, E> {
        canonical_machine(components).map_err(|e| E::Invalid(e.to_string()))
    }

    fn certificate(
        &self,
        license: &LicenseRow,
        machine: &MachineRow,
        canonical: &str,
    ) -> Result<MachineCertificate, E> {
        let now = self.clock.now_ms();
        let lease_end = now.saturating_add(license.lease_ms);
        let lease_end = license.expires_ms.map_or(lease_end, |e| e.min(lease_end));
        let ring = self.ring.current();
        let signer = ring.license_signer()?;
        let claims = CertificateClaims {
            v: 1,
            kid: signer.kid().to_owned(),
            alg: signer.alg_name().to_owned(),
            lic: license.id.clone(),
            mch: machine.id.clone(),
            mh: machine_binding(&license.id, canonical),
            ent: license.entitlements.clone(),
            iat: secs_of(now),
            exp: secs_of(lease_end),
        };
        let certificate = signer
            .sign(DocumentKind::Certificate, &claims)
            .map_err(|_| E::Signing)?;
        Ok(MachineCertificate {
            license_id: license.id.clone(),
            machine_id: machine.id.clone(),
            certificate,
            lease_expires_ms: claims.exp * 1000,
            entitlements: license.entitlements.clone(),
        })
    }

    fn event(license: &LicenseRow, action: &str, details: serde_json::Value) -> AuditEvent {
        AuditEvent::new(Category::Action, action, Outcome::Success)
            .actor(format!("license:{}", license.id))
            .org(license.org_id.clone())
            .details(details)
    }

    /// Activates the asking machine (SPEC L2, L4): at most the policy's number of machines,
    /// enforced atomically; the same machine again refreshes its certificate.
    #[tracing::instrument(skip_all, fields(ip = %req.ip))]
    pub async fn activate(&self, req: &ActivationRequest) -> Result<MachineCertificate, E> {
        let canonical = Self::canonical(&req.components)?;
        let name = crate::text::clean_text(
            &req.machine_name,
            "a machine name",
            0,
            MAX_MACHINE_NAME_CHARS,
        )
        .map_err(E::Invalid)?;
        let (_, license) = self.authenticate(&req.key, &req.email, &req.ip).await?;
        let ring = self.ring.current();
        let now = self.clock.now_ms();
        let row = MachineRow {
            id: crate::ids::new_id("mch").map_err(|_| E::Random)?,
            org_id: license.org_id.clone(),
            license_id: license.id.clone(),
            machine_hash: machine_hash(ring.license_pepper()?, &license.id, &canonical),
            name,
            activated_ms: now,
            last_seen_ms: now,
        };
        let (machine, fresh) = match self
            .store
            .activate_machine(&SCOPE, &row, license.max_machines)
            .await?
        {
            Activation::Created(m) => (m, true),
            Activation::Existing(m) => (m, false),
            Activation::LimitReached => {
                self.record(
                    AuditEvent::new(Category::Action, "license.machine_limit", Outcome::Denied)
                        .org(license.org_id.clone())
                        .details(serde_json::json!({ "license": license.id, "ip": req.ip })),
                )
                .await;
                return Err(E::MachineLimit(license.max_machines));
            }
        };
        let cert = self.certificate(&license, &machine, &canonical)?;
        if fresh {
            let details = serde_json::json!({ "machine": machine.id, "ip": req.ip });
            self.record(Self::event(&license, "license.activated", details))
                .await;
        }
        Ok(cert)
    }

    /// Validates an activated machine and returns a fresh certificate (a renewed lease).
    #[tracing::instrument(skip_all, fields(ip = %req.ip))]
    pub async fn validate(&self, req: &ActivationRequest) -> Result<MachineCertificate, E> {
        let canonical = Self::canonical(&req.components)?;
        let (_, license) = self.authenticate(&req.key, &req.email, &req.ip).await?;
        let hash = machine_hash(
            self.ring.current().license_pepper()?,
            &license.id,
            &canonical,
        );
        let machine = self
            .store
            .machine_by_hash(&SCOPE, &license.id, &hash)
            .await?
            .ok_or(E::NotActivated)?;
        if !self
            .store
            .touch_machine(&SCOPE, &machine.id, self.clock.now_ms())
            .await?
        {
            return Err(E::NotActivated);
        }
        self.certificate(&license, &machine, &canonical)
    }

    /// Frees a seat: the licensee deactivates one of their machines.
    #[tracing::instrument(skip_all, fields(ip = %ip))]
    pub async fn deactivate(
        &self,
        key: &SecretString,
        email: &str,
        machine_id: &str,
        ip: &str,
    ) -> Result<(), E> {
        let (_, license) = self.authenticate(key, email, ip).await?;
        self.limit_deactivations(&license, ip).await?;
        let now = self.clock.now_ms();
        // Its certificates are revoked until the longest lease issued before now has ended, so
        // a deactivated copy stops at the next revocation list, not at its lease's end.
        if !self
            .store
            .delete_machine(
                &SCOPE,
                &license.id,
                machine_id,
                now,
                now.saturating_add(license.lease_ms),
            )
            .await?
        {
            return Err(E::NotActivated);
        }
        let details = serde_json::json!({ "machine": machine_id, "ip": ip });
        self.record(Self::event(&license, "license.deactivated", details))
            .await;
        Ok(())
    }

    /// Counts one deactivation of `license` against its daily budget (activation churn: each
    /// cycle of activate and deactivate would otherwise mint another certificate). The refusal
    /// that starts a lock is audited once.
    async fn limit_deactivations(&self, license: &LicenseRow, ip: &str) -> Result<(), E> {
        let now = self.clock.now_ms();
        let rule = self.config.deactivation_rule();
        let key = crate::accounts::attempt_key("license-deactivations", &license.id);
        match self
            .store
            .register_attempt(&SCOPE, &key, now, &rule)
            .await?
        {
            AttemptDecision::Allowed { .. } => Ok(()),
            AttemptDecision::Locked { until_ms } => {
                if until_ms == now.saturating_add(rule.lockout_ms) {
                    let details = serde_json::json!({
                        "ip": ip, "limit": rule.max_attempts, "until_ms": until_ms,
                    });
                    self.record(
                        Self::event(license, "license.deactivations_limited", details)
                            .actor(format!("licensee:{}", license.id)),
                    )
                    .await;
                }
                let secs = (until_ms - now).max(1);
                Err(E::ChurnLimited {
                    retry_after_secs: u64::try_from((secs + 999) / 1000).unwrap_or(1),
                })
            }
        }
    }

    /// The licensee's machines (names and dates; never identifiers).
    pub async fn my_machines(
        &self,
        key: &SecretString,
        email: &str,
        ip: &str,
    ) -> Result<Vec<MachineRow>, E> {
        let (_, license) = self.authenticate(key, email, ip).await?;
        Ok(self.store.machines(&SCOPE, &license.id).await?)
    }

    /// Asks to revoke a license from an activated app (SPEC L5): the key, a valid certificate
    /// for this machine, and a machine still active prove the request; a magic link to the
    /// licensee's email confirms it.
    #[tracing::instrument(skip_all, fields(ip = %req.ip))]
    pub async fn request_revoke(
        &self,
        req: &ActivationRequest,
        certificate: &str,
    ) -> Result<(), E> {
        let canonical = Self::canonical(&req.components)?;
        let (_, license) = self.authenticate(&req.key, &req.email, &req.ip).await?;
        let ring = self.ring.current();
        ring.license_verifier()
            .verify_certificate(certificate, &license.id, &canonical, self.now_s(), 0)
            .map_err(|_| E::InvalidCertificate)?;
        let hash = machine_hash(ring.license_pepper()?, &license.id, &canonical);
        let machine = self
            .store
            .machine_by_hash(&SCOPE, &license.id, &hash)
            .await?
            .ok_or(E::NotActivated)?;
        let product = self.product_name(&license).await;
        self.links
            .send(
                LinkPurpose::LicenseRevoke,
                &license.id,
                &license.email,
                |link| Template::LicenseRevoke { link, product },
            )
            .await?;
        let details = serde_json::json!({ "machine": machine.id, "ip": req.ip });
        self.record(Self::event(&license, "license.revoke_requested", details))
            .await;
        Ok(())
    }

    /// Confirms a revocation with the link from the mail: once, before it expires, and only
    /// for the license it was sent for.
    #[tracing::instrument(skip_all)]
    pub async fn confirm_revoke(&self, token: &SecretString) -> Result<String, E> {
        let link = self
            .links
            .consume(LinkPurpose::LicenseRevoke, token)
            .await?;
        let license = self
            .store
            .license(&SCOPE, &link.subject)
            .await?
            .ok_or(E::InvalidLink)?;
        let revoked = self
            .store
            .revoke_license(&SCOPE, &license.id, self.clock.now_ms())
            .await?;
        if revoked {
            let details = serde_json::json!({ "via": "magic_link" });
            let ev = Self::event(&license, "license.revoked", details)
                .actor(format!("licensee:{}", license.id));
            self.record(ev).await;
        }
        Ok(license.id)
    }

    /// A product's signed revocation list (SPEC L5), freshly dated: the app keeps the newest.
    pub async fn revocation_list(&self, product_id: &str) -> Result<String, E> {
        if self.store.product(&SCOPE, product_id).await?.is_none() {
            return Err(E::Org(crate::orgs::OrgError::NotFound));
        }
        let revoked = self.store.revoked_licenses(&SCOPE, product_id).await?;
        let machines = self
            .store
            .revoked_machines(&SCOPE, product_id, self.clock.now_ms())
            .await?;
        let ring = self.ring.current();
        let signer = ring.license_signer()?;
        let now = self.now_s();
        // Anyone may fetch the list: re-signing it per request would hand out an RSA
        // signature per GET, so a list still current (same key, same ids) is reused briefly.
        // The cache compares licenses and machines as one list of ids.
        let mut ids = revoked.clone();
        ids.extend(machines.iter().cloned());
        if let Some(doc) = self.revocations.fresh(product_id, signer.kid(), &ids, now) {
            return Ok(doc);
        }
        let claims = RevocationClaims {
            v: 1,
            kid: signer.kid().to_owned(),
            alg: signer.alg_name().to_owned(),
            prd: product_id.to_owned(),
            iat: now,
            revoked,
            machines,
        };
        let doc = signer
            .sign(DocumentKind::Revocations, &claims)
            .map_err(|_| E::Signing)?;
        self.revocations
            .keep(product_id, claims.kid, ids, now, doc.clone());
        Ok(doc)
    }

    /// Every license public key (apps bake these in; old ones keep verifying old keys).
    pub fn public_keys(&self) -> Vec<LicensePublicKey> {
        self.ring.current().license_public_keys()
    }
}
