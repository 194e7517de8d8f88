//! Accounts (SPEC A1, A7, A8): sign-up with email verification, sign-in with lockouts counted
//! before any hashing, password change and reset by magic link, and accounts created by an
//! administrator. Sign-up, sign-in, forgot-password and resend-verification answer the same
//! whether or not an account exists, and do the same work before answering; hashes are
//! upgraded to the configured algorithm on the next successful sign-in.

use std::sync::Arc;

use bastion_store::{
    AttemptDecision, AttemptOutcome, Scope, Settled, Store, StoreError, ThrottleRule, UserRow,
};
use secrecy::SecretString;

use crate::Clock;
use crate::audit::{AuditEvent, AuditLog, Category, Outcome};
use crate::limits::{Held, Limit, Limiter, Refusal};
use crate::links::{LinkError, LinkPurpose, MagicLinks};
use crate::mail::{MailError, Mailer, Template};
use crate::passwords::{HashingError, PasswordHashing, PasswordRejected, PasswordRules};
use crate::sessions::{Device, IssuedTokens, SessionError, Sessions};

const SCOPE: Scope = Scope::System("accounts");

/// Sign-in limits (SPEC A8, T5), counted in the database so they hold across nodes, and the
/// rest of the account rules. Sign-in limits count **failures** only: a correct password never
/// counts against an account or an address.
#[derive(Debug, Clone, Copy)]
pub struct AccountPolicy {
    /// Failed sign-ins per account in the window; the one that reaches the limit locks the
    /// account for `lockout_ms`.
    pub per_account: ThrottleRule,
    /// Failed sign-ins per client address in the window (any accounts).
    pub per_ip: ThrottleRule,
    /// Credential stuffing: distinct accounts that failed from one address in the window.
    pub per_ip_accounts: ThrottleRule,
    /// Link and notice emails one address receives from the account flows, whoever asks, so
    /// nobody can flood an inbox through Bastion.
    pub mail_per_address: ThrottleRule,
    /// Of those, what one requester (client address) may have sent to one address, so a
    /// stranger's requests cannot use up the owner's own reset mail.
    pub mail_per_requester: ThrottleRule,
    /// Sign-in is refused until the address is verified.
    pub require_verified_email: bool,
}

