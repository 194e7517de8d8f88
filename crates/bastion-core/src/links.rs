//! Magic links (SPEC A7): a random token (`bml_` + 256 bits) in a URL fragment, stored only as
//! its SHA-256, single-use, expiring, and voided by a newer link for the same purpose and
//! subject. The link and the mail that carries it are committed together.

use std::sync::Arc;

use bastion_store::{ConsumedLink, MagicLinkRow, Scope, Store, StoreError};
use secrecy::{ExposeSecret, SecretString};

use crate::Clock;
use crate::mail::{MailError, Mailer, Template};

const SCOPE: Scope = Scope::System("magic_links");
const PREFIX: &str = "bml_";

/// What a link lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkPurpose {
    VerifyEmail,
    /// Forgot password, and the first password of an account created by an administrator.
    ResetPassword,
    /// Joining an organization; the subject is the invitation's id.
    OrgInvite,
    /// Confirming a license revocation asked for from the app (SPEC L5); the subject is the
    /// license's id.
    LicenseRevoke,
}

impl LinkPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::VerifyEmail => "verify_email",
            Self::ResetPassword => "reset_password",
            Self::OrgInvite => "org_invite",
            Self::LicenseRevoke => "license_revoke",
        }
    }

    /// The page of the front end that receives the link.
    fn page(self) -> &'static str {
        match self {
            Self::VerifyEmail => "verify-email",
            Self::ResetPassword => "reset-password",
            Self::OrgInvite => "accept-invitation",
            Self::LicenseRevoke => "revoke-license",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// Unknown, used, expired or superseded: deliberately one answer.
    #[error("this link is invalid or has expired")]
    Invalid,
    #[error("magic links: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Mail(#[from] MailError),
    #[error("no randomness for a link token")]
    Random,
}

pub struct MagicLinks {
    store: Arc<dyn Store>,
    mailer: Arc<Mailer>,
    clock: Arc<dyn Clock>,
    ttl_ms: i64,
    /// Origin of the front end, e.g. `https://app.example.com` (no trailing slash).
    base_url: String,
}

fn token_hash(token: &str) -> [u8; 32] {
    bastion_crypto::sha256(token.as_bytes())
}

impl MagicLinks {
    pub fn new(
        store: Arc<dyn Store>,
        mailer: Arc<Mailer>,
        clock: Arc<dyn Clock>,
        ttl_ms: i64,
        base_url: &str,
    ) -> Self {
        Self {
            store,
            mailer,
            clock,
            ttl_ms,
            base_url: base_url.trim_end_matches('/').to_owned(),
        }
    }

    pub fn ttl_ms(&self) -> i64 {
        self.ttl_ms
    }

    /// A fresh link: its token in a fragment (never sent to a server, so never in access logs
    /// or `Referer` headers), and the row to store.
    fn mint(
        &self,
        purpose: LinkPurpose,
        subject: &str,
        email: &str,
    ) -> Result<(SecretString, MagicLinkRow), LinkError> {
        let token = crate::ids::secret_token(PREFIX).map_err(|_| LinkError::Random)?;
        let token = token.expose_secret();
        let now = self.clock.now_ms();
        let row = MagicLinkRow {
            token_hash: token_hash(token),
            purpose: purpose.as_str().to_owned(),
            subject: subject.to_owned(),
            email: email.to_owned(),
            created_ms: now,
            expires_ms: now.saturating_add(self.ttl_ms),
        };
        let url = format!("{}/{}#token={token}", self.base_url, purpose.page());
        Ok((SecretString::from(url), row))
    }

    /// Creates a link for `subject` and mails it to `email` with `template`, voiding older links.
    pub async fn send(
        &self,
        purpose: LinkPurpose,
        subject: &str,
        email: &str,
        template: impl for<'a> FnOnce(&'a str) -> Template<'a>,
    ) -> Result<(), LinkError> {
        let (url, row) = self.mint(purpose, subject, email)?;
        let mail = self
            .mailer
            .prepare(email, &template(url.expose_secret()))
            .await?;
        self.store.insert_link(&SCOPE, &row, Some(&mail)).await?;
        self.mailer.queued();
        Ok(())
    }

    /// Creates a link and returns its URL instead of mailing it (the administrator's CLI).
    pub async fn hand_over(
        &self,
        purpose: LinkPurpose,
        subject: &str,
        email: &str,
    ) -> Result<SecretString, LinkError> {
        let (url, row) = self.mint(purpose, subject, email)?;
        self.store.insert_link(&SCOPE, &row, None).await?;
        Ok(url)
    }

    /// Uses the link up; any failure is [`LinkError::Invalid`], whatever the reason.
    pub async fn consume(
        &self,
        purpose: LinkPurpose,
        token: &SecretString,
    ) -> Result<ConsumedLink, LinkError> {
        let token = token.expose_secret().trim();
        // Shape first: a malformed token costs no database round trip.
        if !token.starts_with(PREFIX) || token.len() != PREFIX.len() + 43 {
            return Err(LinkError::Invalid);
        }
        self.store
            .consume_link(
                &SCOPE,
                &token_hash(token),
                purpose.as_str(),
                self.clock.now_ms(),
            )
            .await?
            .ok_or(LinkError::Invalid)
    }
}
