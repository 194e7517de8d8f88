//! Storage of wallets (SPEC P5): a balance row per wallet with its `ledger_version`, and a
//! double-entry ledger whose entries are never updated or deleted.
//!
//! Every posting writes two entries that sum to zero: one on the wallet's own account and one
//! on its counter-account (`funding` for credits and their reversals, `spending` for debits),
//! so the ledger balances per transaction and the wallet account's sum equals the balance.
//!
//! A wallet belongs to an org (`org_id`, `user_id` NULL) or to a user (`user_id`, `org_id`
//! NULL). Who may do what, enforced by RLS on PostgreSQL and by the queries on SQLite:
//! - org wallets: `wallet.read` reads; `wallet.manage` creates, credits, debits and reverses;
//! - user wallets: the owner reads and debits (spends their own credit); credits and reversals
//!   come only from the system path `Scope::System("payments")` (a verified payment);
//! - the system path does everything.

use crate::{Scope, StoreResult};

/// A wallet's balance row (`wal_…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalletRow {
    pub id: String,
    /// Exactly one of `org_id` and `user_id` is set.
    pub org_id: Option<String>,
    pub user_id: Option<String>,
    /// ISO 4217 code in upper case, or a product's credit unit (`CREDITS`); amounts are in its
    /// smallest unit.
    pub currency: String,
    pub balance: i64,
    /// How far below zero the balance may go (0: no overdraft).
    pub credit_limit: i64,
    /// 0 at creation; +1 with every posting.
    pub ledger_version: i64,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// What a posting does to the wallet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MovementKind {
    /// Adds `amount` (a payment, a grant).
    Credit,
    /// Takes `amount` (spending); refused below `-credit_limit`.
    Debit,
    /// Undoes an earlier credit in full (a refund); refused below `-credit_limit`.
    Reversal,
}

impl MovementKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Credit => "credit",
            Self::Debit => "debit",
            Self::Reversal => "reversal",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "credit" => Some(Self::Credit),
            "debit" => Some(Self::Debit),
            "reversal" => Some(Self::Reversal),
            _ => None,
        }
    }
}

/// One posting, as the domain asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Movement {
    /// `wtx_…`: the transaction both entries share.
    pub txn_id: String,
    pub kind: MovementKind,
    /// Positive, in the wallet's smallest unit. For a reversal, the store uses the reversed
    /// credit's amount and ignores this one.
    pub amount: i64,
    /// For a reversal: the `txn_id` of the credit it undoes.
    pub reverses: Option<String>,
    /// A caller's reference, unique per wallet (a payment event id, an idempotency key): the
    /// same reference posted twice is `Duplicate`, never a second movement.
    pub reference: Option<String>,
    pub memo: String,
    pub created_ms: i64,
    /// A user id, an API key id or a system path name.
    pub created_by: String,
}

/// The wallet-account side of one posting, as history shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub txn_id: String,
    pub wallet_id: String,
    /// The wallet's `ledger_version` after this posting (1, 2, …): history's order.
    pub seq: i64,
    pub kind: MovementKind,
    /// Signed: positive for credits, negative for debits and reversals.
    pub amount: i64,
    pub balance_after: i64,
    pub reverses: Option<String>,
    pub reference: Option<String>,
    pub memo: String,
    pub created_ms: i64,
    pub created_by: String,
}

/// The outcome of [`WalletStore::post`]. Only `Applied` wrote anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Posted {
    Applied(LedgerEntry),
    /// The reference was already posted to this wallet: the earlier entry.
    Duplicate(LedgerEntry),
    /// `expected_version` no longer matches: someone posted in between; retry.
    Conflict,
    /// The balance would fall below `-credit_limit`.
    Insufficient {
        balance: i64,
        credit_limit: i64,
    },
    /// The reversed transaction is not a credit of this wallet, or is already reversed.
    NotReversible,
}

#[async_trait::async_trait]
pub trait WalletStore {
    /// `Conflict("wallet_exists")` when the owner already has a wallet in that currency.
    async fn create_wallet(&self, scope: &Scope, wallet: &WalletRow) -> StoreResult<()>;
    async fn wallet(&self, scope: &Scope, wallet_id: &str) -> StoreResult<Option<WalletRow>>;
    /// An org's wallets (`org_id`) or a user's (`user_id`), by currency.
    async fn wallets_of(
        &self,
        scope: &Scope,
        org_id: Option<&str>,
        user_id: Option<&str>,
    ) -> StoreResult<Vec<WalletRow>>;
    /// Sets how far the balance may go below zero (`wallet.manage` or system). `false` when
    /// there is no such wallet.
    async fn set_credit_limit(
        &self,
        scope: &Scope,
        wallet_id: &str,
        credit_limit: i64,
        now_ms: i64,
    ) -> StoreResult<bool>;
    /// Posts a movement in one transaction: the balance row is changed by a conditional
    /// update (`ledger_version = expected` when given; otherwise under the row lock) that
    /// also checks the overdraft floor, and both ledger entries are inserted. `NotFound` when
    /// the wallet does not exist or the scope may not post this kind to it.
    async fn post(
        &self,
        scope: &Scope,
        wallet_id: &str,
        expected_version: Option<i64>,
        movement: &Movement,
    ) -> StoreResult<Posted>;
    /// The wallet's entries, newest first, with `seq < before` when given, at most `limit`.
    async fn entries(
        &self,
        scope: &Scope,
        wallet_id: &str,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<LedgerEntry>>;
    /// (sum of the wallet account's entries, sum of every entry of the wallet's transactions):
    /// the first equals the balance and the second is 0 when the ledger is consistent.
    async fn ledger_sums(&self, scope: &Scope, wallet_id: &str) -> StoreResult<(i64, i64)>;
}