impl Default for AccountPolicy {
    fn default() -> Self {
        let fifteen_minutes = 15 * 60_000;
        let failures = |max_attempts| ThrottleRule {
            max_attempts,
            window_ms: fifteen_minutes,
            lockout_ms: fifteen_minutes,
        };
        Self {
            per_account: failures(10),
            per_ip: failures(100),
            per_ip_accounts: failures(20),
            mail_per_address: ThrottleRule {
                max_attempts: 20,
                window_ms: 60 * 60_000,
                lockout_ms: 60 * 60_000,
            },
            mail_per_requester: ThrottleRule {
                max_attempts: 5,
                window_ms: 60 * 60_000,
                lockout_ms: 60 * 60_000,
            },
            require_verified_email: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("that is not a valid email address")]
    InvalidEmail,
    #[error("{0}")]
    WeakPassword(PasswordRejected),
    #[error("an account with that email already exists")]
    EmailTaken,
    /// Wrong email or wrong password: never says which.
    #[error("the email or the password is wrong")]
    InvalidCredentials,
    #[error("too many attempts; retry in {retry_after_secs} s")]
    Locked { retry_after_secs: u64 },
    /// Only after the password matched, so it reveals nothing to someone without it.
    #[error("confirm your email address first: open the link we sent, or ask for a new one")]
    EmailNotVerified,
    /// Unknown, used, expired or superseded: one answer.
    #[error("this link is invalid or has expired")]
    InvalidLink,
    #[error("account storage: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Hashing(#[from] HashingError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Mail(#[from] MailError),
    #[error(transparent)]
    Link(LinkError),
}

impl From<LinkError> for AccountError {
    fn from(e: LinkError) -> Self {
        match e {
            LinkError::Invalid => Self::InvalidLink,
            other => Self::Link(other),
        }
    }
}

/// Longest input [`normalize_email`] looks at: a real address is at most 254 bytes; this leaves
/// room for invisible characters and compatibility forms, and bounds the work.
const MAX_RAW_EMAIL_LEN: usize = 1024;

/// The one form an email address is stored and compared in (SPEC A1), so that every way of
/// writing one mailbox is one account: default-ignorable code points (zero-width characters,
/// soft hyphens, bidi controls, variation selectors, …) removed, NFKC (fullwidth and other
/// compatibility forms become their plain letters), trimmed and lower-cased, and the domain in
/// its UTS 46 ASCII form (`bücher.example` and `xn--bcher-kva.example` are one domain). Refused:
/// anything left with whitespace or control characters, other than exactly one `@`, an empty
/// or over-long part, a domain that UTS 46 (with the STD3 letter-digit-hyphen rule and DNS
/// lengths) refuses or that has no dot. Shape only, not deliverability. Applying it to its own
/// output changes nothing.
pub fn normalize_email(raw: &str) -> Result<String, AccountError> {
    let email = canonical_email(raw).ok_or(AccountError::InvalidEmail)?;
    // Stored addresses are compared as they are and the start-up pass rewrites only rows that
    // differ from their normal form, so a form that would normalize again is refused.
    if canonical_email(&email).as_deref() != Some(email.as_str()) {
        return Err(AccountError::InvalidEmail);
    }
    Ok(email)
}

/// Whether two addresses are one mailbox under [`normalize_email`]. A stored address (in a link,
/// an account made under an older rule) may predate the current form until it is rewritten.
pub(crate) fn same_address(a: &str, b: &str) -> bool {
    a == b || matches!((normalize_email(a), normalize_email(b)), (Ok(x), Ok(y)) if x == y)
}

fn canonical_email(raw: &str) -> Option<String> {
    use unicode_normalization::UnicodeNormalization;
    if raw.len() > MAX_RAW_EMAIL_LEN {
        return None;
    }
    // Ignorables are removed before NFKC (they would block composition) and after it (NFKC
    // maps U+FFA0 to U+3164, both ignorable); lower-casing can leave a string NFKC changes.
    let folded: String = raw
        .chars()
        .filter(|c| !is_default_ignorable(*c))
        .nfkc()
        .filter(|c| !is_default_ignorable(*c))
        .collect::<String>()
        .trim()
        .to_lowercase()
        .nfkc()
        .collect();
    if folded.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let (local, domain) = folded.split_once('@')?;
    if local.is_empty() || local.len() > 64 || domain.contains('@') {
        return None;
    }
    let domain = idna::uts46::Uts46::new()
        .to_ascii(
            domain.as_bytes(),
            idna::uts46::AsciiDenyList::STD3,
            idna::uts46::Hyphens::CheckFirstLast,
            idna::uts46::DnsLength::Verify,
        )
        .ok()?;
    if !domain.contains('.') {
        return None;
    }
    let email = format!("{local}@{domain}");
    (email.len() <= 254).then_some(email)
}

/// Unicode's Default_Ignorable_Code_Point property: the ranges of DerivedCoreProperties.txt as
/// of Unicode 16.0 (checked against the ICU4X data idna uses). Reserved code points in them are
/// ignorable in advance, so the set seldom changes. Such characters are invisible: an address
/// with and without them looks the same.
fn is_default_ignorable(c: char) -> bool {
    matches!(
        u32::from(c),
        0x00AD // SOFT HYPHEN
            | 0x034F // COMBINING GRAPHEME JOINER
            | 0x061C // ARABIC LETTER MARK
            | 0x115F..=0x1160 // HANGUL CHOSEONG FILLER, HANGUL JUNGSEONG FILLER
            | 0x17B4..=0x17B5 // KHMER VOWEL INHERENT AQ, AA
            | 0x180B..=0x180F // MONGOLIAN FREE VARIATION SELECTORS, VOWEL SEPARATOR
            | 0x200B..=0x200F // ZERO WIDTH SPACE, ZWNJ, ZWJ, LEFT-TO-RIGHT and RIGHT-TO-LEFT MARK
            | 0x202A..=0x202E // bidi embeddings and overrides
            | 0x2060..=0x206F // WORD JOINER, invisible operators, bidi isolates, (reserved)
            | 0x3164 // HANGUL FILLER
            | 0xFE00..=0xFE0F // VARIATION SELECTOR-1 to -16
            | 0xFEFF // ZERO WIDTH NO-BREAK SPACE (byte order mark)
            | 0xFFA0 // HALFWIDTH HANGUL FILLER
            | 0xFFF0..=0xFFF8 // (reserved)
            | 0x1BCA0..=0x1BCA3 // SHORTHAND FORMAT controls
            | 0x1D173..=0x1D17A // MUSICAL SYMBOL BEGIN BEAM to END PHRASE
            | 0xE0000..=0xE0FFF // tags, VARIATION SELECTOR-17 to -256, (reserved)
    )
}

/// An account as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: String,
    pub email: String,
    pub email_verified: bool,
    pub created_ms: i64,
}

impl From<UserRow> for Account {
    fn from(u: UserRow) -> Self {
        Self {
            id: u.id,
            email: u.email,
            email_verified: u.email_verified_ms.is_some(),
            created_ms: u.created_ms,
        }
    }
}

