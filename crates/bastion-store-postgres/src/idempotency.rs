//! STUB: replaced by the idempotency store implementation.
#![allow(unused_variables)]

use bastion_store::{Begin, IdempotencyStore, Scope, StoreResult, StoredResponse};

use crate::PgStore;

#[async_trait::async_trait]
impl IdempotencyStore for PgStore {
    async fn begin(
        &self,
        scope: &Scope,
        owner: &str,
        key: &str,
        request_hash: &[u8; 32],
        row_id: &str,
        now_ms: i64,
        expires_ms: i64,
    ) -> StoreResult<Begin> {
        unimplemented!()
    }
    async fn complete(
        &self,
        scope: &Scope,
        row_id: &str,
        response: &StoredResponse,
    ) -> StoreResult<bool> {
        unimplemented!()
    }
    async fn release(&self, scope: &Scope, row_id: &str) -> StoreResult<bool> {
        unimplemented!()
    }
    async fn purge_idempotency(&self, scope: &Scope, now_ms: i64, limit: u32) -> StoreResult<u64> {
        unimplemented!()
    }
}
