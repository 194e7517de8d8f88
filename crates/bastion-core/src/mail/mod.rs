//! Transactional email: messages are rendered from templates, sealed (AES-256-GCM under the
//! `mail` purpose key, since they may carry a magic link) and committed to the outbox table;
//! a dispatcher delivers them through a [`MailTransport`] with retries and exponential backoff,
//! so an unreachable mail server delays mail but never loses it.

mod templates;

use std::sync::Arc;

use bastion_store::{ClaimedMail, OutboundMail, Scope, SealedColumn, Store, StoreError};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

pub use templates::{Branding, Template};

use crate::Clock;
use crate::vault::{Field, Vault, VaultError};

const SCOPE: Scope = Scope::System("mail");

/// A rendered message. Its bodies may hold a magic link, so they are wiped on drop.
#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct Message {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

/// Why a delivery attempt failed. `reason` names the failure, never the message's contents.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub struct TransportError {
    /// The server refused for good (bad address, rejected): retrying will not help.
    pub permanent: bool,
    pub reason: String,
}

/// Delivers one message: SMTP or the file outbox (in `bastion-server`), or a test double.
#[async_trait::async_trait]
pub trait MailTransport: Send + Sync {
    /// `smtp` or `file`, for logs.
    fn name(&self) -> &'static str;
    async fn send(&self, message: &Message) -> Result<(), TransportError>;
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("mail storage: {0}")]
    Store(#[from] StoreError),
    #[error("mail could not be sealed or opened: {0}")]
    Vault(#[from] VaultError),
    #[error("no randomness for a message id")]
    Random,
    #[error("mail could not be encoded")]
    Encoding,
}

/// Retry schedule of the dispatcher.
#[derive(Debug, Clone, Copy)]
pub struct DispatchPolicy {
    /// The first retry waits this long; each further one twice as long…
    pub retry_base_ms: i64,
    /// …up to this.
    pub retry_max_ms: i64,
    /// Attempts before a message is abandoned (and logged as lost).
    pub max_attempts: u32,
    /// How long one attempt may hold a message before another dispatcher may take it.
    pub lease_ms: i64,
    /// Messages taken per round.
    pub batch: u32,
}

impl Default for DispatchPolicy {
    fn default() -> Self {
        Self {
            retry_base_ms: 30_000,
            retry_max_ms: 3_600_000,
            max_attempts: 10,
            lease_ms: 120_000,
            batch: 50,
        }
    }
}

impl DispatchPolicy {
    /// When attempt `attempts` (1-based) failed at `now_ms`, the next try, or `None` to give up.
    pub fn next_attempt(&self, attempts: u32, now_ms: i64) -> Option<i64> {
        if attempts >= self.max_attempts {
            return None;
        }
        let doublings = attempts.saturating_sub(1).min(30);
        let delay = self
            .retry_base_ms
            .saturating_mul(1_i64 << doublings)
            .min(self.retry_max_ms);
        Some(now_ms.saturating_add(delay))
    }
}

/// What one dispatch round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DispatchReport {
    pub sent: u32,
    pub retrying: u32,
    pub abandoned: u32,
}

pub struct Mailer {
    store: Arc<dyn Store>,
    vault: Arc<Vault>,
    clock: Arc<dyn Clock>,
    branding: Branding,
    policy: DispatchPolicy,
    wake: Notify,
}

impl Mailer {
    pub fn new(
        store: Arc<dyn Store>,
        vault: Arc<Vault>,
        clock: Arc<dyn Clock>,
        branding: Branding,
        policy: DispatchPolicy,
    ) -> Self {
        Self {
            store,
            vault,
            clock,
            branding,
            policy,
            wake: Notify::new(),
        }
    }