/// What [`Accounts::renormalize_emails`] found and did, by account id.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Renormalized {
    /// Accounts whose stored address was rewritten to its normal form.
    pub rewritten: Vec<String>,
    /// Accounts whose addresses are one mailbox under the current rule, each group with the
    /// account (if any) that already holds the normal form: left as they were, and reported.
    pub collisions: Vec<Vec<String>>,
    /// Accounts whose stored address the current rule refuses: left as they were, and reported.
    pub refused: Vec<String>,
}

/// Users read per page by [`Accounts::renormalize_emails`].
const RENORMALIZE_PAGE: u32 = 500;

/// What [`Accounts`] works with.
pub struct AccountDeps {
    pub store: Arc<dyn Store>,
    pub hashing: Arc<PasswordHashing>,
    pub rules: PasswordRules,
    pub sessions: Arc<Sessions>,
    pub audit: Arc<AuditLog>,
    pub clock: Arc<dyn Clock>,
    pub links: Arc<MagicLinks>,
    pub mailer: Arc<Mailer>,
}

/// How long a node serves `me` from its own copy of the account (see [`Accounts::me`]).
const PROFILE_CACHE_MS: i64 = 5_000;
const PROFILE_CACHE_CAPACITY: usize = 100_000;

pub struct Accounts {
    /// user id -> (account, read at ms): `GET /v1/me` is the hottest read of all.
    profiles: std::sync::Mutex<std::collections::HashMap<String, (Account, i64)>>,
    store: Arc<dyn Store>,
    hashing: Arc<PasswordHashing>,
    rules: PasswordRules,
    sessions: Arc<Sessions>,
    audit: Arc<AuditLog>,
    clock: Arc<dyn Clock>,
    links: Arc<MagicLinks>,
    mailer: Arc<Mailer>,
    lockout: AccountPolicy,
    limiter: Limiter,
}

pub(crate) fn attempt_key(kind: &str, value: &str) -> String {
    // Counters are keyed by a hash: the counter table holds no email or address.
    format!(
        "{kind}:{}",
        hex_prefix(&bastion_crypto::sha256(value.as_bytes()))
    )
}

