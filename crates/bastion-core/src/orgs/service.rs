//! The organizations service: who may act in an org ([`Orgs::authorize`], the one decision the
//! API uses), and orgs and memberships. Every change is audited in category `admin`.
//!
//! A caller outside an org learns nothing about it: every refusal for a non-member is
//! [`OrgError::NotFound`], the same answer as for an org that does not exist. Members without
//! the permission get [`OrgError::Forbidden`], which tells them only what they already know.

use std::sync::Arc;

use bastion_store::{
    AuditRecord, KeyKind, MemberChange, MemberRow, OrgRow, Scope, Store, StoreError, ThrottleRule,
};

use super::api_keys::KeyIdentity;
use super::roles::{Level, PermissionMap, RoleError, check_level_change};
use crate::Clock;
use crate::audit::{AuditEvent, AuditLog, Category, Outcome};
use crate::links::{LinkError, MagicLinks};
use crate::mail::MailError;

pub(super) const SYSTEM: Scope = Scope::System("orgs");
const MAX_NAME_CHARS: usize = 200;

/// Who makes an org-scoped request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A signed-in user (access token).
    User { user_id: String },
    /// An organization's API key, already authenticated.
    Key(KeyIdentity),
}

impl Caller {
    pub fn user(user_id: &str) -> Self {
        Self::User {
            user_id: user_id.to_owned(),
        }
    }

    /// The id that goes into audit events as the actor.
    pub fn actor(&self) -> &str {
        match self {
            Self::User { user_id } => user_id,
            Self::Key(k) => &k.key_id,
        }
    }
}

/// A caller's standing in one org: the scope its store calls run in, and its level.
#[derive(Debug, Clone)]
pub struct Access {
    pub org_id: String,
    pub scope: Scope,
    /// A member's level; a service key acts as an Admin; `None` for a publishable key.
    pub level: Option<Level>,
}

#[derive(Debug, thiserror::Error)]
pub enum OrgError {
    /// No such org, or not one the caller belongs to: deliberately one answer.
    #[error("not found")]
    NotFound,
    #[error("this action needs the permission {0}")]
    Forbidden(String),
    /// API keys act for an org's backend; creating orgs or joining them is for people.
    #[error("this action needs a signed-in user, not an API key")]
    UserOnly,
    #[error(transparent)]
    Role(#[from] RoleError),
    #[error("{0}")]
    Invalid(String),
    #[error("the confirmation does not match the organization's name")]
    ConfirmationMismatch,
    /// Unknown, used, expired or superseded invitation link: one answer.
    #[error("this invitation link is invalid or has expired")]
    InvalidLink,
    #[error("this invitation was sent to another email address: sign in with that one")]
    WrongInvitee,
    #[error("you are already a member of this organization")]
    AlreadyMember,
    #[error("invalid API key")]
    InvalidKey,
    #[error("this address has been sent enough email for now; retry in {retry_after_secs} s")]
    MailThrottled { retry_after_secs: u64 },
    #[error("organization storage: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Mail(#[from] MailError),
    #[error("magic links: {0}")]
    Link(LinkError),
    #[error("no randomness for an id or key")]
    Random,
}

impl From<LinkError> for OrgError {
    fn from(e: LinkError) -> Self {
        match e {
            LinkError::Invalid => Self::InvalidLink,
            other => Self::Link(other),
        }
    }
}

/// What [`Orgs`] works with.
pub struct OrgDeps {
    pub store: Arc<dyn Store>,
    pub audit: Arc<AuditLog>,
    pub clock: Arc<dyn Clock>,
    pub links: Arc<MagicLinks>,
    pub permissions: Arc<PermissionMap>,
    /// Emails one org may have sent to one address (invitations and license mail): the org's own
    /// budget, apart from the account mails', so its answers tell nothing about the address.
    pub mail_per_org_and_address: ThrottleRule,
}

pub struct Orgs {
    pub(super) store: Arc<dyn Store>,
    audit: Arc<AuditLog>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) links: Arc<MagicLinks>,
    permissions: Arc<PermissionMap>,
    mail_per_org_and_address: ThrottleRule,
}

/// Trims a display name and checks it: 1–200 characters, no control characters.
pub(super) fn clean_name(raw: &str, what: &str, max: usize) -> Result<String, OrgError> {
    crate::text::clean_text(raw, what, 1, max).map_err(OrgError::Invalid)
}

pub(super) fn level_of(m: &MemberRow) -> Result<Level, OrgError> {
    level_of_value(m.level)
}

