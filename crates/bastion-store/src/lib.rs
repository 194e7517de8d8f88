//! Storage traits of Bastion, one per area, with the row models they exchange.
//!
//! Every call takes a [`Scope`]: who acts, for which organization. On PostgreSQL the scope
//! becomes row-level security for the transaction; on SQLite the store's queries enforce it.
//! Nothing outside the `bastion-store-*` crates writes SQL.

pub mod accounts;
pub mod audit;
pub mod cleanup;
pub mod idempotency;
pub mod keyring;
pub mod licenses;
pub mod links;
pub mod lockout;
pub mod mail;
pub mod orgs;
mod scope;
pub mod vault;
pub mod wallet;
pub mod webhooks;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use accounts::{AccountStore, RefreshRow, Rotation, SessionRow, SessionStore, UserRow};
pub use audit::{AuditRecord, AuditStore, ChainHead, CheckpointRecord, NewAuditEvent, Sealer};
pub use cleanup::{CleanupStore, Purgeable};
pub use idempotency::{Begin, IdempotencyStore, StoredResponse};
pub use keyring::{KeyRingStore, StoredKey};
pub use licenses::{
    Activation, KeyFailure, LicenseRow, LicenseStore, MachineRow, PolicyRow, ProductRow,
};
pub use links::{ConsumedLink, MagicLinkRow, MagicLinkStore};
pub use lockout::{
    AttemptDecision, AttemptOutcome, CounterRule, CounterState, LockoutStore, RESERVATION_LEASE_MS,
    Reservation, Settled, ThrottleRule, reserve_all, settle_all,
};
pub use mail::{ClaimedMail, MailCounts, MailStore, OutboundMail};
pub use orgs::{
    API_KEY_TOUCH_MS, ActivityRow, ApiKeyRow, InvitationRow, MemberChange, MemberRow, OrgRow,
    OrgStore,
};
pub use scope::{KeyKind, Scope};
pub use vault::{
    ProjectRow, Rewrapped, SealedColumn, SealedCount, SealedRow, SecretMeta, SecretRow,
    SecretStore, SecretUpdate, VaultStore,
};
pub use wallet::{LedgerEntry, Movement, MovementKind, Posted, WalletRow, WalletStore};
pub use webhooks::{
    EndpointRow, EndpointSecretRow, EventRow, EventStatus, Finish, Recorded, WebhookStore,
};

/// Errors of the storage layer. Messages never contain row contents.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(&'static str),
    #[error("the database refused the operation for this scope")]
    Forbidden,
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(String),
    #[error("migration failed: {0}")]
    Migration(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// How tenant isolation is enforced by a backend, reported by `bastion attest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// PostgreSQL row-level security, enabled and forced on every table.
    RowLevelSecurity,
    /// The store's own queries (embedded SQLite, single node).
    StoreQueries,
}

/// A whole storage backend: every area's trait, plus health.
#[async_trait::async_trait]
pub trait Store:
    AccountStore
    + AuditStore
    + CleanupStore
    + IdempotencyStore
    + KeyRingStore
    + LicenseStore
    + LockoutStore
    + MagicLinkStore
    + MailStore
    + OrgStore
    + SecretStore
    + SessionStore
    + VaultStore
    + WalletStore
    + WebhookStore
    + Send
    + Sync
    + 'static
{
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    fn isolation(&self) -> Isolation;
    /// Succeeds when the database answers a trivial query.
    async fn ping(&self) -> StoreResult<()>;
    /// Closes the connections (graceful shutdown).
    async fn close(&self);
}
