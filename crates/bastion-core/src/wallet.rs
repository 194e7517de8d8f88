//! Wallets (SPEC P5): per org or per user, a balance kept beside a double-entry ledger whose
//! entries are never changed. Credits, debits and reversals of a credit; no overdraft unless a
//! credit line is configured.
//!
//! Every change is a conditional update on the wallet's `ledger_version`: read the version,
//! post against it, and when another posting got there first, read again and retry after a
//! short jittered pause. After [`WalletConfig::optimistic_attempts`] lost races the posting
//! takes the row lock instead, so a hot wallet still makes progress and no caller waits
//! without bound.

use std::sync::Arc;
use std::time::Duration;

use bastion_store::{
    LedgerEntry, Movement, MovementKind, Posted, Scope, Store, StoreError, WalletRow,
};

use crate::Clock;
use crate::audit::{AuditEvent, AuditLog, Category, Outcome};
use crate::ids::new_id;
use crate::orgs::{Caller, OrgError, Orgs};

/// The path a verified payment credits and reverses through.
pub const PAYMENTS: Scope = Scope::System("payments");
const MAX_MEMO_CHARS: usize = 200;
const MAX_REFERENCE_LEN: usize = 255;
/// Larger amounts are refused: sums of many stay far from `i64` overflow.
pub const MAX_AMOUNT: i64 = 1_000_000_000_000;

#[derive(Debug, Clone)]
pub struct WalletConfig {
    /// Postings against a read version before taking the row lock (3).
    pub optimistic_attempts: u32,
    /// Upper bound of the first jittered pause between attempts; it doubles each time (2 ms).
    pub backoff_ms: u64,
}

impl Default for WalletConfig {
    fn default() -> Self {
        Self {
            optimistic_attempts: 3,
            backoff_ms: 2,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    #[error(transparent)]
    Org(#[from] OrgError),
    #[error("{0}")]
    Invalid(String),
    #[error("no such wallet")]
    NotFound,
    #[error("a wallet in that currency already exists for this owner")]
    Exists,
    #[error("insufficient funds: the balance is {balance} and the credit line {credit_limit}")]
    Insufficient { balance: i64, credit_limit: i64 },
    #[error("that transaction is not a credit of this wallet, or it is already reversed")]
    NotReversible,
    #[error("wallet storage: {0}")]
    Store(StoreError),
    #[error("no randomness for an id")]
    Random,
}

impl From<StoreError> for WalletError {
    fn from(e: StoreError) -> Self {
        match e {
            // Another owner's wallet reads as absent, like a made-up id.
            StoreError::NotFound | StoreError::Forbidden => Self::NotFound,
            StoreError::Conflict("wallet_exists") => Self::Exists,
            other => Self::Store(other),
        }
    }
}

/// Whose wallet: an org's or a user's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    Org(String),
    User(String),
}

/// A posting as a caller asks for it.
#[derive(Debug, Clone)]
pub struct PostingInput {
    pub kind: MovementKind,
    /// Ignored for a reversal (the credit's own amount is reversed).
    pub amount: i64,
    pub reverses: Option<String>,
    /// Makes the posting idempotent: the same reference again returns the first posting.
    pub reference: Option<String>,
    pub memo: String,
}

/// The result of a posting.
#[derive(Debug, Clone)]
pub struct Posting {
    pub entry: LedgerEntry,
    /// True when the reference was already posted: nothing changed now.
    pub duplicate: bool,
}

/// Who acts on which wallet, resolved once per call.
struct Acting {
    scope: Scope,
    actor: String,
    org_id: Option<String>,
}

pub struct Wallets {
    orgs: Arc<Orgs>,
    store: Arc<dyn Store>,
    audit: Arc<AuditLog>,
    clock: Arc<dyn Clock>,
    config: WalletConfig,
}

fn currency_of(raw: &str) -> Result<String, WalletError> {
    let c = raw.trim().to_ascii_uppercase();
    if (3..=12).contains(&c.len()) && c.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(c)
    } else {
        Err(WalletError::Invalid(
            "currency is an ISO 4217 code or a unit name of 3 to 12 letters".into(),
        ))
    }
}

fn check_input(input: &PostingInput) -> Result<(), WalletError> {
    if input.kind != MovementKind::Reversal && !(1..=MAX_AMOUNT).contains(&input.amount) {
        return Err(WalletError::Invalid(format!(
            "amount must be 1 to {MAX_AMOUNT} in the currency's smallest unit"
        )));
    }
    if (input.kind == MovementKind::Reversal) != input.reverses.is_some() {
        return Err(WalletError::Invalid(
            "a reversal names the credit it reverses (and only a reversal does)".into(),
        ));
    }
    if input.memo.chars().count() > MAX_MEMO_CHARS || input.memo.chars().any(char::is_control) {
        return Err(WalletError::Invalid(format!(
            "memo is at most {MAX_MEMO_CHARS} characters, no control characters"
        )));
    }
    if let Some(r) = &input.reference
        && (r.is_empty() || r.len() > MAX_REFERENCE_LEN || r.chars().any(char::is_control))
    {
        return Err(WalletError::Invalid(format!(
            "reference is 1 to {MAX_REFERENCE_LEN} bytes, no control characters"
        )));
    }
    Ok(())
}

/// References of payment postings start with this; nobody else may use it, or a debit under a
/// refund's reference would make the refund's reversal a "duplicate" and keep the credit.
pub const PAYMENT_REFERENCE_PREFIX: &str = "stripe";

fn is_payment_reference(r: &str) -> bool {
    r.get(..PAYMENT_REFERENCE_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(PAYMENT_REFERENCE_PREFIX))
}

/// The transaction id of a payment's posting to a wallet, derived from its reference.
fn payment_txn_id(wallet_id: &str, reference: &str) -> String {
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        format!("wallet-payment-v1\0{wallet_id}\0{reference}").as_bytes(),
    );
    format!("wtx_{}", hex::encode(&digest.as_ref()[..16]))
}

