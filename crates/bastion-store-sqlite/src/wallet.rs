//! STUB: replaced by the wallet store implementation.
#![allow(unused_variables)]

use bastion_store::{LedgerEntry, Movement, Posted, Scope, StoreResult, WalletRow, WalletStore};

use crate::SqliteStore;

#[async_trait::async_trait]
impl WalletStore for SqliteStore {
    async fn create_wallet(&self, scope: &Scope, wallet: &WalletRow) -> StoreResult<()> {
        unimplemented!()
    }
    async fn wallet(&self, scope: &Scope, wallet_id: &str) -> StoreResult<Option<WalletRow>> {
        unimplemented!()
    }
    async fn wallets_of(
        &self,
        scope: &Scope,
        org_id: Option<&str>,
        user_id: Option<&str>,
    ) -> StoreResult<Vec<WalletRow>> {
        unimplemented!()
    }
    async fn set_credit_limit(
        &self,
        scope: &Scope,
        wallet_id: &str,
        credit_limit: i64,
        now_ms: i64,
    ) -> StoreResult<bool> {
        unimplemented!()
    }
    async fn post(
        &self,
        scope: &Scope,
        wallet_id: &str,
        expected_version: Option<i64>,
        movement: &Movement,
    ) -> StoreResult<Posted> {
        unimplemented!()
    }
    async fn entries(
        &self,
        scope: &Scope,
        wallet_id: &str,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<LedgerEntry>> {
        unimplemented!()
    }
    async fn ledger_sums(&self, scope: &Scope, wallet_id: &str) -> StoreResult<(i64, i64)> {
        unimplemented!()
    }
}
