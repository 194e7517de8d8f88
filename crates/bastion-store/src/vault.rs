//! Storage of the vault: org projects with their sealed secrets, the encryption budget of each
//! data key, and the sealed columns that `bastion keys rewrap` walks.
//!
//! Stores never see a plaintext: every value arrives sealed by bastion-core, with the id of the
//! key that sealed it kept in a column beside it so status and rewrap need no decryption.

use crate::{Scope, StoreResult, StoredKey};

/// A column holding envelopes, and the purpose whose keys seal it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SealedColumn {
    /// `email_outbox.sealed` (key id in `sealed_key`; NULL once delivered or abandoned).
    MailBody,
    /// `secrets.value` (key id in `value_key`).
    SecretValue,
    /// `webhook_secrets.secret` (key id in `secret_key`).
    WebhookSecret,
    /// `idempotency_keys.body` (key id in `body_key`; NULL while the request is in flight).
    IdempotentResponse,
}

impl SealedColumn {
    pub const ALL: &'static [SealedColumn] = &[
        SealedColumn::MailBody,
        SealedColumn::SecretValue,
        SealedColumn::WebhookSecret,
        SealedColumn::IdempotentResponse,
    ];

    /// The key-ring purpose whose keys seal this column.
    pub fn purpose(self) -> &'static str {
        match self {
            Self::MailBody => "mail",
            Self::SecretValue => "secrets",
            Self::WebhookSecret => "webhooks",
            Self::IdempotentResponse => "idempotency",
        }
    }

    pub fn table(self) -> &'static str {
        match self {
            Self::MailBody => "email_outbox",
            Self::SecretValue => "secrets",
            Self::WebhookSecret => "webhook_secrets",
            Self::IdempotentResponse => "idempotency_keys",
        }
    }

    pub fn column(self) -> &'static str {
        match self {
            Self::MailBody => "sealed",
            Self::SecretValue => "value",
            Self::WebhookSecret => "secret",
            Self::IdempotentResponse => "body",
        }
    }
}

/// One sealed value as rewrap reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedRow {
    pub row_id: String,
    /// The key id stored beside the envelope (empty when a migration could not tell it).
    pub key_id: String,
    pub envelope: Vec<u8>,
}

/// A rewrapped value: written only where the row still holds `old` (a concurrent write wins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrapped {
    pub row_id: String,
    pub old: Vec<u8>,
    pub key_id: String,
    pub new: Vec<u8>,
}

/// How many rows of a sealed column each key id seals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedCount {
    pub column: SealedColumn,
    pub key_id: String,
    pub rows: u64,
}

/// An org project: a named group of secrets (`prj_…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectRow {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub created_by: String,
    pub created_ms: i64,
}

/// A secret as stored: its value sealed under a `secrets` key, bound to this row's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRow {
    /// `sec_…`; part of the envelope's context, so it never changes.
    pub id: String,
    pub org_id: String,
    pub project_id: String,
    pub name: String,
    pub value_key: String,
    pub value: Vec<u8>,
    /// 1 at creation, +1 on every update.
    pub version: u32,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub updated_by: String,
}

/// What a list shows of a secret: never its value, sealed or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretMeta {
    pub id: String,
    pub project_id: String,
    pub name: String,
    pub version: u32,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub updated_by: String,
}

/// A new value for an existing secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretUpdate {
    pub value_key: String,
    pub value: Vec<u8>,
    pub updated_ms: i64,
    pub updated_by: String,
}

#[async_trait::async_trait]
pub trait SecretStore {
    /// `Conflict` when the org already has a project of that name.
    async fn create_project(&self, scope: &Scope, row: &ProjectRow) -> StoreResult<()>;
    /// The org's projects, by name.
    async fn projects(&self, scope: &Scope, org_id: &str) -> StoreResult<Vec<ProjectRow>>;
    async fn project(
        &self,
        scope: &Scope,
        org_id: &str,
        project_id: &str,
    ) -> StoreResult<Option<ProjectRow>>;
    /// Deletes the project and its secrets; false when there was none.
    async fn delete_project(
        &self,
        scope: &Scope,
        org_id: &str,
        project_id: &str,
    ) -> StoreResult<bool>;
    /// `Conflict` when the project already has a secret of that name; `NotFound` when the
    /// project does not exist in that org.
    async fn insert_secret(&self, scope: &Scope, row: &SecretRow) -> StoreResult<()>;
    /// Replaces the value and bumps the version; the new version, or `None` when no such secret.
    async fn update_secret(
        &self,
        scope: &Scope,
        org_id: &str,
        secret_id: &str,
        update: &SecretUpdate,
    ) -> StoreResult<Option<u32>>;
    /// Names and metadata of a project's secrets, by name. Never a value.
    async fn secrets(
        &self,
        scope: &Scope,
        org_id: &str,
        project_id: &str,
    ) -> StoreResult<Vec<SecretMeta>>;
    /// One secret with its sealed value.
    async fn secret(
        &self,
        scope: &Scope,
        org_id: &str,
        project_id: &str,
        name: &str,
    ) -> StoreResult<Option<SecretRow>>;
    /// False when there was none.
    async fn delete_secret(
        &self,
        scope: &Scope,
        org_id: &str,
        project_id: &str,
        name: &str,
    ) -> StoreResult<bool>;
}

#[async_trait::async_trait]
pub trait VaultStore {
    /// Reserves `n` more encryptions under `key_id` (atomic across nodes); returns the total
    /// reserved for that key so far, these included.
    async fn reserve_encryptions(&self, scope: &Scope, key_id: &str, n: u64) -> StoreResult<u64>;
    /// Encryptions reserved so far per key id.
    async fn encryptions(&self, scope: &Scope) -> StoreResult<Vec<(String, u64)>>;
    /// Rows per key id in every sealed column (rows without an envelope are not counted).
    async fn sealed_counts(&self, scope: &Scope) -> StoreResult<Vec<SealedCount>>;
    /// Up to `limit` rows of `column` whose envelope is not sealed by `current_key_id`, with a
    /// row id greater than `after`, ordered by row id.
    async fn sealed_batch(
        &self,
        scope: &Scope,
        column: SealedColumn,
        current_key_id: &str,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<SealedRow>>;
    /// Writes each new envelope (and its key id) only where the row still holds `old`, all in
    /// one transaction; returns how many rows changed.
    async fn replace_sealed(
        &self,
        scope: &Scope,
        column: SealedColumn,
        rows: &[Rewrapped],
    ) -> StoreResult<u64>;
    /// Marks `key_ids` (keys of one purpose) retired, in one transaction that first checks
    /// that no row of `columns` is still sealed by one of them: `Conflict` if one is.
    async fn retire_keys(
        &self,
        scope: &Scope,
        columns: &[SealedColumn],
        key_ids: &[String],
    ) -> StoreResult<u64>;
    /// Replaces the canary and every wrapped key (matched by purpose and version) in one
    /// transaction, only if the canary is still `old_canary` (`Conflict` otherwise).
    async fn replace_key_ring(
        &self,
        scope: &Scope,
        old_canary: &[u8],
        new_canary: &[u8],
        keys: &[StoredKey],
    ) -> StoreResult<()>;
}
