//! What an org configures: endpoints per provider, each with one or more signing secrets sealed
//! by the vault (several live during a rotation), and the admin view of the inbox.

use bastion_store::{EndpointRow, EndpointSecretRow, EventRow, EventStatus, Scope};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::signature::{DEFAULT_TOLERANCE_SECS, Encoding, Scheme, WebhookSecret};
use super::{WebhookError as E, Webhooks};
use crate::audit::{AuditEvent, Category, Outcome};
use crate::ids::new_id;
use crate::orgs::Caller;
use crate::vault::Field;
use bastion_store::SealedColumn;

const MAX_NAME_CHARS: usize = 100;
const MAX_SECRET_LEN: usize = 1024;
/// A rotation keeps the old secret verifying this long by default (24 h), at most 30 days.
pub const DEFAULT_OVERLAP_SECS: i64 = 86_400;
const MAX_OVERLAP_SECS: i64 = 30 * 86_400;

/// The providers an endpoint may verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    Stripe,
    Github,
    Slack,
    Standard,
    Twilio,
    Generic,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stripe => "stripe",
            Self::Github => "github",
            Self::Slack => "slack",
            Self::Standard => "standard",
            Self::Twilio => "twilio",
            Self::Generic => "generic",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Stripe,
            Self::Github,
            Self::Slack,
            Self::Standard,
            Self::Twilio,
            Self::Generic,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }
}

/// What a verified event of the endpoint triggers beyond being stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Handler {
    /// Stored and acknowledged; the team's backend reads the inbox.
    #[default]
    Inbox,
    /// Stripe payments: checkout completed → license or wallet credit; refund → reversal.
    Payments,
}

/// The scheme settings stored with an endpoint (its `config` JSON).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// Seconds a signed timestamp may be off either way (300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance_secs: Option<i64>,
    /// Twilio: the public URL Twilio calls, exactly as configured there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// Generic: the signature header, its encoding (`hex` or `base64`) and prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default)]
    pub handler: Handler,
}

impl EndpointConfig {
    pub fn tolerance(&self) -> i64 {
        self.tolerance_secs.unwrap_or(DEFAULT_TOLERANCE_SECS)
    }

    /// The verification scheme of `provider` with these settings.
    pub fn scheme(&self, provider: Provider) -> Result<Scheme, E> {
        Ok(match provider {
            Provider::Stripe => Scheme::Stripe,
            Provider::Github => Scheme::GitHub,
            Provider::Slack => Scheme::Slack,
            Provider::Standard => Scheme::StandardWebhooks,
            Provider::Twilio => {
                let url = self.public_url.clone().unwrap_or_default();
                if !(url.starts_with("https://") || url.starts_with("http://")) || url.len() > 2048
                {
                    return Err(E::Invalid(
                        "twilio endpoints need config.public_url: the URL configured in Twilio"
                            .into(),
                    ));
                }
                Scheme::Twilio { public_url: url }
            }
            Provider::Generic => {
                let header = self.header.clone().unwrap_or_default().to_ascii_lowercase();
                let token = !header.is_empty()
                    && header.len() <= 100
                    && header
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if !token {
                    return Err(E::Invalid(
                        "generic endpoints need config.header: the signature header's name".into(),
                    ));
                }
                let encoding = match self.encoding.as_deref().unwrap_or("hex") {
                    "hex" => Encoding::Hex,
                    "base64" => Encoding::Base64,
                    _ => return Err(E::Invalid("config.encoding is hex or base64".into())),
                };
                let prefix = self.prefix.clone().unwrap_or_default();
                if prefix.len() > 32 || prefix.chars().any(char::is_control) {
                    return Err(E::Invalid("config.prefix is at most 32 characters".into()));
                }
                Scheme::Generic {
                    header,
                    encoding,
                    prefix,
                }
            }
        })
    }

    fn check(&self, provider: Provider) -> Result<(), E> {
        if let Some(t) = self.tolerance_secs
            && !(30..=3600).contains(&t)
        {
            return Err(E::Invalid("config.tolerance_secs is 30 to 3600".into()));
        }
        if self.handler == Handler::Payments && provider != Provider::Stripe {
            return Err(E::Invalid(
                "the payments handler takes Stripe events only".into(),
            ));
        }
        self.scheme(provider).map(drop)
    }
}

/// A new endpoint as an administrator describes it.
#[derive(Debug)]
pub struct EndpointInput {
    pub name: String,
    pub provider: Provider,
    pub config: EndpointConfig,
    /// The signing secret(s) the provider gave (Stripe's `whsec_…`, GitHub's, …).
    pub secrets: Vec<SecretString>,
}

