//! Org projects and their named secrets (SPEC S1, S4).
//!
//! Values are sealed by the [`Vault`] under the `secrets` purpose, bound to their row, before
//! they reach the store; a list shows names and metadata only. A value comes back out only
//! through [`Secrets::reveal`], which needs `secrets.reveal` (Admin and above by default) and a
//! reason, and is audited before the value is returned: if the audit write fails, nothing is
//! revealed. Values travel as [`SecretString`], so no `Debug`, log line or error shows them.

use std::sync::Arc;

use bastion_store::{
    ProjectRow, SealedColumn, SecretMeta, SecretRow, SecretUpdate, Store, StoreError,
};
use secrecy::{ExposeSecret, SecretString};

use super::{Field, Sealed, Vault, VaultError};
use crate::Clock;
use crate::audit::{AuditEvent, AuditLog, Category, Outcome};
use crate::orgs::{Access, Caller, OrgError, Orgs};

/// Secret names are environment-variable names, since jobs receive secrets that way (SPEC J3).
const MAX_NAME_LEN: usize = 128;
/// Values up to 64 KiB: certificates and service-account files fit, bulk data does not.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
const MAX_PROJECT_NAME_CHARS: usize = 100;
const MIN_REASON_CHARS: usize = 3;
const MAX_REASON_CHARS: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(transparent)]
    Org(#[from] OrgError),
    #[error("{0}")]
    Invalid(String),
    #[error("a {0} of that name already exists")]
    Exists(&'static str),
    #[error("the secret could not be opened: {0}")]
    Vault(#[from] VaultError),
    #[error("the reveal could not be audited, so nothing was revealed")]
    AuditUnavailable,
    #[error("secret storage: {0}")]
    Store(StoreError),
    #[error("no randomness for an id")]
    Random,
}

impl From<StoreError> for SecretError {
    fn from(e: StoreError) -> Self {
        match e {
            // Another org's row, or a missing one: the same answer as for a made-up id.
            StoreError::NotFound | StoreError::Forbidden => Self::Org(OrgError::NotFound),
            other => Self::Store(other),
        }
    }
}

/// A revealed secret: its metadata and its value (redacted in `Debug`).
#[derive(Debug)]
pub struct Revealed {
    pub meta: SecretMeta,
    pub value: SecretString,
}

pub struct Secrets {
    orgs: Arc<Orgs>,
    store: Arc<dyn Store>,
    vault: Arc<Vault>,
    audit: Arc<AuditLog>,
    clock: Arc<dyn Clock>,
}

fn check_name(name: &str) -> Result<(), SecretError> {
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    if !first_ok
        || name.len() > MAX_NAME_LEN
        || !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(SecretError::Invalid(format!(
            "a secret name is an environment-variable name: a letter or _ then letters, digits or _, at most {MAX_NAME_LEN}"
        )));
    }
    Ok(())
}

fn check_value(value: &SecretString) -> Result<(), SecretError> {
    let len = value.expose_secret().len();
    if len == 0 || len > MAX_VALUE_BYTES {
        return Err(SecretError::Invalid(format!(
            "a secret value must be 1 to {MAX_VALUE_BYTES} bytes"
        )));
    }
    Ok(())
}

fn clean_text(raw: &str, what: &str, min: usize, max: usize) -> Result<String, SecretError> {
    crate::text::clean_text(raw, what, min, max).map_err(SecretError::Invalid)
}

fn meta_of(row: &SecretRow) -> SecretMeta {
    SecretMeta {
        id: row.id.clone(),
        project_id: row.project_id.clone(),
        name: row.name.clone(),
        version: row.version,
        created_ms: row.created_ms,
        updated_ms: row.updated_ms,
        updated_by: row.updated_by.clone(),
    }
}

impl Secrets {
    pub fn new(
        orgs: Arc<Orgs>,
        store: Arc<dyn Store>,
        vault: Arc<Vault>,
        audit: Arc<AuditLog>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            orgs,
            store,
            vault,
            audit,
            clock,
        }
    }

    fn event(
        access: &Access,
        caller: &Caller,
        action: &str,
        outcome: Outcome,
        details: serde_json::Value,
    ) -> AuditEvent {
        AuditEvent::new(Category::Admin, action, outcome)
            .actor(caller.actor())
            .org(access.org_id.clone())
            .details(details)
    }

    /// Records a change that already happened; a failed write is logged, not a 500.
    async fn audit(
        &self,
        access: &Access,
        caller: &Caller,
        action: &str,
        details: serde_json::Value,
    ) {
        let ev = Self::event(access, caller, action, Outcome::Success, details);
        if let Err(e) = self.audit.record(ev).await {
            tracing::error!(error = %e, "audit write failed");
        }
    }

    async fn project_in(
        &self,
        access: &Access,
        project_id: &str,
    ) -> Result<ProjectRow, SecretError> {
        self.store
            .project(&access.scope, &access.org_id, project_id)
            .await?
            .ok_or(SecretError::Org(OrgError::NotFound))
    }

    #[tracing::instrument(skip_all, fields(org_id))]
    pub async fn create_project(
        &self,
        caller: &Caller,
        org_id: &str,
        name: &str,
    ) -> Result<ProjectRow, SecretError> {
        let access = self
            .orgs
            .authorize(caller, org_id, "projects.write")
            .await?;
        let name = clean_text(name, "a project name", 1, MAX_PROJECT_NAME_CHARS)?;
        let row = ProjectRow {
            id: crate::ids::new_id("prj").map_err(|_| SecretError::Random)?,
            org_id: org_id.to_owned(),
            name,
            created_by: caller.actor().to_owned(),
            created_ms: self.clock.now_ms(),
        };
        match self.store.create_project(&access.scope, &row).await {
            Err(StoreError::Conflict(_)) => return Err(SecretError::Exists("project")),
            other => other?,
        }
        let details = serde_json::json!({ "project": row.id, "name": row.name });
        self.audit(&access, caller, "project.created", details)
            .await;
        Ok(row)
    }

    pub async fn projects(
        &self,
        caller: &Caller,
        org_id: &str,
    ) -> Result<Vec<ProjectRow>, SecretError> {
        let access = self.orgs.authorize(caller, org_id, "projects.read").await?;
        Ok(self.store.projects(&access.scope, org_id).await?)
    }

    /// Deletes a project and every secret in it.
    #[tracing::instrument(skip_all, fields(org_id))]
    pub async fn delete_project(
        &self,
        caller: &Caller,
        org_id: &str,
        project_id: &str,
    ) -> Result<(), SecretError> {
        let access = self
            .orgs
            .authorize(caller, org_id, "projects.write")
            .await?;
        let project = self.project_in(&access, project_id).await?;
        if !self
            .store
            .delete_project(&access.scope, org_id, project_id)
            .await?
        {
            return Err(SecretError::Org(OrgError::NotFound));
        }
        let details = serde_json::json!({ "project": project.id, "name": project.name });
        self.audit(&access, caller, "project.deleted", details)
            .await;
        Ok(())
    }

    /// Creates a secret; [`SecretError::Exists`] when the project already has that name.
    #[tracing::instrument(skip_all, fields(org_id))]
    pub async fn create(
        &self,
        caller: &Caller,
        org_id: &str,
        project_id: &str,
        name: &str,
        value: &SecretString,
    ) -> Result<SecretMeta, SecretError> {
        let access = self.orgs.authorize(caller, org_id, "secrets.write").await?;
        check_name(name)?;
        check_value(value)?;
        self.project_in(&access, project_id).await?;
        let id = crate::ids::new_id("sec").map_err(|_| SecretError::Random)?;
        let sealed = self.seal_value(&id, value).await?;
        let now = self.clock.now_ms();
        let row = SecretRow {
            id,
            org_id: org_id.to_owned(),
            project_id: project_id.to_owned(),
            name: name.to_owned(),
            value_key: sealed.key_id,
            value: sealed.envelope,
            version: 1,
            created_ms: now,
            updated_ms: now,
            updated_by: caller.actor().to_owned(),
        };
        match self.store.insert_secret(&access.scope, &row).await {
            Err(StoreError::Conflict(_)) => return Err(SecretError::Exists("secret")),
            other => other?,
        }
        let details = serde_json::json!({ "project": project_id, "name": name, "version": 1 });
        self.audit(&access, caller, "secret.created", details).await;
        Ok(meta_of(&row))
    }

    /// Replaces a secret's value; its version goes up by one.
    #[tracing::instrument(skip_all, fields(org_id))]
    pub async fn update(
        &self,
        caller: &Caller,
        org_id: &str,
        project_id: &str,
        name: &str,
        value: &SecretString,
    ) -> Result<SecretMeta, SecretError> {
        let access = self.orgs.authorize(caller, org_id, "secrets.write").await?;
        check_value(value)?;
        let row = self.row(&access, project_id, name).await?;
        let sealed = self.seal_value(&row.id, value).await?;
        let update = SecretUpdate {
            value_key: sealed.key_id,
            value: sealed.envelope,
            updated_ms: self.clock.now_ms(),
            updated_by: caller.actor().to_owned(),
        };
        let version = self
            .store
            .update_secret(&access.scope, org_id, &row.id, &update)
            .await?
            .ok_or(SecretError::Org(OrgError::NotFound))?;
        let details =
            serde_json::json!({ "project": project_id, "name": name, "version": version });
        self.audit(&access, caller, "secret.updated", details).await;
        Ok(SecretMeta {
            version,
            updated_ms: update.updated_ms,
            updated_by: update.updated_by,
            ..meta_of(&row)
        })
    }

    /// Names and metadata of a project's secrets; never a value.
    pub async fn list(
        &self,
        caller: &Caller,
        org_id: &str,
        project_id: &str,
    ) -> Result<Vec<SecretMeta>, SecretError> {
        let access = self.orgs.authorize(caller, org_id, "secrets.read").await?;
        self.project_in(&access, project_id).await?;
        Ok(self
            .store
            .secrets(&access.scope, org_id, project_id)
            .await?)
    }

    #[tracing::instrument(skip_all, fields(org_id))]
    pub async fn delete(
        &self,
        caller: &Caller,
        org_id: &str,
        project_id: &str,
        name: &str,
    ) -> Result<(), SecretError> {
        let access = self.orgs.authorize(caller, org_id, "secrets.write").await?;
        if !self
            .store
            .delete_secret(&access.scope, org_id, project_id, name)
            .await?
        {
            return Err(SecretError::Org(OrgError::NotFound));
        }
        let details = serde_json::json!({ "project": project_id, "name": name });
        self.audit(&access, caller, "secret.deleted", details).await;
        Ok(())
    }

    /// Returns a secret's value. Needs `secrets.reveal` and a reason of 3–500 characters, which
    /// the audit trail keeps; the event is written first, and without it nothing is revealed.
    #[tracing::instrument(skip_all, fields(org_id))]
    pub async fn reveal(
        &self,
        caller: &Caller,
        org_id: &str,
        project_id: &str,
        name: &str,
        reason: &str,
    ) -> Result<Revealed, SecretError> {
        let access = self
            .orgs
            .authorize(caller, org_id, "secrets.reveal")
            .await?;
        let reason = clean_text(reason, "a reason", MIN_REASON_CHARS, MAX_REASON_CHARS)?;
        let row = self.row(&access, project_id, name).await?;
        let opened = self
            .vault
            .open(&Field::of(SealedColumn::SecretValue, &row.id), &row.value);
        let details = serde_json::json!({
            "project": project_id, "name": name, "version": row.version, "reason": reason,
        });
        let plain = match opened {
            Ok(p) => p,
            Err(e) => {
                let details = serde_json::json!({
                    "project": project_id, "name": name, "version": row.version,
                    "reason": reason, "error": e.to_string(),
                });
                let ev = Self::event(
                    &access,
                    caller,
                    "secret.reveal_failed",
                    Outcome::Failure,
                    details,
                );
                if let Err(audit) = self.audit.record(ev).await {
                    tracing::error!(error = %audit, "audit write failed");
                }
                return Err(e.into());
            }
        };
        let ev = Self::event(
            &access,
            caller,
            "secret.revealed",
            Outcome::Success,
            details,
        );
        if let Err(e) = self.audit.record(ev).await {
            tracing::error!(error = %e, "audit write failed; the secret was not revealed");
            return Err(SecretError::AuditUnavailable);
        }
        // Valid UTF-8 by construction (values enter as strings); lossy only if the row was
        // forged with the key, which the AEAD rules out.
        let value = SecretString::from(String::from_utf8_lossy(&plain).into_owned());
        Ok(Revealed {
            meta: meta_of(&row),
            value,
        })
    }

    /// Seals a value for the secret row `id` (its context: the vault binds it to that row).
    async fn seal_value(&self, id: &str, value: &SecretString) -> Result<Sealed, SecretError> {
        Ok(self
            .vault
            .seal(
                &Field::of(SealedColumn::SecretValue, id),
                value.expose_secret().as_bytes(),
            )
            .await?)
    }

    async fn row(
        &self,
        access: &Access,
        project_id: &str,
        name: &str,
    ) -> Result<SecretRow, SecretError> {
        self.store
            .secret(&access.scope, &access.org_id, project_id, name)
            .await?
            .ok_or(SecretError::Org(OrgError::NotFound))
    }
}
