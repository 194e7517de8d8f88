//! Password rules and hashing on a bounded blocking pool (SPEC A1).
//!
//! Hashing is deliberately slow, so it never runs on the async workers: each hash or
//! verification takes a permit (as many as the pool size, default: the core count) and runs on
//! tokio's blocking threads. A login storm therefore queues for permits instead of starving
//! every other request. Unknown accounts are checked against a dummy hash made with the same
//! policy, so a login takes the same work whether or not the account exists.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bastion_crypto::password::{self, PasswordPolicy, Verification};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;

/// Why a new password is refused. Messages are safe to show to the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordRejected {
    #[error("the password must be at least {0} characters long")]
    TooShort(usize),
    #[error("the password must be at most {0} characters long")]
    TooLong(usize),
    #[error("this password is too common; choose another")]
    Common,
    #[error("the password must not be the email address")]
    SameAsEmail,
}

/// Length limits and a deny-list of common passwords.
#[derive(Debug, Clone)]
pub struct PasswordRules {
    pub min_chars: usize,
    pub max_chars: usize,
    deny: HashSet<String>,
}

impl Default for PasswordRules {
    fn default() -> Self {
        Self {
            min_chars: 8,
            max_chars: 256,
            deny: HashSet::new(),
        }
    }
}

impl PasswordRules {
    /// Rules with a deny-list given as text, one password per line (`#` starts a comment).
    pub fn with_deny_list(mut self, text: &str) -> Self {
        self.deny = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_lowercase)
            .collect();
        self
    }

    pub fn deny_list_len(&self) -> usize {
        self.deny.len()
    }

    /// Checks a new password. Length counts characters, not bytes.
    pub fn check(
        &self,
        password: &SecretString,
        email: Option<&str>,
    ) -> Result<(), PasswordRejected> {
        let pw = password.expose_secret();
        let chars = pw.chars().count();
        if chars < self.min_chars {
            return Err(PasswordRejected::TooShort(self.min_chars));
        }
        if chars > self.max_chars {
            return Err(PasswordRejected::TooLong(self.max_chars));
        }
        let lower = pw.to_lowercase();
        if self.deny.contains(&lower) {
            return Err(PasswordRejected::Common);
        }
        if email.is_some_and(|e| e.eq_ignore_ascii_case(pw.trim())) {
            return Err(PasswordRejected::SameAsEmail);
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HashingError {
    #[error("password hashing: {0}")]
    Crypto(#[from] bastion_crypto::CryptoError),
    #[error("the password hashing pool is shut down")]
    PoolClosed,
}

/// Hashes and verifies passwords on a bounded pool.
pub struct PasswordHashing {
    policy: Arc<PasswordPolicy>,
    permits: Arc<Semaphore>,
    dummy: Arc<str>,
    in_flight: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

impl PasswordHashing {
    /// `pool_size` 0 means the number of cores.
    pub fn new(policy: PasswordPolicy, pool_size: usize) -> Result<Self, HashingError> {
        let size = if pool_size == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        } else {
            pool_size
        };
        // The dummy is a real hash of a random password under the same policy: same cost.
        let mut random = [0u8; 24];
        bastion_crypto::random_bytes(&mut random)?;
        let dummy = password::hash(&policy, &SecretString::from(hex::encode(random)))?;
        Ok(Self {
            policy: Arc::new(policy),
            permits: Arc::new(Semaphore::new(size)),
            dummy: Arc::from(dummy),
            in_flight: Arc::new(AtomicUsize::new(0)),
            peak: Arc::new(AtomicUsize::new(0)),
        })
    }

    pub fn policy(&self) -> &PasswordPolicy {
        &self.policy
    }

    /// The most hashes that ever ran at once (a gauge for operators; tests check the bound).
    pub fn peak_in_flight(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&PasswordPolicy) -> T + Send + 'static,
    ) -> Result<T, HashingError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| HashingError::PoolClosed)?;
        let policy = self.policy.clone();
        let (in_flight, peak) = (self.in_flight.clone(), self.peak.clone());
        tokio::task::spawn_blocking(move || {
            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            let out = job(&policy);
            in_flight.fetch_sub(1, Ordering::SeqCst);
            drop(permit);
            out
        })
        .await
        .map_err(|_| HashingError::PoolClosed)
    }

    pub async fn hash(&self, password: SecretString) -> Result<String, HashingError> {
        Ok(self.run(move |p| password::hash(p, &password)).await??)
    }

    /// Verifies against `stored`, or against the dummy when the account does not exist
    /// (`None`), which never matches but costs the same.
    pub async fn verify(
        &self,
        password: SecretString,
        stored: Option<String>,
    ) -> Result<Verification, HashingError> {
        let (target, real) = match stored {
            Some(h) => (h, true),
            None => (self.dummy.to_string(), false),
        };
        let v = self
            .run(move |p| password::verify(p, &password, &target))
            .await??;
        Ok(Verification {
            matches: v.matches && real,
            needs_rehash: v.needs_rehash && real,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> PasswordPolicy {
        PasswordPolicy {
            argon2_memory_kib: 256,
            argon2_iterations: 1,
            bcrypt_cost: 4,
            ..PasswordPolicy::owasp()
        }
    }

    fn s(x: &str) -> SecretString {
        SecretString::from(x.to_owned())
    }

    #[test]
    fn a1_rules_bound_length_in_characters_and_refuse_common_passwords() {
        let rules =
            PasswordRules::default().with_deny_list("# top passwords\npassword1\nQwertyuiop\n");
        assert_eq!(rules.deny_list_len(), 2);
        assert_eq!(
            rules.check(&s("short"), None),
            Err(PasswordRejected::TooShort(8))
        );
        assert_eq!(
            rules.check(&s(&"x".repeat(257)), None),
            Err(PasswordRejected::TooLong(256))
        );
        assert!(
            rules.check(&s(&"é".repeat(256)), None).is_ok(),
            "256 characters, 512 bytes"
        );
        assert_eq!(
            rules.check(&s("PASSWORD1"), None),
            Err(PasswordRejected::Common)
        );
        assert_eq!(
            rules.check(&s("qwertyuiop"), None),
            Err(PasswordRejected::Common)
        );
        assert_eq!(
            rules.check(&s("Me@Example.com"), Some("me@example.com")),
            Err(PasswordRejected::SameAsEmail)
        );
        assert!(
            rules
                .check(&s("a long unusual passphrase"), Some("me@example.com"))
                .is_ok()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a1_unknown_accounts_run_the_same_verification_and_never_match() {
        let h = PasswordHashing::new(cheap(), 2).unwrap();
        let stored = h.hash(s("right password")).await.unwrap();
        assert!(
            h.verify(s("right password"), Some(stored.clone()))
                .await
                .unwrap()
                .matches
        );
        assert!(
            !h.verify(s("wrong password"), Some(stored))
                .await
                .unwrap()
                .matches
        );
        let none = h.verify(s("right password"), None).await.unwrap();
        assert_eq!(
            none,
            Verification {
                matches: false,
                needs_rehash: false
            }
        );
        // The dummy really is a hash under the configured policy (same cost as a real one).
        assert!(h.dummy.starts_with("$argon2id$v=19$m=256,t=1,p=1$"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a1_hashing_never_exceeds_the_pool_size() {
        let h = Arc::new(
            PasswordHashing::new(
                PasswordPolicy {
                    argon2_memory_kib: 4096,
                    ..cheap()
                },
                2,
            )
            .unwrap(),
        );
        let tasks: Vec<_> = (0..24)
            .map(|i| {
                let h = h.clone();
                tokio::spawn(
                    async move { h.hash(s(&format!("password number {i}"))).await.unwrap() },
                )
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert!(h.peak_in_flight() >= 1);
        assert!(h.peak_in_flight() <= 2, "peak {}", h.peak_in_flight());
    }
}
