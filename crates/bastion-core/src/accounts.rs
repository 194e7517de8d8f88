//! Sign-up and sign-in (SPEC A1, A8): email + password accounts, lockouts counted before any
//! hashing, the same work and the same answers whether or not an account exists, and hashes
//! upgraded to the configured algorithm on the next successful sign-in.

use std::sync::Arc;

use bastion_store::{AttemptDecision, Scope, Store, StoreError, ThrottleRule, UserRow};
use secrecy::SecretString;

use crate::Clock;
use crate::audit::{AuditEvent, AuditLog, Category, Outcome};
use crate::passwords::{HashingError, PasswordHashing, PasswordRejected, PasswordRules};
use crate::sessions::{Device, IssuedTokens, SessionError, Sessions};

const SCOPE: Scope = Scope::System("accounts");

/// Failed-login limits, counted in the database so they hold across nodes.
#[derive(Debug, Clone, Copy)]
pub struct LockoutPolicy {
    pub per_account: ThrottleRule,
    pub per_ip: ThrottleRule,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        let fifteen_minutes = 15 * 60_000;
        Self {
            per_account: ThrottleRule {
                max_attempts: 10,
                window_ms: fifteen_minutes,
                lockout_ms: fifteen_minutes,
            },
            per_ip: ThrottleRule {
                max_attempts: 100,
                window_ms: fifteen_minutes,
                lockout_ms: fifteen_minutes,
            },
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
    #[error("account storage: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Hashing(#[from] HashingError),
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// Trims and lower-cases an email and checks its shape (not deliverability).
pub fn normalize_email(raw: &str) -> Result<String, AccountError> {
    let email = raw.trim().to_lowercase();
    let ok = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && local.len() <= 64
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        });
    if ok {
        Ok(email)
    } else {
        Err(AccountError::InvalidEmail)
    }
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

pub struct Accounts {
    store: Arc<dyn Store>,
    hashing: Arc<PasswordHashing>,
    rules: PasswordRules,
    sessions: Arc<Sessions>,
    audit: Arc<AuditLog>,
    clock: Arc<dyn Clock>,
    lockout: LockoutPolicy,
}

fn attempt_key(kind: &str, value: &str) -> String {
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
    pub fn new(
        store: Arc<dyn Store>,
        hashing: Arc<PasswordHashing>,
        rules: PasswordRules,
        sessions: Arc<Sessions>,
        audit: Arc<AuditLog>,
        clock: Arc<dyn Clock>,
        lockout: LockoutPolicy,
    ) -> Self {
        Self {
            store,
            hashing,
            rules,
            sessions,
            audit,
            clock,
            lockout,
        }
    }

    async fn audit(&self, ev: AuditEvent) {
        // The action already happened; a failed audit write is logged, not turned into a 500.
        if let Err(e) = self.audit.record(ev).await {
            tracing::error!(error = %e, "audit write failed");
        }
    }

    /// Creates an account with a password.
    #[tracing::instrument(skip_all)]
    pub async fn sign_up(
        &self,
        email: &str,
        password: SecretString,
    ) -> Result<Account, AccountError> {
        let email = normalize_email(email)?;
        self.rules
            .check(&password, Some(&email))
            .map_err(AccountError::WeakPassword)?;
        let hash = self.hashing.hash(password).await?;
        let now = self.clock.now_ms();
        let mut id = [0u8; 16];
        bastion_crypto::random_bytes(&mut id).map_err(HashingError::from)?;
        let user = UserRow {
            id: format!(
                "usr_{}",
                id.iter().map(|b| format!("{b:02x}")).collect::<String>()
            ),
            email,
            email_verified_ms: None,
            password_hash: Some(hash),
            created_ms: now,
            updated_ms: now,
        };
        match self.store.create_user(&SCOPE, &user).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => return Err(AccountError::EmailTaken),
            Err(e) => return Err(e.into()),
        }
        self.audit(
            AuditEvent::new(
                Category::Authentication,
                "account.created",
                Outcome::Success,
            )
            .actor(user.id.clone()),
        )
        .await;
        Ok(user.into())
    }

    fn locked(until_ms: i64, now_ms: i64) -> AccountError {
        let secs = (until_ms - now_ms).max(1);
        AccountError::Locked {
            retry_after_secs: u64::try_from((secs + 999) / 1000).unwrap_or(1),
        }
    }

    /// Signs in and opens a session for `device`. Attempts are counted per IP and per email
    /// before the password is checked, so parallel guesses cannot exceed the limit.
    #[tracing::instrument(skip_all)]
    pub async fn sign_in(
        &self,
        email: &str,
        password: SecretString,
        device: &Device,
    ) -> Result<IssuedTokens, AccountError> {
        let email = normalize_email(email).map_err(|_| AccountError::InvalidCredentials)?;
        let now = self.clock.now_ms();
        let account_key = attempt_key("login-account", &email);
        for (key, rule) in [
            (attempt_key("login-ip", &device.ip), &self.lockout.per_ip),
            (account_key.clone(), &self.lockout.per_account),
        ] {
            if let AttemptDecision::Locked { until_ms } =
                self.store.register_attempt(&SCOPE, &key, now, rule).await?
            {
                self.audit(
                    AuditEvent::new(Category::Authentication, "login.locked", Outcome::Denied)
                        .details(serde_json::json!({ "ip": device.ip })),
                )
                .await;
                return Err(Self::locked(until_ms, now));
            }
        }
        let user = self.store.user_by_email(&SCOPE, &email).await?;
        let stored = user.as_ref().and_then(|u| u.password_hash.clone());
        let verdict = self
            .hashing
            .verify(SecretString::from(password_clone(&password)), stored)
            .await?;
        let Some(user) = user.filter(|_| verdict.matches) else {
            self.audit(
                AuditEvent::new(Category::Authentication, "login.failure", Outcome::Failure)
                    .details(serde_json::json!({ "ip": device.ip })),
            )
            .await;
            return Err(AccountError::InvalidCredentials);
        };
        self.store.clear_attempts(&SCOPE, &account_key).await?;
        if verdict.needs_rehash {
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
        let key = attempt_key("login-account", &user.email);
        if let AttemptDecision::Locked { until_ms } = self
            .store
            .register_attempt(&SCOPE, &key, now, &self.lockout.per_account)
            .await?
        {
            return Err(Self::locked(until_ms, now));
        }
        if !self
            .hashing
            .verify(current, user.password_hash.clone())
            .await?
            .matches
        {
            self.audit(
                AuditEvent::new(
                    Category::Authentication,
                    "password.change_failed",
                    Outcome::Failure,
                )
                .actor(user_id.to_owned()),
            )
            .await;
            return Err(AccountError::InvalidCredentials);
        }
        self.store.clear_attempts(&SCOPE, &key).await?;
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

    /// The signed-in user's own account.
    pub async fn me(&self, user_id: &str) -> Result<Option<Account>, AccountError> {
        let scope = Scope::User {
            user_id: user_id.to_owned(),
            org_id: None,
        };
        Ok(self
            .store
            .user_by_id(&scope, user_id)
            .await?
            .map(Account::from))
    }
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
    fn a8_attempt_keys_do_not_contain_the_email() {
        let k = attempt_key("login-account", "ada@example.com");
        assert!(k.starts_with("login-account:") && !k.contains("ada"));
        assert_eq!(k, attempt_key("login-account", "ada@example.com"));
    }
}
