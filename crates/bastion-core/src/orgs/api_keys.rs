//! API keys (SPEC R6): `bst_sk_…` service keys for an org's backend and `bst_pk_…`
//! publishable keys for clients. 256 random bits, shown once, stored as SHA-256 (a key is not
//! a password: its entropy makes a slow hash pointless), named, revocable, with a last-used
//! time. Whether a request may use one (browser origin, rate limit) is the API's to decide.

use bastion_store::{API_KEY_TOUCH_MS, ApiKeyRow, KeyKind};
use secrecy::{ExposeSecret, SecretString};

use super::service::{Caller, OrgError, Orgs, SYSTEM, clean_name, new_id};

const SERVICE_PREFIX: &str = "bst_sk_";
const PUBLISHABLE_PREFIX: &str = "bst_pk_";
/// Prefix plus the first four characters of the random part: enough to tell keys apart.
const HINT_CHARS: usize = 11;

/// An authenticated API key: the org it acts for and what kind it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyIdentity {
    pub key_id: String,
    pub org_id: String,
    pub kind: KeyKind,
}

/// A new key: its stored record and the key itself, which is never shown again.
pub struct IssuedKey {
    pub row: ApiKeyRow,
    pub key: SecretString,
}

fn prefix(kind: KeyKind) -> &'static str {
    match kind {
        KeyKind::Service => SERVICE_PREFIX,
        KeyKind::Publishable => PUBLISHABLE_PREFIX,
    }
}

/// Whether a bearer credential looks like an API key (rather than an access token).
pub fn is_api_key(token: &str) -> bool {
    token.starts_with(SERVICE_PREFIX) || token.starts_with(PUBLISHABLE_PREFIX)
}

impl Orgs {
    /// Creates a key for the org (`api_keys.create`) and returns it once.
    #[tracing::instrument(skip_all)]
    pub async fn create_api_key(
        &self,
        caller: &Caller,
        org_id: &str,
        kind: KeyKind,
        name: &str,
    ) -> Result<IssuedKey, OrgError> {
        let access = self.authorize(caller, org_id, "api_keys.create").await?;
        let name = clean_name(name, "the key name", 100)?;
        let key = crate::ids::secret_token(prefix(kind)).map_err(|_| OrgError::Random)?;
        let secret = key.expose_secret();
        let row = ApiKeyRow {
            id: new_id("key")?,
            org_id: org_id.to_owned(),
            kind,
            name,
            hint: secret.chars().take(HINT_CHARS).collect(),
            key_hash: bastion_crypto::sha256(secret.as_bytes()),
            created_by: caller.actor().to_owned(),
            created_ms: self.clock.now_ms(),
            last_used_ms: None,
            revoked_ms: None,
        };
        self.store.create_api_key(&access.scope, &row).await?;
        self.audit(
            &access,
            caller,
            "api_key.created",
            serde_json::json!({ "key": row.id, "kind": kind.as_str(), "name": row.name }),
        )
        .await;
        Ok(IssuedKey { row, key })
    }

    /// The org's keys, revoked ones included (`api_keys.read`).
    pub async fn api_keys(
        &self,
        caller: &Caller,
        org_id: &str,
    ) -> Result<Vec<ApiKeyRow>, OrgError> {
        let access = self.authorize(caller, org_id, "api_keys.read").await?;
        Ok(self.store.api_keys(&access.scope, org_id).await?)
    }

    /// Revokes a key; requests with it fail from then on.
    #[tracing::instrument(skip_all)]
    pub async fn revoke_api_key(
        &self,
        caller: &Caller,
        org_id: &str,
        key_id: &str,
    ) -> Result<(), OrgError> {
        let access = self.authorize(caller, org_id, "api_keys.revoke").await?;
        let now = self.clock.now_ms();
        if !self
            .store
            .revoke_api_key(&access.scope, org_id, key_id, now)
            .await?
        {
            return Err(OrgError::NotFound);
        }
        self.audit(
            &access,
            caller,
            "api_key.revoked",
            serde_json::json!({ "key": key_id }),
        )
        .await;
        Ok(())
    }

    /// Resolves a presented key to its org and kind; any failure is [`OrgError::InvalidKey`].
    pub async fn authenticate_key(&self, presented: &str) -> Result<KeyIdentity, OrgError> {
        let presented = presented.trim();
        let kind = if presented.starts_with(SERVICE_PREFIX) {
            KeyKind::Service
        } else if presented.starts_with(PUBLISHABLE_PREFIX) {
            KeyKind::Publishable
        } else {
            return Err(OrgError::InvalidKey);
        };
        // Shape first: a malformed key costs no database round trip.
        if presented.len() != prefix(kind).len() + 43 {
            return Err(OrgError::InvalidKey);
        }
        let hash = bastion_crypto::sha256(presented.as_bytes());
        let row = self
            .store
            .api_key_by_hash(&SYSTEM, &hash)
            .await?
            .filter(|k| k.revoked_ms.is_none() && k.kind == kind)
            .ok_or(OrgError::InvalidKey)?;
        let now = self.clock.now_ms();
        // The row just read says when use was last recorded: a busy key costs no write.
        let recorded = row
            .last_used_ms
            .is_some_and(|t| now.saturating_sub(t) < API_KEY_TOUCH_MS);
        if !recorded && let Err(e) = self.store.touch_api_key(&SYSTEM, &row.id, now).await {
            // Last-used is informational; the request itself is valid.
            tracing::warn!(error = %e, "could not record an API key's use");
        }
        Ok(KeyIdentity {
            key_id: row.id,
            org_id: row.org_id,
            kind,
        })
    }
}
