//! Invitations (SPEC R1): a magic link mailed to the invitee, expiring and single-use, for a
//! level below the inviter's own. Accepting needs the invitee signed in with the invited
//! address, so a forwarded link gives nobody else a seat.

use bastion_store::{InvitationRow, MemberRow};
use secrecy::SecretString;

use super::roles::{Level, check_level_change};
use super::service::{Caller, OrgError, Orgs, SYSTEM, new_id, user_scope};
use crate::accounts::{normalize_email, same_address};
use crate::links::LinkPurpose;
use crate::mail::Template;

impl Orgs {
    /// Invites `email` at `level` and mails the link; a newer invitation for the same address
    /// replaces an older one.
    #[tracing::instrument(skip_all)]
    pub async fn invite(
        &self,
        caller: &Caller,
        org_id: &str,
        email: &str,
        level: Level,
    ) -> Result<InvitationRow, OrgError> {
        let access = self.authorize(caller, org_id, "members.invite").await?;
        let email = normalize_email(email)
            .map_err(|_| OrgError::Invalid("that is not a valid email address".into()))?;
        let actor = access
            .level
            .ok_or_else(|| OrgError::Forbidden("members.invite".into()))?;
        if let Err(e) = check_level_change(actor, None, Some(level), usize::MAX, false) {
            return Err(self
                .refused(&access, caller, "member.invite_refused", e.into())
                .await);
        }
        let now = self.clock.now_ms();
        if let Some(retry_after_secs) = self.org_mail_budget(org_id, &email).await? {
            return Err(OrgError::MailThrottled { retry_after_secs });
        }
        let org = self.org_of(&access).await?;
        let inv = InvitationRow {
            id: new_id("inv")?,
            org_id: org_id.to_owned(),
            email: email.clone(),
            level: level.value(),
            invited_by: caller.actor().to_owned(),
            created_ms: now,
            expires_ms: now.saturating_add(self.links.ttl_ms()),
            accepted_ms: None,
            accepted_by: None,
        };
        // A replacement withdraws only invitations its author could have made (SPEC R2).
        let grantable = Level::ALL
            .into_iter()
            .filter(|l| check_level_change(actor, None, Some(*l), usize::MAX, false).is_ok())
            .map(Level::value)
            .max()
            .unwrap_or(0);
        let withdrawn = self
            .store
            .replace_invitation(&access.scope, &inv, grantable)
            .await?;
        for replaced in withdrawn {
            self.audit(
                &access,
                caller,
                "member.invitation_withdrawn",
                serde_json::json!({ "invitation": replaced, "replaced_by": inv.id }),
            )
            .await;
        }
        self.links
            .send(LinkPurpose::OrgInvite, &inv.id, &email, move |link| {
                Template::OrgInvite {
                    link,
                    org_name: org.name,
                    level: level.name(),
                }
            })
            .await?;
        self.audit(
            &access,
            caller,
            "member.invited",
            serde_json::json!({ "invitation": inv.id, "level": level.name() }),
        )
        .await;
        Ok(inv)
    }

    /// The org's invitations, newest first (`members.invite`).
    pub async fn invitations(
        &self,
        caller: &Caller,
        org_id: &str,
    ) -> Result<Vec<InvitationRow>, OrgError> {
        let access = self.authorize(caller, org_id, "members.invite").await?;
        Ok(self.store.invitations(&access.scope, org_id).await?)
    }

    /// Withdraws a pending invitation below the caller's level; its link stops working.
    pub async fn revoke_invitation(
        &self,
        caller: &Caller,
        org_id: &str,
        id: &str,
    ) -> Result<(), OrgError> {
        let access = self.authorize(caller, org_id, "members.invite").await?;
        let actor = access
            .level
            .ok_or_else(|| OrgError::Forbidden("members.invite".into()))?;
        let inv = self
            .store
            .invitations(&access.scope, org_id)
            .await?
            .into_iter()
            .find(|i| i.id == id)
            .ok_or(OrgError::NotFound)?;
        let level = super::service::level_of_value(inv.level)?;
        // Withdrawing an invitation is taking back a grant: the same rule as giving it.
        if let Err(e) = check_level_change(actor, None, Some(level), usize::MAX, false) {
            return Err(self
                .refused(
                    &access,
                    caller,
                    "member.invitation_revoke_refused",
                    e.into(),
                )
                .await);
        }
        if !self
            .store
            .revoke_invitation(&access.scope, org_id, id)
            .await?
        {
            return Err(OrgError::NotFound);
        }
        self.audit(
            &access,
            caller,
            "member.invitation_revoked",
            serde_json::json!({ "invitation": id }),
        )
        .await;
        Ok(())
    }

    /// Accepts an invitation as the signed-in user, who must hold the invited address. The
    /// link is used up whatever the outcome.
    #[tracing::instrument(skip_all)]
    pub async fn accept_invitation(
        &self,
        caller: &Caller,
        token: &SecretString,
    ) -> Result<MemberRow, OrgError> {
        let Caller::User { user_id } = caller else {
            return Err(OrgError::UserOnly);
        };
        let link = self.links.consume(LinkPurpose::OrgInvite, token).await?;
        let me = user_scope(user_id);
        let user = self
            .store
            .user_by_id(&me, user_id)
            .await?
            .ok_or(OrgError::NotFound)?;
        if !same_address(&user.email, &link.email) {
            return Err(OrgError::WrongInvitee);
        }
        let inv = self
            .store
            .invitation(&SYSTEM, &link.subject)
            .await?
            .ok_or(OrgError::InvalidLink)?;
        let now = self.clock.now_ms();
        let member = MemberRow {
            org_id: inv.org_id.clone(),
            user_id: user_id.clone(),
            email: user.email,
            level: inv.level,
            created_ms: now,
            updated_ms: now,
        };
        match self
            .store
            .accept_invitation(&SYSTEM, &inv.id, &member, now)
            .await
        {
            Ok(true) => {}
            Ok(false) => return Err(OrgError::InvalidLink),
            Err(bastion_store::StoreError::Conflict(_)) => return Err(OrgError::AlreadyMember),
            Err(e) => return Err(e.into()),
        }
        let access = self.access(caller, &inv.org_id).await?;
        self.audit(
            &access,
            caller,
            "member.joined",
            serde_json::json!({ "invitation": inv.id, "level": super::service::level_of(&member)?.name() }),
        )
        .await;
        Ok(member)
    }
}