pub(super) fn level_of_value(v: i32) -> Result<Level, OrgError> {
    Level::from_value(i64::from(v))
        .ok_or_else(|| OrgError::Store(StoreError::Corrupt("membership level".into())))
}

/// A user acting outside any org (their own account, orgs and private data).
pub(super) fn user_scope(user_id: &str) -> Scope {
    Scope::User {
        user_id: user_id.to_owned(),
        org_id: None,
    }
}

pub(super) fn new_id(prefix: &str) -> Result<String, OrgError> {
    crate::ids::new_id(prefix).map_err(|_| OrgError::Random)
}

impl Orgs {
    /// Counts one mail from `org_id` to `email` against the org's mail budget; `Some(seconds)`
    /// to wait when it is spent (SPEC A1, A7: never the account flows' budget).
    pub(crate) async fn org_mail_budget(
        &self,
        org_id: &str,
        email: &str,
    ) -> Result<Option<u64>, bastion_store::StoreError> {
        let now = self.clock.now_ms();
        let key = crate::accounts::attempt_key("org-mail", &format!("{org_id}\n{email}"));
        match self
            .store
            .register_attempt(&SYSTEM, &key, now, &self.mail_per_org_and_address)
            .await?
        {
            bastion_store::AttemptDecision::Allowed { .. } => Ok(None),
            bastion_store::AttemptDecision::Locked { until_ms } => {
                let wait_ms = u64::try_from(until_ms.saturating_sub(now)).unwrap_or(0);
                Ok(Some(wait_ms.div_ceil(1000).max(1)))
            }
        }
    }

    pub fn new(deps: OrgDeps) -> Self {
        Self {
            store: deps.store,
            audit: deps.audit,
            clock: deps.clock,
            links: deps.links,
            permissions: deps.permissions,
            mail_per_org_and_address: deps.mail_per_org_and_address,
        }
    }

    /// Writes the permission map where the database's `has_permission()` reads it, so both
    /// layers decide from the same configuration (done at start-up).
    pub async fn sync_permissions(&self) -> Result<(), OrgError> {
        self.store
            .sync_permissions(&SYSTEM, &self.permissions.rows())
            .await?;
        Ok(())
    }

    pub(super) async fn audit(
        &self,
        access: &Access,
        caller: &Caller,
        action: &str,
        details: serde_json::Value,
    ) {
        self.record(access, caller, action, Outcome::Success, details)
            .await;
    }

    /// Records a member's refused attempt (a missing permission, a level rule) in the org's
    /// trail, and passes the refusal on.
    pub(super) async fn refused(
        &self,
        access: &Access,
        caller: &Caller,
        action: &str,
        err: OrgError,
    ) -> OrgError {
        let details = serde_json::json!({ "reason": err.to_string() });
        self.record(access, caller, action, Outcome::Denied, details)
            .await;
        err
    }

    async fn record(
        &self,
        access: &Access,
        caller: &Caller,
        action: &str,
        outcome: Outcome,
        details: serde_json::Value,
    ) {
        let ev = AuditEvent::new(Category::Admin, action, outcome)
            .actor(caller.actor())
            .org(access.org_id.clone())
            .details(details);
        // The change already happened; a failed audit write is logged, not turned into a 500.
        if let Err(e) = self.audit.record(ev).await {
            tracing::error!(error = %e, "audit write failed");
        }
    }

    /// The caller's standing in `org_id`; [`OrgError::NotFound`] unless a member (or the org's
    /// own key).
    pub async fn access(&self, caller: &Caller, org_id: &str) -> Result<Access, OrgError> {
        match caller {
            Caller::User { user_id } => {
                let scope = Scope::User {
                    user_id: user_id.clone(),
                    org_id: Some(org_id.to_owned()),
                };
                let member = self
                    .store
                    .membership(&scope, org_id, user_id)
                    .await?
                    .ok_or(OrgError::NotFound)?;
                Ok(Access {
                    org_id: org_id.to_owned(),
                    scope,
                    level: Some(level_of(&member)?),
                })
            }
            Caller::Key(k) if k.org_id == org_id => Ok(Access {
                org_id: org_id.to_owned(),
                scope: Scope::ApiKey {
                    key_id: k.key_id.clone(),
                    org_id: k.org_id.clone(),
                    kind: k.kind,
                },
                level: match k.kind {
                    KeyKind::Service => Some(Level::Admin),
                    KeyKind::Publishable => None,
                },
            }),
            Caller::Key(_) => Err(OrgError::NotFound),
        }
    }

    /// The org `access` is for, as its scope sees it.
    pub(super) async fn org_of(&self, access: &Access) -> Result<OrgRow, OrgError> {
        self.store
            .org(&access.scope, &access.org_id)
            .await?
            .ok_or(OrgError::NotFound)
    }

