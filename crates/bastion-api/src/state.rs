use std::sync::Arc;

use bastion_core::accounts::Accounts;
use bastion_core::idempotency::Idempotency;
use bastion_core::keys::SharedKeyRing;
use bastion_core::licenses::Licensing;
use bastion_core::orgs::Orgs;
use bastion_core::payments::Payments;
use bastion_core::sessions::Sessions;
use bastion_core::vault::secrets::Secrets;
use bastion_core::wallet::Wallets;
use bastion_core::webhooks::Webhooks;
use bastion_store::Store;

use crate::middleware::rate_limit::ApiKeyRateLimit;

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    /// The rendered security.txt, or `None` when no contact is configured.
    pub security_txt: Option<Arc<str>>,
    /// The key ring (token-signing keys for the JWKS).
    pub keys: Arc<SharedKeyRing>,
    /// How long a superseded token key stays published, in milliseconds.
    pub jwks_overlap_ms: i64,
    pub accounts: Arc<Accounts>,
    pub sessions: Arc<Sessions>,
    pub orgs: Arc<Orgs>,
    pub secrets: Arc<Secrets>,
    pub licensing: Arc<Licensing>,
    pub webhooks: Arc<Webhooks>,
    pub wallets: Arc<Wallets>,
    pub payments: Arc<Payments>,
    pub idempotency: Arc<Idempotency>,
    /// The per-API-key limiter; `None` when configured off.
    pub key_limit: Option<Arc<ApiKeyRateLimit>>,
}