fn check_name(name: &str) -> Result<String, E> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > MAX_NAME_CHARS || n.chars().any(char::is_control) {
        return Err(E::Invalid(format!(
            "name is 1 to {MAX_NAME_CHARS} characters"
        )));
    }
    Ok(n.to_owned())
}

impl Webhooks {
    async fn authorize(&self, caller: &Caller, org_id: &str, permission: &str) -> Result<Scope, E> {
        Ok(self.orgs.authorize(caller, org_id, permission).await?.scope)
    }

    async fn audit_admin(
        &self,
        caller: &Caller,
        org_id: &str,
        action: &str,
        details: serde_json::Value,
    ) {
        self.record(
            AuditEvent::new(Category::Admin, action, Outcome::Success)
                .actor(caller.actor().to_owned())
                .org(org_id.to_owned())
                .details(details),
        )
        .await;
    }

    /// Seals one provider secret for a new secret row, after checking it parses for `scheme`.
    async fn seal_secret(
        &self,
        scheme: &Scheme,
        endpoint_id: &str,
        org_id: &str,
        secret: &SecretString,
    ) -> Result<EndpointSecretRow, E> {
        let text = secret.expose_secret().trim();
        if text.len() > MAX_SECRET_LEN {
            return Err(E::Invalid(format!(
                "a secret is at most {MAX_SECRET_LEN} bytes"
            )));
        }
        WebhookSecret::parse(scheme, text)
            .and_then(|s| s.check_strength())
            .map_err(|e| E::Invalid(e.to_string()))?;
        let id = new_id("whs").map_err(|_| E::Random)?;
        let sealed = self
            .vault
            .seal(
                &Field::of(SealedColumn::WebhookSecret, &id),
                text.as_bytes(),
            )
            .await?;
        Ok(EndpointSecretRow {
            id,
            endpoint_id: endpoint_id.to_owned(),
            org_id: org_id.to_owned(),
            secret_key: sealed.key_id,
            secret: sealed.envelope,
            created_ms: self.clock.now_ms(),
            expires_ms: None,
        })
    }

    /// Adds an endpoint (`webhooks.manage`).
    pub async fn create_endpoint(
        &self,
        caller: &Caller,
        org_id: &str,
        input: EndpointInput,
    ) -> Result<EndpointRow, E> {
        let scope = self.authorize(caller, org_id, "webhooks.manage").await?;
        let name = check_name(&input.name)?;
        input.config.check(input.provider)?;
        if input.secrets.is_empty() || input.secrets.len() > 5 {
            return Err(E::Invalid("give 1 to 5 signing secrets".into()));
        }
        let scheme = input.config.scheme(input.provider)?;
        let id = new_id("whe").map_err(|_| E::Random)?;
        let mut secrets = Vec::with_capacity(input.secrets.len());
        for s in &input.secrets {
            secrets.push(self.seal_secret(&scheme, &id, org_id, s).await?);
        }
        let row = EndpointRow {
            id,
            org_id: org_id.to_owned(),
            provider: input.provider.as_str().to_owned(),
            name,
            config: serde_json::to_string(&input.config)
                .map_err(|_| E::Invalid("config".into()))?,
            created_ms: self.clock.now_ms(),
            created_by: caller.actor().to_owned(),
            disabled_ms: None,
        };
        self.store.insert_endpoint(&scope, &row, &secrets).await?;
        self.audit_admin(
            caller,
            org_id,
            "webhook.endpoint.create",
            serde_json::json!({
                "endpoint_id": row.id, "provider": row.provider, "secrets": secrets.len(),
            }),
        )
        .await;
        Ok(row)
    }

    pub async fn endpoints(&self, caller: &Caller, org_id: &str) -> Result<Vec<EndpointRow>, E> {
        let scope = self.authorize(caller, org_id, "webhooks.read").await?;
        Ok(self.store.endpoints(&scope, org_id).await?)
    }

    /// The endpoint, only if it is of `org_id`.
    async fn endpoint_in(
        &self,
        scope: &Scope,
        org_id: &str,
        endpoint_id: &str,
    ) -> Result<EndpointRow, E> {
        match self.store.endpoint(scope, endpoint_id).await? {
            Some(e) if e.org_id == org_id => Ok(e),
            _ => Err(E::NotFound),
        }
    }

