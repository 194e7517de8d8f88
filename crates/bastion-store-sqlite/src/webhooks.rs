//! STUB: replaced by the webhooks store implementation.
#![allow(unused_variables)]

use bastion_store::{
    EndpointRow, EndpointSecretRow, EventRow, EventStatus, Finish, Recorded, Scope, StoreResult,
    WebhookStore,
};

use crate::SqliteStore;

#[async_trait::async_trait]
impl WebhookStore for SqliteStore {
    async fn insert_endpoint(
        &self,
        scope: &Scope,
        endpoint: &EndpointRow,
        secrets: &[EndpointSecretRow],
    ) -> StoreResult<()> {
        unimplemented!()
    }
    async fn endpoint(&self, scope: &Scope, endpoint_id: &str) -> StoreResult<Option<EndpointRow>> {
        unimplemented!()
    }
    async fn endpoints(&self, scope: &Scope, org_id: &str) -> StoreResult<Vec<EndpointRow>> {
        unimplemented!()
    }
    async fn delete_endpoint(&self, scope: &Scope, endpoint_id: &str) -> StoreResult<bool> {
        unimplemented!()
    }
    async fn live_secrets(
        &self,
        scope: &Scope,
        endpoint_id: &str,
        now_ms: i64,
    ) -> StoreResult<Vec<EndpointSecretRow>> {
        unimplemented!()
    }
    async fn rotate_secret(
        &self,
        scope: &Scope,
        secret: &EndpointSecretRow,
        overlap_until_ms: i64,
    ) -> StoreResult<()> {
        unimplemented!()
    }
    async fn record_event(&self, scope: &Scope, event: &EventRow) -> StoreResult<Recorded> {
        unimplemented!()
    }
    async fn claim_event(
        &self,
        scope: &Scope,
        event_id: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> StoreResult<Option<EventRow>> {
        unimplemented!()
    }
    async fn finish_event(
        &self,
        scope: &Scope,
        event_id: &str,
        now_ms: i64,
        finish: &Finish,
    ) -> StoreResult<bool> {
        unimplemented!()
    }
    async fn due_events(&self, scope: &Scope, now_ms: i64, limit: u32) -> StoreResult<Vec<String>> {
        unimplemented!()
    }
    async fn event(&self, scope: &Scope, event_id: &str) -> StoreResult<Option<EventRow>> {
        unimplemented!()
    }
    async fn events(
        &self,
        scope: &Scope,
        org_id: &str,
        endpoint_id: Option<&str>,
        status: Option<EventStatus>,
        before_ms: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<EventRow>> {
        unimplemented!()
    }
    async fn retry_event(&self, scope: &Scope, event_id: &str, now_ms: i64) -> StoreResult<bool> {
        unimplemented!()
    }
}