fn hex_prefix(h: &[u8; 32]) -> String {
    h.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

impl Accounts {
    pub fn new(deps: AccountDeps, policy: AccountPolicy) -> Self {
        let limiter = Limiter::new(deps.store.clone(), deps.clock.clone(), SCOPE);
        Self {
            profiles: std::sync::Mutex::new(std::collections::HashMap::new()),
            store: deps.store,
            hashing: deps.hashing,
            rules: deps.rules,
            sessions: deps.sessions,
            audit: deps.audit,
            clock: deps.clock,
            links: deps.links,
            limiter,
            mailer: deps.mailer,
            lockout: policy,
        }
    }

    async fn audit(&self, ev: AuditEvent) {
        // The action already happened; a failed audit write is logged, not turned into a 500.
        if let Err(e) = self.audit.record(ev).await {
            tracing::error!(error = %e, "audit write failed");
        }
    }

    /// Creates an account with a password and mails a verification link. The answer is the
    /// same when the address already has an account: its owner gets a notice instead, so
    /// sign-up cannot be used to discover who has an account.
    #[tracing::instrument(skip_all)]
    pub async fn sign_up(
        &self,
        email: &str,
        password: SecretString,
        requester: &str,
    ) -> Result<(), AccountError> {
        let email = normalize_email(email)?;
        self.rules
            .check(&password, Some(&email))
            .map_err(AccountError::WeakPassword)?;
        let hash = self.hashing.hash(password).await?;
        let now = self.clock.now_ms();
        let user = UserRow {
            id: crate::ids::new_id("usr").map_err(HashingError::from)?,
            email,
            email_verified_ms: None,
            password_hash: Some(hash),
            super_admin: false,
            created_ms: now,
            updated_ms: now,
        };
        match self.store.create_user(&SCOPE, &user).await {
            Ok(()) => {
                self.audit(
                    AuditEvent::new(
                        Category::Authentication,
                        "account.created",
                        Outcome::Success,
                    )
                    .actor(user.id.clone()),
                )
                .await;
                if self.mail_allowed(&user.email, requester).await? {
                    self.send_link(LinkPurpose::VerifyEmail, &user).await?;
                }
                Ok(())
            }
            Err(StoreError::Conflict(_)) => {
                if self.mail_allowed(&user.email, requester).await? {
                    self.mailer
                        .enqueue(&user.email, &Template::AlreadyRegistered)
                        .await?;
                }
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Counts one account-flow email to `email` asked for by `requester` (a client address) and
    /// says whether it may be sent: first against the requester's budget for that address, then,
    /// only if that allows, against the address's own. Counted before any account look-up, the
    /// same for every address, and never answered to the caller (SPEC A1, A7).
    async fn mail_allowed(&self, email: &str, requester: &str) -> Result<bool, AccountError> {
        let now = self.clock.now_ms();
        let budgets = [
            (
                attempt_key("mail-requester", &format!("{requester}\n{email}")),
                &self.lockout.mail_per_requester,
            ),
            (attempt_key("mail", email), &self.lockout.mail_per_address),
        ];
        for (key, rule) in budgets {
            let decision = self.store.register_attempt(&SCOPE, &key, now, rule).await?;
            if !matches!(decision, AttemptDecision::Allowed { .. }) {
                tracing::info!("account mail throttled");
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Mails a verification or reset link to `user` (the caller counted the mail budget).
    async fn send_link(&self, purpose: LinkPurpose, user: &UserRow) -> Result<(), AccountError> {
        let template: fn(&str) -> Template<'_> = match purpose {
            LinkPurpose::VerifyEmail => |link| Template::VerifyEmail { link },
            LinkPurpose::ResetPassword => |link| Template::ResetPassword { link },
            // An invitation names an org and a level, a revocation a license: only the orgs
            // and licensing services send those.
            LinkPurpose::OrgInvite | LinkPurpose::LicenseRevoke => return Ok(()),
        };
        self.links
            .send(purpose, &user.id, &user.email, template)
            .await?;
        Ok(())
    }

    /// Starts "forgot password" or "resend verification" for `email` in the background and
    /// returns at once, so neither the answer nor its timing depends on whether the account
    /// exists. Only a malformed address is refused.
    pub fn request_link(
        self: &Arc<Self>,
        purpose: LinkPurpose,
        email: &str,
        requester: &str,
    ) -> Result<(), AccountError> {
        let email = normalize_email(email)?;
        let this = self.clone();
        let requester = requester.to_owned();
        tokio::spawn(async move {
            if let Err(e) = this.request_link_now(purpose, &email, &requester).await {
                tracing::error!(error = %e, purpose = purpose.as_str(), "link request failed");
            }
        });
        Ok(())
    }

    async fn request_link_now(
        &self,
        purpose: LinkPurpose,
        email: &str,
        requester: &str,
    ) -> Result<(), AccountError> {
        // Budget first, for known and unknown addresses alike.
        if !self.mail_allowed(email, requester).await? {
            return Ok(());
        }
        let Some(user) = self.store.user_by_email(&SCOPE, email).await? else {
            return Ok(());
        };
        if purpose == LinkPurpose::VerifyEmail && user.email_verified_ms.is_some() {
            return Ok(());
        }
        self.send_link(purpose, &user).await
    }

    /// Consumes a verification link: the address it was sent to is now verified.
    #[tracing::instrument(skip_all)]
    pub async fn verify_email(&self, token: &SecretString) -> Result<(), AccountError> {
        let link = self.links.consume(LinkPurpose::VerifyEmail, token).await?;
        let user = self
            .store
            .user_by_id(&SCOPE, &link.subject)
            .await?
            .filter(|u| same_address(&u.email, &link.email))
            .ok_or(AccountError::InvalidLink)?;
        self.store
            .mark_email_verified(&SCOPE, &user.id, self.clock.now_ms())
            .await?;
        self.forget_profile(&user.id);
        self.audit(
            AuditEvent::new(Category::Authentication, "email.verified", Outcome::Success)
                .actor(user.id),
        )
        .await;
        Ok(())
    }

    /// Consumes a reset link and sets a new password: every session of the account ends, its
    /// login lockout is lifted, and the address counts as verified (the link proved it).
    #[tracing::instrument(skip_all)]
    pub async fn reset_password(
        &self,
        token: &SecretString,
        new: SecretString,
    ) -> Result<(), AccountError> {
        self.rules
            .check(&new, None)
            .map_err(AccountError::WeakPassword)?;
        let link = self
            .links
            .consume(LinkPurpose::ResetPassword, token)
            .await?;
        let user = self
            .store
            .user_by_id(&SCOPE, &link.subject)
            .await?
            .filter(|u| same_address(&u.email, &link.email))
            .ok_or(AccountError::InvalidLink)?;
        self.rules
            .check(&new, Some(&user.email))
            .map_err(AccountError::WeakPassword)?;
        let hash = self.hashing.hash(new).await?;
        let now = self.clock.now_ms();
        self.store
            .set_password_hash(&SCOPE, &user.id, &hash, now)
            .await?;
        self.store
            .mark_email_verified(&SCOPE, &user.id, now)
            .await?;
        self.forget_profile(&user.id);
        self.store
            .clear_attempts(&SCOPE, &attempt_key("login-account", &user.email))
            .await?;
        for s in self.sessions.list(&user.id).await? {
            if s.revoked_ms.is_none() {
                self.sessions.revoke(&s.id, "password_reset").await?;
            }
        }
        self.audit(
            AuditEvent::new(Category::Authentication, "password.reset", Outcome::Success)
                .actor(user.id),
        )
        .await;
        Ok(())
    }

    /// An account created by an administrator (`bastion admin create-user`): no password; the
    /// returned one-time link sets it. Nothing is mailed.
    pub async fn create_by_admin(
        &self,
        email: &str,
        super_admin: bool,
    ) -> Result<(Account, SecretString), AccountError> {
        let email = normalize_email(email)?;
        let now = self.clock.now_ms();
        let user = UserRow {
            id: crate::ids::new_id("usr").map_err(HashingError::from)?,
            email,
            email_verified_ms: None,
            password_hash: None,
            super_admin,
            created_ms: now,
            updated_ms: now,
        };
        match self.store.create_user(&SCOPE, &user).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => return Err(AccountError::EmailTaken),
            Err(e) => return Err(e.into()),
        }
        let link = self
            .links
            .hand_over(LinkPurpose::ResetPassword, &user.id, &user.email)
            .await?;
        self.audit(
            AuditEvent::new(Category::Admin, "account.created", Outcome::Success)
                .actor("cli".to_owned())
                .details(serde_json::json!({ "user": user.id, "super_admin": super_admin })),
        )
        .await;
        Ok((user.into(), link))
    }

    fn refused(&self, refusal: Refusal) -> AccountError {
        match refusal {
            Refusal::Store(e) => e.into(),
            r => AccountError::Locked {
                retry_after_secs: r.retry_after_secs(self.clock.now_ms()),
            },
        }
    }

    /// The sign-in limits `ip` and `email` are held against, in reservation order.
    fn sign_in_limits(&self, ip: &str, email: &str) -> Vec<Limit> {
        vec![
            Limit {
                key: attempt_key("login-ip", ip),
                rule: self.lockout.per_ip,
            },
            Limit {
                key: attempt_key("login-account", email),
                rule: self.lockout.per_account,
            },
        ]
    }

    /// Audits each lock the settle started: once per lock, however many requests it refuses.
    async fn audit_locks(&self, limits: &[&str], settled: &[Option<Settled>], ip: Option<&str>) {
        for (limit, s) in limits.iter().zip(settled) {
            if let Some(until_ms) = s.and_then(|s| s.lock_started_until_ms) {
                self.audit(
                    AuditEvent::new(Category::Authentication, "login.locked", Outcome::Denied)
                        .details(serde_json::json!({
                            "limit": limit, "ip": ip, "until_ms": until_ms,
                        })),
                )
                .await;
            }
        }
    }

    /// Counts a failure of `email` from `ip` towards the credential-stuffing rule: the first
    /// failure of each account in the window counts against the address.
    async fn count_distinct_account_failure(&self, ip: &str, email: &str) {
        let rule = self.lockout.per_ip_accounts;
        let pair = Limit {
            key: attempt_key("login-ip-account", &format!("{ip}\n{email}")),
            // Counts only: the address-wide counter below does the locking.
            rule: ThrottleRule {
                max_attempts: u32::MAX,
                ..rule
            },
        };
        let counted = async {
            let first = self
                .limiter
                .record(&pair, AttemptOutcome::Failed)
                .await?
                .failures
                == 1;
            let accounts = Limit {
                key: attempt_key("login-ip-accounts", ip),
                rule,
            };
            // The same two counter steps whether or not this account is new to the address, so
            // the timing tells nothing about which accounts were tried before.
            let outcome = if first {
                AttemptOutcome::Failed
            } else {
                AttemptOutcome::Passed
            };
            self.limiter.record(&accounts, outcome).await.map(Some)
        }
        .await;
        match counted {
            Ok(settled) => {
                self.audit_locks(&["ip_accounts"], &[settled], Some(ip))
                    .await;
            }
            Err(e) => tracing::error!(error = %e, "distinct-account failure not counted"),
        }
    }

    /// Signs in and opens a session for `device` (SPEC A8). Each attempt holds a place under the
    /// address's and the account's failure limits while the password is checked, so parallel
    /// guesses cannot exceed them; only a wrong password counts. An address that failed against
    /// too many distinct accounts is refused first.
    #[tracing::instrument(skip_all)]
    pub async fn sign_in(
        &self,
        email: &str,
        password: SecretString,
        device: &Device,
    ) -> Result<IssuedTokens, AccountError> {
        let email = normalize_email(email).map_err(|_| AccountError::InvalidCredentials)?;
        let ip = device.ip.as_str();
        if let Some(until_ms) = self
            .limiter
            .locked_until(&attempt_key("login-ip-accounts", ip))
            .await?
        {
            return Err(self.refused(Refusal::Locked { until_ms }));
        }
        let held = self
            .limiter
            .reserve(self.sign_in_limits(ip, &email))
            .await
            .map_err(|r| self.refused(r))?;
        let user = self.store.user_by_email(&SCOPE, &email).await?;
        let stored = user.as_ref().and_then(|u| u.password_hash.clone());
        let verdict = self
            .hashing
            .verify(SecretString::from(password_clone(&password)), stored)
            .await?;
        let Some(user) = user.filter(|_| verdict.matches) else {
            self.failed_sign_in(held, ip, &email).await;
            return Err(AccountError::InvalidCredentials);
        };
        held.settle(AttemptOutcome::Passed).await;
        self.signed_in(user, password, verdict.needs_rehash, device)
            .await
    }

    async fn failed_sign_in(&self, held: Held, ip: &str, email: &str) {
        let settled = held.settle(AttemptOutcome::Failed).await;
        self.audit(
            AuditEvent::new(Category::Authentication, "login.failure", Outcome::Failure)
                .details(serde_json::json!({ "ip": ip })),
        )
        .await;
        self.audit_locks(&["ip", "account"], &settled, Some(ip))
            .await;
        self.count_distinct_account_failure(ip, email).await;
    }

    /// The password matched: the rest of sign-in (verified email, rehash, session).
    async fn signed_in(
        &self,
        user: UserRow,
        password: SecretString,
        needs_rehash: bool,
        device: &Device,
    ) -> Result<IssuedTokens, AccountError> {
        let now = self.clock.now_ms();
        if self.lockout.require_verified_email && user.email_verified_ms.is_none() {
            return Err(AccountError::EmailNotVerified);
        }
        if needs_rehash {
            let upgraded = self.hashing.hash(password).await?;
            self.store
                .set_password_hash(&SCOPE, &user.id, &upgraded, now)
                .await?;
            self.audit(
                AuditEvent::new(
                    Category::Authentication,
                    "password.rehashed",
                    Outcome::Success,
                )
                .actor(user.id.clone()),
            )
            .await;
        }
        let issued = self.sessions.start(&user.id, device).await?;
        self.audit(
            AuditEvent::new(Category::Authentication, "login.success", Outcome::Success)
                .actor(user.id.clone())
                .details(serde_json::json!({ "session": issued.session_id, "ip": device.ip })),
        )
        .await;
        Ok(issued)
    }

    /// Changes the password after checking the current one (counted like a sign-in attempt),
    /// then ends every other session of the user.
    #[tracing::instrument(skip_all)]
    pub async fn change_password(
        &self,
        user_id: &str,
        current_session: &str,
        current: SecretString,
        new: SecretString,
    ) -> Result<(), AccountError> {
        let scope = Scope::User {
            user_id: user_id.to_owned(),
            org_id: None,
        };
        let user = self
            .store
            .user_by_id(&scope, user_id)
            .await?
            .ok_or(AccountError::InvalidCredentials)?;
        let now = self.clock.now_ms();
        let held = self
            .limiter
            .reserve(vec![Limit {
                key: attempt_key("login-account", &user.email),
                rule: self.lockout.per_account,
            }])
            .await
            .map_err(|r| self.refused(r))?;
        if !self
            .hashing
            .verify(current, user.password_hash.clone())
            .await?
            .matches
        {
            let settled = held.settle(AttemptOutcome::Failed).await;
            self.audit(
                AuditEvent::new(
                    Category::Authentication,
                    "password.change_failed",
                    Outcome::Failure,
                )
                .actor(user_id.to_owned()),
            )
            .await;
            self.audit_locks(&["account"], &settled, None).await;
            return Err(AccountError::InvalidCredentials);
        }
        held.settle(AttemptOutcome::Passed).await;
        self.rules
            .check(&new, Some(&user.email))
            .map_err(AccountError::WeakPassword)?;
        let hash = self.hashing.hash(new).await?;
        self.store
            .set_password_hash(&scope, user_id, &hash, now)
            .await?;
        for s in self.sessions.list(user_id).await? {
            if s.revoked_ms.is_none() && s.id != current_session {
                self.sessions
                    .revoke_own(user_id, &s.id, "password_changed")
                    .await?;
            }
        }
        self.audit(
            AuditEvent::new(
                Category::Authentication,
                "password.changed",
                Outcome::Success,
            )
            .actor(user_id.to_owned()),
        )
        .await;
        Ok(())
    }

    /// How long a magic link works.
    pub fn link_ttl_ms(&self) -> i64 {
        self.links.ttl_ms()
    }

    /// The signed-in user's own account. A node serves it from a copy at most 5 s old (the
    /// same bound as session liveness), dropped at once when this node changes the account;
    /// another node's change shows within those 5 s. Only this read uses the copy: no
    /// decision is ever made from it.
    pub async fn me(&self, user_id: &str) -> Result<Option<Account>, AccountError> {
        let now = self.clock.now_ms();
        if let Ok(cache) = self.profiles.lock()
            && let Some((account, at)) = cache.get(user_id)
            && now - at < PROFILE_CACHE_MS
        {
            return Ok(Some(account.clone()));
        }
        let scope = Scope::User {
            user_id: user_id.to_owned(),
            org_id: None,
        };
        let account = self
            .store
            .user_by_id(&scope, user_id)
            .await?
            .map(Account::from);
        if let (Some(a), Ok(mut cache)) = (&account, self.profiles.lock()) {
            if cache.len() >= PROFILE_CACHE_CAPACITY {
                cache.retain(|_, (_, at)| now - *at < PROFILE_CACHE_MS);
                if cache.len() >= PROFILE_CACHE_CAPACITY {
                    cache.clear();
                }
            }
            cache.insert(user_id.to_owned(), (a.clone(), now));
        }
        Ok(account)
    }

    /// Brings the stored addresses up to the current [`normalize_email`] rule: run at start-up,
    /// after the migrations (a migration cannot run this code). Reads every account, and
    /// rewrites each address that is not in its normal form, only while it still reads as it
    /// did and only when no other account has or gets that form. Accounts that would become
    /// one address are never merged or changed: each such group is reported by a warning and
    /// an `account.email_collision` audit event (ids only) for an operator to resolve, and so
    /// is each address the rule refuses (`account.email_refused`). Rewrites are audited as
    /// `account.email_normalized`. Running it again changes nothing more; concurrent runs on
    /// several nodes are safe (the rewrite is conditional).
    #[tracing::instrument(skip_all)]
    pub async fn renormalize_emails(&self) -> Result<Renormalized, AccountError> {
        let mut out = Renormalized::default();
        // normal form -> (id, stored form) of the accounts that would move to it.
        let mut stale: std::collections::BTreeMap<String, Vec<(String, String)>> =
            std::collections::BTreeMap::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .store
                .users_page(&SCOPE, after.as_deref(), RENORMALIZE_PAGE)
                .await?;
            let full = page.len() >= RENORMALIZE_PAGE as usize;
            after = page.last().map(|u| u.id.clone());
            for u in page {
                match normalize_email(&u.email) {
                    Ok(normal) if normal == u.email => {}
                    Ok(normal) => stale.entry(normal).or_default().push((u.id, u.email)),
                    Err(_) => out.refused.push(u.id),
                }
            }
            if !full {
                break;
            }
        }
        let now = self.clock.now_ms();
        for (normal, group) in stale {
            let holder = self.store.user_by_email(&SCOPE, &normal).await?;
            let [(id, from)] = group.as_slice() else {
                out.collisions
                    .push(collision(holder, group.iter().map(|(id, _)| id.clone())));
                continue;
            };
            if holder.is_some() {
                out.collisions.push(collision(holder, [id.clone()]));
                continue;
            }
            match self.store.set_email(&SCOPE, id, from, &normal, now).await {
                Ok(true) => {
                    self.forget_profile(id);
                    out.rewritten.push(id.clone());
                }
                // Changed or gone meanwhile (another node's pass, say): nothing to do.
                Ok(false) => {}
                // Another account took the normal form meanwhile.
                Err(StoreError::Conflict(_)) => {
                    let holder = self.store.user_by_email(&SCOPE, &normal).await?;
                    out.collisions.push(collision(holder, [id.clone()]));
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.report_renormalized(&out).await;
        Ok(out)
    }

    async fn report_renormalized(&self, out: &Renormalized) {
        for id in &out.rewritten {
            self.audit(
                AuditEvent::new(
                    Category::Admin,
                    "account.email_normalized",
                    Outcome::Success,
                )
                .actor(id.clone()),
            )
            .await;
        }
        if !out.rewritten.is_empty() {
            tracing::info!(
                accounts = out.rewritten.len(),
                "stored email addresses rewritten to their normal form"
            );
        }
        for users in &out.collisions {
            tracing::warn!(
                ?users,
                "accounts whose email addresses are one mailbox: left unchanged, resolve by hand"
            );
            self.audit(
                AuditEvent::new(Category::Admin, "account.email_collision", Outcome::Failure)
                    .details(serde_json::json!({ "users": users })),
            )
            .await;
        }
        for id in &out.refused {
            tracing::warn!(
                user = %id,
                "an account's stored email address is not valid under the current rule: left unchanged"
            );
            self.audit(
                AuditEvent::new(Category::Admin, "account.email_refused", Outcome::Failure)
                    .actor(id.clone()),
            )
            .await;
        }
    }

    /// Drops this node's copy of an account after changing it.
    fn forget_profile(&self, user_id: &str) {
        if let Ok(mut cache) = self.profiles.lock() {
            cache.remove(user_id);
        }
    }
}

/// A collision group: the account already holding the address (if any), then the others.
fn collision(holder: Option<UserRow>, others: impl IntoIterator<Item = String>) -> Vec<String> {
    holder.map(|h| h.id).into_iter().chain(others).collect()
}

/// A second owned copy of a secret, for the verify-then-maybe-rehash path. Both copies are
/// zeroized on drop.
fn password_clone(p: &SecretString) -> String {
    use secrecy::ExposeSecret;
    p.expose_secret().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a1_emails_are_normalised_and_checked() {
        assert_eq!(
            normalize_email("  Ada@Example.COM ").unwrap(),
            "ada@example.com"
        );
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a b@example.com",
            "ada@@example.com",
            "ada@.com",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
        assert!(normalize_email(&format!("{}@example.com", "a".repeat(65))).is_err());
    }

    #[test]
    fn a1_one_mailbox_written_in_several_unicode_forms_normalizes_to_one_address() {
        for (raw, want) in [
            ("ａｄａ@example.com", "ada@example.com"),
            ("a\u{200B}da@example.com", "ada@example.com"),
            ("ada\u{FF20}example\u{3002}com", "ada@example.com"),
            (
                "a\u{00AD}d\u{200D}a\u{FEFF}@ex\u{200C}ample\u{2060}.com",
                "ada@example.com",
            ),
            (
                "ada\u{FE0F}\u{E0041}\u{180E}@example.com",
                "ada@example.com",
            ),
            ("\u{202E}ada@example.com\u{202C}", "ada@example.com"),
            ("ada@bücher.example", "ada@xn--bcher-kva.example"),
            ("ada@xn--bcher-kva.example", "ada@xn--bcher-kva.example"),
            ("ADA@BÜCHER.EXAMPLE", "ada@xn--bcher-kva.example"),
            ("Ada@XN--BCHER-KVA.Example", "ada@xn--bcher-kva.example"),
            ("ＡＤＡ@xn--bcher-kva.example", "ada@xn--bcher-kva.example"),
            ("a\u{200B}da@BÜCHER.example", "ada@xn--bcher-kva.example"),
            // U+0308 after u: NFKC composes it into ü.
            ("ada@bu\u{0308}cher.example", "ada@xn--bcher-kva.example"),
            ("ÄDA@example.com", "äda@example.com"),
        ] {
            let got = normalize_email(raw).unwrap_or_else(|e| panic!("{raw:?}: {e}"));
            assert_eq!(got, want, "{raw:?}");
            assert_eq!(normalize_email(&got).unwrap(), got, "idempotent on {raw:?}");
        }
        assert!(same_address(
            "ada@bücher.example",
            "ＡＤＡ@xn--bcher-kva.example"
        ));
        assert!(!same_address("ada@bücher.example", "ada@bucher.example"));
    }

    #[test]
    fn a1_addresses_that_do_not_survive_normalization_are_refused() {
        let long_label = format!("ada@{}.example", "a".repeat(64));
        let long_raw = format!("ada@example.com{}", "\u{200B}".repeat(400));
        for bad in [
            // The domain fails UTS 46: bad Punycode, STD3 (letters, digits, hyphens), hyphens
            // at a label's ends, empty or over-long labels.
            "ada@xn--a.example",
            "ada@xn--ls8h-.example",
            "ada@bad_host.example",
            "ada@-lead.example",
            "ada@trail-.example",
            "ada@a..example",
            "ada@example.com.",
            long_label.as_str(),
            // Nothing left once the invisible characters are gone.
            "\u{200B}@example.com",
            "ada@\u{200B}\u{FEFF}",
            "\u{200B}\u{FEFF}\u{00AD}",
            "",
            // Control characters and whitespace, wherever they come from.
            "ada\u{0007}@example.com",
            "ada@exa\u{0000}mple.com",
            "ada\u{0085}@example.com",
            "a\u{3000}da@example.com",
            // A compatibility form of `@` makes a second one.
            "a\u{FF20}da@example.com",
            long_raw.as_str(),
        ] {
            assert!(
                matches!(normalize_email(bad), Err(AccountError::InvalidEmail)),
                "{bad:?} -> {:?}",
                normalize_email(bad)
            );
        }
    }

    #[test]
    fn a8_attempt_keys_do_not_contain_the_email() {
        let k = attempt_key("login-account", "ada@example.com");
        assert!(k.starts_with("login-account:") && !k.contains("ada"));
        assert_eq!(k, attempt_key("login-account", "ada@example.com"));
    }
}