    pub async fn delete_endpoint(
        &self,
        caller: &Caller,
        org_id: &str,
        endpoint_id: &str,
    ) -> Result<(), E> {
        let scope = self.authorize(caller, org_id, "webhooks.manage").await?;
        self.endpoint_in(&scope, org_id, endpoint_id).await?;
        if !self.store.delete_endpoint(&scope, endpoint_id).await? {
            return Err(E::NotFound);
        }
        self.audit_admin(
            caller,
            org_id,
            "webhook.endpoint.delete",
            serde_json::json!({
                "endpoint_id": endpoint_id,
            }),
        )
        .await;
        Ok(())
    }

    /// Adds a new secret; the older ones keep verifying for `overlap_secs` (a rotation).
    pub async fn rotate_secret(
        &self,
        caller: &Caller,
        org_id: &str,
        endpoint_id: &str,
        secret: &SecretString,
        overlap_secs: Option<i64>,
    ) -> Result<i64, E> {
        let scope = self.authorize(caller, org_id, "webhooks.manage").await?;
        let overlap = overlap_secs.unwrap_or(DEFAULT_OVERLAP_SECS);
        if !(0..=MAX_OVERLAP_SECS).contains(&overlap) {
            return Err(E::Invalid(format!(
                "overlap_secs is 0 to {MAX_OVERLAP_SECS}"
            )));
        }
        let endpoint = self.endpoint_in(&scope, org_id, endpoint_id).await?;
        let (provider, config) = parse_endpoint(&endpoint)?;
        let scheme = config.scheme(provider)?;
        let row = self
            .seal_secret(&scheme, endpoint_id, org_id, secret)
            .await?;
        let until = self.clock.now_ms().saturating_add(overlap * 1000);
        self.store.rotate_secret(&scope, &row, until).await?;
        self.audit_admin(
            caller,
            org_id,
            "webhook.secret.rotate",
            serde_json::json!({
                "endpoint_id": endpoint_id, "old_secrets_expire_ms": until,
            }),
        )
        .await;
        Ok(until)
    }

    /// The org's events, newest first (`webhooks.read`).
    #[allow(clippy::too_many_arguments)]
    pub async fn events(
        &self,
        caller: &Caller,
        org_id: &str,
        endpoint_id: Option<&str>,
        status: Option<EventStatus>,
        before_ms: Option<i64>,
        limit: u32,
    ) -> Result<Vec<EventRow>, E> {
        let scope = self.authorize(caller, org_id, "webhooks.read").await?;
        Ok(self
            .store
            .events(
                &scope,
                org_id,
                endpoint_id,
                status,
                before_ms,
                limit.clamp(1, 200),
            )
            .await?)
    }

    pub async fn event(
        &self,
        caller: &Caller,
        org_id: &str,
        event_id: &str,
    ) -> Result<EventRow, E> {
        let scope = self.authorize(caller, org_id, "webhooks.read").await?;
        match self.store.event(&scope, event_id).await? {
            Some(e) if e.org_id == org_id => Ok(e),
            _ => Err(E::NotFound),
        }
    }

    /// Queues a failed or dead event again (`webhooks.manage`) and runs it now.
    pub async fn retry(
        &self,
        caller: &Caller,
        org_id: &str,
        event_id: &str,
    ) -> Result<EventRow, E> {
        let scope = self.authorize(caller, org_id, "webhooks.manage").await?;
        match self.store.event(&scope, event_id).await? {
            Some(e) if e.org_id == org_id => {}
            _ => return Err(E::NotFound),
        }
        if !self
            .store
            .retry_event(&scope, event_id, self.clock.now_ms())
            .await?
        {
            return Err(E::NotRetryable);
        }
        self.audit_admin(
            caller,
            org_id,
            "webhook.event.retry",
            serde_json::json!({
                "event_id": event_id,
            }),
        )
        .await;
        self.process(event_id).await?;
        self.store
            .event(&super::SYSTEM, event_id)
            .await?
            .ok_or(E::NotFound)
    }
}

/// The provider and settings stored with an endpoint.
pub(super) fn parse_endpoint(endpoint: &EndpointRow) -> Result<(Provider, EndpointConfig), E> {
    let provider = Provider::parse(&endpoint.provider)
        .ok_or_else(|| E::Corrupt("endpoint provider".into()))?;
    let config: EndpointConfig =
        serde_json::from_str(&endpoint.config).map_err(|_| E::Corrupt("endpoint config".into()))?;
    Ok((provider, config))
}
