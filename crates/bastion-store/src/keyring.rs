//! Storage of the wrapped per-purpose keys and the master-key canary.

use crate::{Scope, StoreResult};

/// A purpose key row: wrapped under the master key, never in the clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub purpose: String,
    pub version: u32,
    pub key_id: String,
    pub algorithm: String,
    pub wrapped: Vec<u8>,
    pub public_key: Option<Vec<u8>>,
    pub created_ms: i64,
    pub retired: bool,
}

#[async_trait::async_trait]
pub trait KeyRingStore {
    /// The canary ciphertext, if the key ring was initialised.
    async fn canary(&self, scope: &Scope) -> StoreResult<Option<Vec<u8>>>;
    /// Stores `canary` unless one exists; returns the canary now in force.
    async fn init_canary(&self, scope: &Scope, canary: &[u8], now_ms: i64) -> StoreResult<Vec<u8>>;
    async fn keys(&self, scope: &Scope) -> StoreResult<Vec<StoredKey>>;
    /// Inserts a key; `Conflict` when that purpose and version exist (another node won the race).
    async fn insert_key(&self, scope: &Scope, key: &StoredKey) -> StoreResult<()>;
}