    /// Renders `template` for `to` and seals it into an outbox row (not yet stored).
    pub async fn prepare(
        &self,
        to: &str,
        template: &Template<'_>,
    ) -> Result<OutboundMail, MailError> {
        let message = template.render(&self.branding, to);
        let id = crate::ids::new_id("mail").map_err(|_| MailError::Random)?;
        let plain = Zeroizing::new(serde_json::to_vec(&message).map_err(|_| MailError::Encoding)?);
        let sealed = self
            .vault
            .seal(&Field::of(SealedColumn::MailBody, &id), &plain)
            .await?;
        Ok(OutboundMail {
            id,
            recipient: to.to_owned(),
            template: template.name().to_owned(),
            sealed: sealed.envelope,
            sealed_key: sealed.key_id,
            created_ms: self.clock.now_ms(),
        })
    }

    /// Queues a message that carries no link.
    pub async fn enqueue(&self, to: &str, template: &Template<'_>) -> Result<(), MailError> {
        let mail = self.prepare(to, template).await?;
        self.store.enqueue_mail(&SCOPE, &mail).await?;
        self.queued();
        Ok(())
    }

    /// Tells the dispatcher that mail is waiting (it also polls).
    pub fn queued(&self) {
        self.wake.notify_one();
    }

    /// Resolves when [`Mailer::queued`] is called.
    pub async fn wait_for_mail(&self) {
        self.wake.notified().await;
    }

    fn open(&self, mail: &ClaimedMail) -> Result<Message, MailError> {
        let plain = self
            .vault
            .open(&Field::of(SealedColumn::MailBody, &mail.id), &mail.sealed)?;
        serde_json::from_slice(&plain).map_err(|_| MailError::Encoding)
    }

    /// Delivers every due message once (one batch at a time), recording each outcome.
    #[tracing::instrument(skip_all, fields(transport = transport.name()))]
    pub async fn dispatch_due(
        &self,
        transport: &dyn MailTransport,
    ) -> Result<DispatchReport, MailError> {
        let mut report = DispatchReport::default();
        loop {
            let now = self.clock.now_ms();
            let batch = self
                .store
                .claim_mail(&SCOPE, now, self.policy.lease_ms, self.policy.batch)
                .await?;
            let full = batch.len() >= self.policy.batch as usize;
            for mail in batch {
                self.deliver(transport, &mail, &mut report).await?;
            }
            if !full {
                return Ok(report);
            }
        }
    }

    async fn deliver(
        &self,
        transport: &dyn MailTransport,
        mail: &ClaimedMail,
        report: &mut DispatchReport,
    ) -> Result<(), MailError> {
        let outcome = match self.open(mail) {
            Ok(message) => transport.send(&message).await,
            Err(e) => Err(TransportError {
                permanent: true,
                reason: format!("unreadable outbox row: {e}"),
            }),
        };
        let now = self.clock.now_ms();
        match outcome {
            Ok(()) => {
                self.store.mail_sent(&SCOPE, &mail.id, now).await?;
                tracing::info!(mail = %mail.id, template = %mail.template, "mail delivered");
                report.sent += 1;
            }
            Err(e) => {
                let retry = if e.permanent {
                    None
                } else {
                    self.policy.next_attempt(mail.attempts, now)
                };
                self.store
                    .mail_failed(&SCOPE, &mail.id, now, retry, &e.reason)
                    .await?;
                if retry.is_some() {
                    tracing::warn!(mail = %mail.id, attempts = mail.attempts, error = %e, "mail delivery failed; will retry");
                    report.retrying += 1;
                } else {
                    tracing::error!(mail = %mail.id, attempts = mail.attempts, error = %e, "mail delivery abandoned");
                    report.abandoned += 1;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_then_gives_up() {
        let p = DispatchPolicy {
            retry_base_ms: 1_000,
            retry_max_ms: 5_000,
            max_attempts: 5,
            ..DispatchPolicy::default()
        };
        let delays: Vec<_> = (1..=5).map(|a| p.next_attempt(a, 0)).collect();
        assert_eq!(
            delays,
            [Some(1_000), Some(2_000), Some(4_000), Some(5_000), None]
        );
    }
}