    /// Whether `access` holds `permission` (deny unless granted).
    pub fn allows(&self, access: &Access, permission: &str) -> bool {
        match access.level {
            Some(level) => self.permissions.allows(level, permission),
            None => self.permissions.publishable_allows(permission),
        }
    }

    /// The authorization decision for the API: may `caller` do `permission` in `org_id`?
    /// The database's policies decide the same again from the same map.
    pub async fn authorize(
        &self,
        caller: &Caller,
        org_id: &str,
        permission: &str,
    ) -> Result<Access, OrgError> {
        let access = self.access(caller, org_id).await?;
        if self.allows(&access, permission) {
            Ok(access)
        } else {
            let err = OrgError::Forbidden(permission.to_owned());
            Err(self
                .refused(&access, caller, "permission.denied", err)
                .await)
        }
    }

    /// The caller's level (if any) and effective permissions in `org_id`.
    pub async fn my_permissions(
        &self,
        caller: &Caller,
        org_id: &str,
    ) -> Result<(Option<Level>, Vec<String>), OrgError> {
        let access = self.access(caller, org_id).await?;
        let perms = match access.level {
            Some(l) => self
                .permissions
                .effective(l)
                .map(|p| p.as_str().to_owned())
                .collect(),
            None => self
                .permissions
                .publishable()
                .map(|p| p.as_str().to_owned())
                .collect(),
        };
        Ok((access.level, perms))
    }

    /// Creates an org with the caller as its first Super Admin.
    #[tracing::instrument(skip_all)]
    pub async fn create(&self, caller: &Caller, name: &str) -> Result<OrgRow, OrgError> {
        let Caller::User { user_id } = caller else {
            return Err(OrgError::UserOnly);
        };
        let name = clean_name(name, "the name", MAX_NAME_CHARS)?;
        let me = user_scope(user_id);
        let user = self
            .store
            .user_by_id(&me, user_id)
            .await?
            .ok_or(OrgError::NotFound)?;
        let now = self.clock.now_ms();
        let org = OrgRow {
            id: new_id("org")?,
            name,
            created_by: user_id.clone(),
            created_ms: now,
            updated_ms: now,
        };
        let creator = MemberRow {
            org_id: org.id.clone(),
            user_id: user_id.clone(),
            email: user.email,
            level: Level::SuperAdmin.value(),
            created_ms: now,
            updated_ms: now,
        };
        self.store.create_org(&me, &org, &creator).await?;
        let access = self.access(caller, &org.id).await?;
        self.audit(
            &access,
            caller,
            "org.created",
            serde_json::json!({ "name": org.name }),
        )
        .await;
        Ok(org)
    }

    /// The orgs the caller belongs to, with the caller's level (a key: its own org).
    pub async fn list_mine(
        &self,
        caller: &Caller,
    ) -> Result<Vec<(OrgRow, Option<Level>)>, OrgError> {
        match caller {
            Caller::User { user_id } => {
                let me = user_scope(user_id);
                let rows = self.store.orgs_of(&me, user_id).await?;
                rows.into_iter()
                    .map(|(o, l)| Ok((o, Some(level_of_value(l)?))))
                    .collect()
            }
            Caller::Key(k) => {
                let access = self.authorize(caller, &k.org_id, "org.read").await?;
                let org = self.store.org(&access.scope, &k.org_id).await?;
                Ok(org.into_iter().map(|o| (o, access.level)).collect())
            }
        }
    }

    /// The org and the caller's level in it (`org.read`).
    pub async fn get(
        &self,
        caller: &Caller,
        org_id: &str,
    ) -> Result<(OrgRow, Option<Level>), OrgError> {
        let access = self.authorize(caller, org_id, "org.read").await?;
        let org = self.org_of(&access).await?;
        Ok((org, access.level))
    }

    #[tracing::instrument(skip_all)]
    pub async fn rename(
        &self,
        caller: &Caller,
        org_id: &str,
        name: &str,
    ) -> Result<(OrgRow, Option<Level>), OrgError> {
        let access = self.authorize(caller, org_id, "org.rename").await?;
        let name = clean_name(name, "the name", MAX_NAME_CHARS)?;
        let now = self.clock.now_ms();
        if !self
            .store
            .rename_org(&access.scope, org_id, &name, now)
            .await?
        {
            return Err(OrgError::NotFound);
        }
        self.audit(
            &access,
            caller,
            "org.renamed",
            serde_json::json!({ "name": name }),
        )
        .await;
        let org = self.org_of(&access).await?;
        Ok((org, access.level))
    }