/// A pause in `[0, cap_ms)`: concurrent losers spread out instead of colliding again.
fn jitter(cap_ms: u64) -> Duration {
    let mut b = [0u8; 8];
    let r = bastion_crypto::random_bytes(&mut b).map(|()| u64::from_le_bytes(b));
    Duration::from_micros(r.unwrap_or(0) % (cap_ms.max(1) * 1000))
}

impl Wallets {
    pub fn new(
        orgs: Arc<Orgs>,
        store: Arc<dyn Store>,
        audit: Arc<AuditLog>,
        clock: Arc<dyn Clock>,
        config: WalletConfig,
    ) -> Self {
        Self {
            orgs,
            store,
            audit,
            clock,
            config,
        }
    }

    async fn acting(
        &self,
        caller: &Caller,
        owner: &Owner,
        permission: &str,
    ) -> Result<Acting, WalletError> {
        match (owner, caller) {
            (Owner::Org(org_id), _) => {
                let access = self.orgs.authorize(caller, org_id, permission).await?;
                Ok(Acting {
                    scope: access.scope,
                    actor: caller.actor().to_owned(),
                    org_id: Some(access.org_id),
                })
            }
            // A user's own wallet; the store lets the owner read and debit it, nothing more.
            (Owner::User(user_id), Caller::User { user_id: me }) if user_id == me => Ok(Acting {
                scope: Scope::User {
                    user_id: me.clone(),
                    org_id: None,
                },
                actor: me.clone(),
                org_id: None,
            }),
            _ => Err(WalletError::NotFound),
        }
    }

    async fn record(&self, ev: AuditEvent) {
        if let Err(e) = self.audit.record(ev).await {
            tracing::error!(error = %e, "audit write failed");
        }
    }

