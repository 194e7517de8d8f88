//! Storage of the append-only, hash-chained audit trail and its signed checkpoints.

use crate::{Scope, StoreResult};

/// An event before it joins the chain. `details` is canonical JSON (sorted keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuditEvent {
    pub ts_ms: i64,
    pub actor: Option<String>,
    pub org_id: Option<String>,
    pub category: String,
    pub action: String,
    pub outcome: String,
    pub details: String,
}

/// The chain position an event is appended after. Genesis is `seq = 0`, hash all zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    pub seq: i64,
    pub hash: [u8; 32],
}

impl ChainHead {
    pub const GENESIS: ChainHead = ChainHead {
        seq: 0,
        hash: [0; 32],
    };
}

/// A stored event with its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub seq: i64,
    pub event: NewAuditEvent,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
}

/// A signed statement "the log had `size` events and this head hash at `ts_ms`".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointRecord {
    pub size: i64,
    pub head_hash: [u8; 32],
    pub ts_ms: i64,
    pub key_id: String,
    pub signature: Vec<u8>,
}

/// Computes an event's hash from the head it follows (the domain's canonical encoding).
/// The store calls it inside its transaction, holding the chain lock, so the chain stays linear
/// across tasks and nodes.
pub type Sealer = dyn Fn(&ChainHead, i64, &NewAuditEvent) -> [u8; 32] + Send + Sync;

#[async_trait::async_trait]
pub trait AuditStore {
    /// Appends `events` in order after the current head, atomically; returns the new head.
    async fn append(
        &self,
        scope: &Scope,
        events: &[NewAuditEvent],
        seal: &Sealer,
    ) -> StoreResult<ChainHead>;
    /// The last event's position (genesis when empty).
    async fn head(&self, scope: &Scope) -> StoreResult<ChainHead>;
    /// Up to `limit` events with `seq > after`, in order, as stored (nothing re-checked).
    async fn events_after(
        &self,
        scope: &Scope,
        after: i64,
        limit: u32,
    ) -> StoreResult<Vec<AuditRecord>>;
    /// Records a checkpoint; a second one for the same size is ignored.
    async fn insert_checkpoint(
        &self,
        scope: &Scope,
        checkpoint: &CheckpointRecord,
    ) -> StoreResult<()>;
    /// All checkpoints, oldest first.
    async fn checkpoints(&self, scope: &Scope) -> StoreResult<Vec<CheckpointRecord>>;
    /// One organization's events, newest first, with `seq < before` (`None`: from the head).
    /// A scope outside that org sees none (on PostgreSQL, it also needs `audit.read` there).
    async fn org_events(
        &self,
        scope: &Scope,
        org_id: &str,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<AuditRecord>>;
}