    /// Deletes the org and everything it owns; `confirm` must repeat its name exactly.
    #[tracing::instrument(skip_all)]
    pub async fn delete(
        &self,
        caller: &Caller,
        org_id: &str,
        confirm: &str,
    ) -> Result<(), OrgError> {
        let access = self.authorize(caller, org_id, "org.delete").await?;
        let org = self.org_of(&access).await?;
        if confirm != org.name {
            return Err(OrgError::ConfirmationMismatch);
        }
        if !self.store.delete_org(&access.scope, org_id).await? {
            return Err(OrgError::NotFound);
        }
        self.audit(
            &access,
            caller,
            "org.deleted",
            serde_json::json!({ "name": org.name }),
        )
        .await;
        Ok(())
    }

    pub async fn members(&self, caller: &Caller, org_id: &str) -> Result<Vec<MemberRow>, OrgError> {
        let access = self.authorize(caller, org_id, "members.read").await?;
        Ok(self.store.members(&access.scope, org_id).await?)
    }

    /// How many Super Admins the org has, counted only when it matters (moving one).
    async fn super_admins(&self, access: &Access, from: Level) -> Result<usize, OrgError> {
        if from != Level::SuperAdmin {
            return Ok(usize::MAX);
        }
        let members = self.store.members(&access.scope, &access.org_id).await?;
        Ok(members
            .iter()
            .filter(|m| m.level == Level::SuperAdmin.value())
            .count())
    }

    /// Sets a member's level, within the level rules (R2).
    #[tracing::instrument(skip_all)]
    pub async fn change_level(
        &self,
        caller: &Caller,
        org_id: &str,
        user_id: &str,
        to: Level,
    ) -> Result<MemberRow, OrgError> {
        let access = self.authorize(caller, org_id, "members.update").await?;
        self.move_member(caller, &access, user_id, Some(to)).await?;
        self.store
            .membership(&access.scope, org_id, user_id)
            .await?
            .ok_or(OrgError::NotFound)
    }

    /// Removes a member; removing oneself is leaving, which needs no permission.
    #[tracing::instrument(skip_all)]
    pub async fn remove_member(
        &self,
        caller: &Caller,
        org_id: &str,
        user_id: &str,
    ) -> Result<(), OrgError> {
        let leaving = matches!(caller, Caller::User { user_id: me } if me == user_id);
        let access = if leaving {
            self.access(caller, org_id).await?
        } else {
            self.authorize(caller, org_id, "members.remove").await?
        };
        self.move_member(caller, &access, user_id, None).await
    }

    async fn move_member(
        &self,
        caller: &Caller,
        access: &Access,
        user_id: &str,
        to: Option<Level>,
    ) -> Result<(), OrgError> {
        let actor = access
            .level
            .ok_or_else(|| OrgError::Forbidden("members.update".into()))?;
        let target = self
            .store
            .membership(&access.scope, &access.org_id, user_id)
            .await?
            .ok_or(OrgError::NotFound)?;
        let from = level_of(&target)?;
        let is_self = access.scope.user_id() == Some(user_id);
        let supers = self.super_admins(access, from).await?;
        if let Err(e) = check_level_change(actor, Some(from), to, supers, is_self) {
            return Err(self
                .refused(access, caller, "member.change_refused", e.into())
                .await);
        }
        let now = self.clock.now_ms();
        match self
            .store
            .change_member(
                &access.scope,
                &access.org_id,
                user_id,
                from.value(),
                to.map(Level::value),
                now,
            )
            .await?
        {
            MemberChange::Changed => {}
            // Changed by someone else since it was read: the caller should look again.
            MemberChange::NotFound => return Err(OrgError::NotFound),
            MemberChange::LastSuperAdmin => return Err(RoleError::LastSuperAdmin.into()),
        }
        let (action, details) = match (to, is_self) {
            (Some(to), _) => (
                "member.level_changed",
                serde_json::json!({ "user": user_id, "from": from.name(), "to": to.name() }),
            ),
            (None, true) => ("member.left", serde_json::json!({ "user": user_id })),
            (None, false) => (
                "member.removed",
                serde_json::json!({ "user": user_id, "level": from.name() }),
            ),
        };
        self.audit(access, caller, action, details).await;
        Ok(())
    }

    /// The org's audit events, newest first (`audit.read`).
    pub async fn audit_events(
        &self,
        caller: &Caller,
        org_id: &str,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, OrgError> {
        let access = self.authorize(caller, org_id, "audit.read").await?;
        Ok(self
            .store
            .org_events(&access.scope, org_id, before, limit.clamp(1, 500))
            .await?)
    }
}