    /// Opens an org wallet (`wallet.manage`).
    pub async fn create(
        &self,
        caller: &Caller,
        org_id: &str,
        currency: &str,
    ) -> Result<WalletRow, WalletError> {
        let owner = Owner::Org(org_id.to_owned());
        let acting = self.acting(caller, &owner, "wallet.manage").await?;
        let row = self.insert(&acting.scope, &owner, currency).await?;
        self.audit_change(
            &acting,
            "wallet.create",
            &row.id,
            serde_json::json!({
                "currency": row.currency,
            }),
        )
        .await;
        Ok(row)
    }

    async fn insert(
        &self,
        scope: &Scope,
        owner: &Owner,
        currency: &str,
    ) -> Result<WalletRow, WalletError> {
        let now = self.clock.now_ms();
        let (org_id, user_id) = match owner {
            Owner::Org(o) => (Some(o.clone()), None),
            Owner::User(u) => (None, Some(u.clone())),
        };
        let row = WalletRow {
            id: new_id("wal").map_err(|_| WalletError::Random)?,
            org_id,
            user_id,
            currency: currency_of(currency)?,
            balance: 0,
            credit_limit: 0,
            ledger_version: 0,
            created_ms: now,
            updated_ms: now,
        };
        self.store.create_wallet(scope, &row).await?;
        Ok(row)
    }

    /// The owner's wallet in `currency`, opened on first use (a verified payment's path).
    pub async fn open_for_payment(
        &self,
        owner: &Owner,
        currency: &str,
    ) -> Result<WalletRow, WalletError> {
        let currency = currency_of(currency)?;
        if let Some(w) = self.find(&PAYMENTS, owner, &currency).await? {
            return Ok(w);
        }
        match self.insert(&PAYMENTS, owner, &currency).await {
            // A concurrent payment opened it first.
            Err(WalletError::Exists) => self
                .find(&PAYMENTS, owner, &currency)
                .await?
                .ok_or(WalletError::NotFound),
            other => other,
        }
    }

    async fn find(
        &self,
        scope: &Scope,
        owner: &Owner,
        currency: &str,
    ) -> Result<Option<WalletRow>, WalletError> {
        let rows = match owner {
            Owner::Org(o) => self.store.wallets_of(scope, Some(o), None).await?,
            Owner::User(u) => self.store.wallets_of(scope, None, Some(u)).await?,
        };
        Ok(rows.into_iter().find(|w| w.currency == currency))
    }

    /// The owner's wallets (`wallet.read` for an org; a user sees their own).
    pub async fn list(
        &self,
        caller: &Caller,
        owner: &Owner,
    ) -> Result<Vec<WalletRow>, WalletError> {
        let acting = self.acting(caller, owner, "wallet.read").await?;
        Ok(match owner {
            Owner::Org(o) => self.store.wallets_of(&acting.scope, Some(o), None).await?,
            Owner::User(u) => self.store.wallets_of(&acting.scope, None, Some(u)).await?,
        })
    }

    /// One wallet of the owner.
    pub async fn get(
        &self,
        caller: &Caller,
        owner: &Owner,
        wallet_id: &str,
    ) -> Result<WalletRow, WalletError> {
        let acting = self.acting(caller, owner, "wallet.read").await?;
        self.owned(&acting.scope, owner, wallet_id).await
    }

    /// The wallet, only if it belongs to `owner` (a route names the owner; the id must match).
    async fn owned(
        &self,
        scope: &Scope,
        owner: &Owner,
        wallet_id: &str,
    ) -> Result<WalletRow, WalletError> {
        let w = self
            .store
            .wallet(scope, wallet_id)
            .await?
            .ok_or(WalletError::NotFound)?;
        let mine = match owner {
            Owner::Org(o) => w.org_id.as_deref() == Some(o),
            Owner::User(u) => w.user_id.as_deref() == Some(u),
        };
        if mine {
            Ok(w)
        } else {
            Err(WalletError::NotFound)
        }
    }

    /// History, newest first.
    pub async fn history(
        &self,
        caller: &Caller,
        owner: &Owner,
        wallet_id: &str,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<LedgerEntry>, WalletError> {
        let acting = self.acting(caller, owner, "wallet.read").await?;
        self.owned(&acting.scope, owner, wallet_id).await?;
        Ok(self
            .store
            .entries(&acting.scope, wallet_id, before, limit.clamp(1, 500))
            .await?)
    }

    /// Sets the credit line of an org wallet (`wallet.manage`).
    pub async fn set_credit_limit(
        &self,
        caller: &Caller,
        org_id: &str,
        wallet_id: &str,
        credit_limit: i64,
    ) -> Result<WalletRow, WalletError> {
        if !(0..=MAX_AMOUNT).contains(&credit_limit) {
            return Err(WalletError::Invalid(format!(
                "credit_limit must be 0 to {MAX_AMOUNT}"
            )));
        }
        let owner = Owner::Org(org_id.to_owned());
        let acting = self.acting(caller, &owner, "wallet.manage").await?;
        self.owned(&acting.scope, &owner, wallet_id).await?;
        let now = self.clock.now_ms();
        if !self
            .store
            .set_credit_limit(&acting.scope, wallet_id, credit_limit, now)
            .await?
        {
            return Err(WalletError::NotFound);
        }
        self.audit_change(
            &acting,
            "wallet.credit_limit",
            wallet_id,
            serde_json::json!({
                "credit_limit": credit_limit,
            }),
        )
        .await;
        self.owned(&acting.scope, &owner, wallet_id).await
    }

    /// Credits, debits or reverses. Org wallets need `wallet.manage`; on a user's own wallet
    /// the user may only debit (the store refuses the rest).
    pub async fn post(
        &self,
        caller: &Caller,
        owner: &Owner,
        wallet_id: &str,
        input: &PostingInput,
    ) -> Result<Posting, WalletError> {
        check_input(input)?;
        if input.reference.as_deref().is_some_and(is_payment_reference) {
            return Err(WalletError::Invalid(format!(
                "references starting with {PAYMENT_REFERENCE_PREFIX:?} are reserved for payments"
            )));
        }
        let acting = self.acting(caller, owner, "wallet.manage").await?;
        self.owned(&acting.scope, owner, wallet_id).await?;
        self.post_as(&acting, wallet_id, input, None).await
    }

    /// A credit by a verified payment (`Scope::System("payments")`). Its transaction id is
    /// derived from the reference, so a refund can reverse it by the same reference.
    pub async fn post_for_payment(
        &self,
        wallet_id: &str,
        input: &PostingInput,
    ) -> Result<Posting, WalletError> {
        check_input(input)?;
        let reference = input
            .reference
            .as_deref()
            .filter(|r| is_payment_reference(r))
            .ok_or_else(|| {
                WalletError::Invalid("a payment posting needs a payment reference".into())
            })?;
        let acting = Acting {
            scope: PAYMENTS,
            actor: "payments".to_owned(),
            org_id: None,
        };
        let txn_id = payment_txn_id(wallet_id, reference);
        let posting = self
            .post_as(&acting, wallet_id, input, Some(txn_id.clone()))
            .await?;
        // A duplicate counts as done only if it is this very posting (its id is derived from
        // the wallet and reference), not another under the same reference.
        if posting.duplicate && posting.entry.txn_id != txn_id {
            return Err(WalletError::Invalid(
                "another posting already holds this payment's reference".into(),
            ));
        }
        Ok(posting)
    }

    /// Reverses a payment's credit; `input.reverses` names the credit's *reference*.
    pub async fn reverse_payment(
        &self,
        wallet_id: &str,
        input: &PostingInput,
    ) -> Result<Posting, WalletError> {
        let credit = input
            .reverses
            .as_deref()
            .ok_or_else(|| WalletError::Invalid("name the credit's reference".into()))?;
        let input = PostingInput {
            reverses: Some(payment_txn_id(wallet_id, credit)),
            ..input.clone()
        };
        self.post_for_payment(wallet_id, &input).await
    }

    #[tracing::instrument(skip_all, fields(wallet_id, kind = input.kind.as_str()))]
    async fn post_as(
        &self,
        acting: &Acting,
        wallet_id: &str,
        input: &PostingInput,
        txn_id: Option<String>,
    ) -> Result<Posting, WalletError> {
        let txn_id = match txn_id {
            Some(t) => t,
            None => new_id("wtx").map_err(|_| WalletError::Random)?,
        };
        let movement = Movement {
            txn_id,
            kind: input.kind,
            amount: input.amount,
            reverses: input.reverses.clone(),
            reference: input.reference.clone(),
            memo: input.memo.clone(),
            created_ms: self.clock.now_ms(),
            created_by: acting.actor.clone(),
        };
        let mut pause = self.config.backoff_ms;
        let mut outcome = None;
        for attempt in 1..=self.config.optimistic_attempts {
            let w = self
                .store
                .wallet(&acting.scope, wallet_id)
                .await?
                .ok_or(WalletError::NotFound)?;
            match self
                .store
                .post(&acting.scope, wallet_id, Some(w.ledger_version), &movement)
                .await?
            {
                // No pause after the last lost race: the row lock is taken at once.
                Posted::Conflict if attempt < self.config.optimistic_attempts => {
                    tokio::time::sleep(jitter(pause)).await;
                    pause = pause.saturating_mul(2).min(64);
                }
                Posted::Conflict => {}
                other => {
                    outcome = Some(other);
                    break;
                }
            }
        }
        let outcome = match outcome {
            Some(o) => o,
            // Lost every race: wait for the row lock instead of retrying without end.
            None => {
                self.store
                    .post(&acting.scope, wallet_id, None, &movement)
                    .await?
            }
        };
        match outcome {
            Posted::Applied(entry) => {
                self.audit_change(
                    acting,
                    &format!("wallet.{}", input.kind.as_str()),
                    wallet_id,
                    serde_json::json!({
                        "txn_id": entry.txn_id,
                        "amount": entry.amount,
                        "balance_after": entry.balance_after,
                        "reference": entry.reference,
                    }),
                )
                .await;
                Ok(Posting {
                    entry,
                    duplicate: false,
                })
            }
            Posted::Duplicate(entry) => Ok(Posting {
                entry,
                duplicate: true,
            }),
            Posted::Insufficient {
                balance,
                credit_limit,
            } => Err(WalletError::Insufficient {
                balance,
                credit_limit,
            }),
            Posted::NotReversible => Err(WalletError::NotReversible),
            // The locked path cannot lose a race; a store that says so is broken.
            Posted::Conflict => Err(WalletError::Store(StoreError::Database(
                "conflict under the row lock".into(),
            ))),
        }
    }

    async fn audit_change(
        &self,
        acting: &Acting,
        action: &str,
        wallet_id: &str,
        mut details: serde_json::Value,
    ) {
        if let Some(map) = details.as_object_mut() {
            map.insert("wallet_id".into(), wallet_id.into());
        }
        let mut ev = AuditEvent::new(Category::Action, action, Outcome::Success)
            .actor(acting.actor.clone())
            .details(details);
        if let Some(org) = &acting.org_id {
            ev = ev.org(org.clone());
        }
        self.record(ev).await;
    }

    /// The store's own check of a wallet: (wallet account sum, whole-ledger sum).
    pub async fn ledger_sums(&self, wallet_id: &str) -> Result<(i64, i64), WalletError> {
        Ok(self.store.ledger_sums(&PAYMENTS, wallet_id).await?)
    }
}
