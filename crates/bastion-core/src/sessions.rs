//! Per-device sessions, access tokens and rotating refresh tokens (SPEC A2, A3, A4).
//!
//! **Refresh tokens** are opaque (`bst_rt_` + 256 bits, base64url) and stored only as SHA-256
//! hashes. A token's successor is not random: it is HMAC-SHA256 of the presented token under
//! the `refresh` purpose key. So every caller presenting the same parent derives the same
//! successor, which lets Bastion answer a retry inside the grace window with *that* successor
//! without ever storing a token in plaintext.
//!
//! **Rotation** is one conditional update in the store (exactly one winner). A caller that
//! presents an already-used token is:
//! - inside the grace window: given the same successor, if that successor is still unused;
//! - a concurrent duplicate (it saw the token unused and lost the update, or arrived within the
//!   short race allowance after the use): refused, and the family lives on through the winner.
//!   This matters in strict mode (grace 0), where a client's duplicate request must not end
//!   its own session; the duplicate still gets nothing;
//! - anyone else: a replay. The whole session (token family) is revoked and audited.
//!
//! **Access tokens** are 15-minute JWTs carrying the session id. Validation checks the
//! signature and claims, then that the session is live; liveness is cached per session for a
//! few seconds and dropped locally the moment this node revokes the session, so a revocation
//! takes effect at once here and within the cache lifetime on other nodes.
//!
//! A token that verified once is remembered by its SHA-256 until it expires or the key ring
//! changes: a signature check is a pure function of the token's bytes and the keys, so only
//! the first presentation pays for RSA (the same idea as Envoy's JWT cache). Expiry is
//! re-checked on every use, and the liveness check above still runs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bastion_crypto::jwt::{JwtError, JwtVerifier};
use bastion_store::{Rotation, Scope, SessionRow, Store, StoreError};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::Clock;
use crate::audit::{AuditEvent, AuditLog, Category, Outcome};
use crate::keys::{KeyRing, SharedKeyRing};

const SCOPE: Scope = Scope::System("sessions");
const REFRESH_PREFIX: &str = "bst_rt_";

/// Lifetimes and the grace window.
#[derive(Debug, Clone)]
pub struct SessionPolicy {
    pub access_ttl_ms: i64,
    /// A session not refreshed for this long ends (SPEC A3: 7 days).
    pub idle_ttl_ms: i64,
    /// A session ends this long after it began, however active.
    pub absolute_ttl_ms: i64,
    /// How long the immediate parent of the current refresh token still yields it (0 = strict).
    pub grace_ms: i64,
    /// How soon after a token's use a second presentation counts as a concurrent duplicate
    /// (refused, no revocation) rather than a replay (family revoked).
    pub race_ms: i64,
    /// How long a node trusts its last look at a session's liveness.
    pub liveness_cache_ms: i64,
    pub issuer: String,
    pub audience: String,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        Self {
            access_ttl_ms: 15 * 60_000,
            idle_ttl_ms: 7 * 86_400_000,
            absolute_ttl_ms: 90 * 86_400_000,
            grace_ms: 10_000,
            race_ms: 2_000,
            liveness_cache_ms: 5_000,
            issuer: "bastion".into(),
            audience: "bastion".into(),
        }
    }
}

/// Where a session was started from.
#[derive(Debug, Clone, Default)]
pub struct Device {
    pub name: String,
    pub platform: String,
    pub ip: String,
    pub user_agent: String,
}

/// What a sign-in or a refresh hands the client.
#[derive(Debug)]
pub struct IssuedTokens {
    pub access_token: SecretString,
    pub refresh_token: SecretString,
    pub session_id: String,
    pub access_expires_in_secs: i64,
}

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub sid: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
    pub amr: Vec<String>,
}

/// Who an access token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: String,
    pub session_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("unknown refresh token")]
    UnknownToken,
    #[error("refresh token reuse detected; the session was revoked")]
    Reused,
    #[error("the refresh token was used by a concurrent request")]
    Raced,
    #[error("the session has ended")]
    Ended,
    #[error("invalid access token: {0}")]
    InvalidAccess(JwtError),
    #[error("session storage: {0}")]
    Store(#[from] StoreError),
    #[error("keys: {0}")]
    Keys(#[from] crate::keys::KeyError),
    #[error("crypto: {0}")]
    Crypto(#[from] bastion_crypto::CryptoError),
}

fn hash(token: &SecretString) -> [u8; 32] {
    bastion_crypto::sha256(token.expose_secret().as_bytes())
}

/// The verifier for one key ring, rebuilt only when the ring is swapped.
struct VerifierCache {
    ring: Arc<KeyRing>,
    verifier: Arc<JwtVerifier>,
}

/// Clock skew allowed on `exp` and `nbf`, in seconds.
const ACCESS_LEEWAY_SECS: i64 = 30;
/// Verified tokens remembered at most (a full cache first drops expired entries, then all).
const VERIFIED_CAPACITY: usize = 16_384;

/// What a verified token says, kept by the token's hash.
#[derive(Clone)]
struct Verified {
    sub: String,
    sid: String,
    exp: i64,
}

/// Tokens verified under one key ring; emptied when the ring is swapped.
struct VerifiedTokens {
    ring: Arc<KeyRing>,
    tokens: HashMap<[u8; 32], Verified>,
}

fn unix_now_secs() -> i64 {
    // Real time, as the JWT validation itself uses.
    crate::SystemClock.now_ms() / 1000
}

pub struct Sessions {
    store: Arc<dyn Store>,
    keys: Arc<SharedKeyRing>,
    audit: Arc<AuditLog>,
    clock: Arc<dyn Clock>,
    policy: SessionPolicy,
    verifier: Mutex<Option<VerifierCache>>,
    verified: Mutex<Option<VerifiedTokens>>,
    /// session id -> (live, checked at ms)
    liveness: Mutex<HashMap<String, (bool, i64)>>,
}

impl Sessions {
    pub fn new(
        store: Arc<dyn Store>,
        keys: Arc<SharedKeyRing>,
        audit: Arc<AuditLog>,
        clock: Arc<dyn Clock>,
        policy: SessionPolicy,
    ) -> Self {
        Self {
            store,
            keys,
            audit,
            clock,
            policy,
            verifier: Mutex::new(None),
            verified: Mutex::new(None),
            liveness: Mutex::new(HashMap::new()),
        }
    }

    fn successor(
        &self,
        ring: &KeyRing,
        presented: &SecretString,
    ) -> Result<SecretString, SessionError> {
        let tag = hmac::sign(ring.refresh_key()?, presented.expose_secret().as_bytes());
        Ok(SecretString::from(format!(
            "{REFRESH_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(tag.as_ref())
        )))
    }

    fn access_token(
        &self,
        ring: &KeyRing,
        user_id: &str,
        session_id: &str,
        now_ms: i64,
    ) -> Result<(SecretString, i64), SessionError> {
        let iat = now_ms / 1000;
        let ttl = self.policy.access_ttl_ms / 1000;
        let claims = AccessClaims {
            iss: self.policy.issuer.clone(),
            aud: self.policy.audience.clone(),
            sub: user_id.to_owned(),
            sid: session_id.to_owned(),
            iat,
            nbf: iat,
            exp: iat + ttl,
            jti: crate::ids::new_id("jti")?,
            amr: vec!["pwd".into()],
        };
        Ok((SecretString::from(ring.token_signer()?.sign(&claims)?), ttl))
    }

    /// Opens a session for `user_id` on `device` and issues its first tokens.
    pub async fn start(
        &self,
        user_id: &str,
        device: &Device,
    ) -> Result<IssuedTokens, SessionError> {
        let ring = self.keys.current();
        let now = self.clock.now_ms();
        let refresh = crate::ids::secret_token(REFRESH_PREFIX)?;
        let row = SessionRow {
            id: crate::ids::new_id("ses")?,
            user_id: user_id.to_owned(),
            device_name: device.name.clone(),
            platform: device.platform.clone(),
            ip: device.ip.clone(),
            user_agent: device.user_agent.clone(),
            created_ms: now,
            last_seen_ms: now,
            idle_expires_ms: now + self.policy.idle_ttl_ms,
            absolute_expires_ms: now + self.policy.absolute_ttl_ms,
            revoked_ms: None,
            revoked_reason: None,
        };
        self.store
            .create_session(&SCOPE, &row, &hash(&refresh))
            .await?;
        let (access, ttl) = self.access_token(&ring, user_id, &row.id, now)?;
        Ok(IssuedTokens {
            access_token: access,
            refresh_token: refresh,
            session_id: row.id,
            access_expires_in_secs: ttl,
        })
    }

    /// Rotates `presented` (see the module documentation for the rules).
    #[tracing::instrument(skip_all)]
    pub async fn refresh(&self, presented: &SecretString) -> Result<IssuedTokens, SessionError> {
        if !presented.expose_secret().starts_with(REFRESH_PREFIX) {
            return Err(SessionError::UnknownToken);
        }
        let ring = self.keys.current();
        let now = self.clock.now_ms();
        let old = hash(presented);
        let Some(mut row) = self.store.find_refresh(&SCOPE, &old).await? else {
            return Err(SessionError::UnknownToken);
        };
        let next = self.successor(&ring, presented)?;
        let mut saw_unused = false;
        if row.used_ms.is_none() {
            saw_unused = true;
            match self
                .store
                .rotate_refresh(
                    &SCOPE,
                    &old,
                    &hash(&next),
                    now,
                    now + self.policy.idle_ttl_ms,
                )
                .await?
            {
                Rotation::Rotated => {
                    self.record(
                        AuditEvent::new(
                            Category::Authentication,
                            "token.refreshed",
                            Outcome::Success,
                        )
                        .actor(row.user_id.clone())
                        .details(serde_json::json!({
                            "session": row.session_id,
                            "generation": row.generation + 1,
                        })),
                    )
                    .await;
                    return self.issue(&ring, &row.user_id, &row.session_id, next, now);
                }
                Rotation::SessionEnded => return Err(SessionError::Ended),
                Rotation::AlreadyUsed => {
                    row = self
                        .store
                        .find_refresh(&SCOPE, &old)
                        .await?
                        .ok_or(SessionError::UnknownToken)?;
                }
            }
        }
        let used_ms = row.used_ms.unwrap_or(now);
        if self.policy.grace_ms > 0 && now - used_ms <= self.policy.grace_ms {
            let child = self.store.find_refresh(&SCOPE, &hash(&next)).await?;
            if child.is_some_and(|c| c.used_ms.is_none()) {
                let live = self
                    .store
                    .session(&SCOPE, &row.session_id)
                    .await?
                    .is_some_and(|s| is_live(&s, now));
                if !live {
                    return Err(SessionError::Ended);
                }
                return self.issue(&ring, &row.user_id, &row.session_id, next, now);
            }
        }
        if saw_unused || now - used_ms <= self.policy.race_ms {
            return Err(SessionError::Raced);
        }
        // A token used before, outside the window: it was copied. End the whole family.
        self.revoke(&row.session_id, "refresh_reuse").await?;
        self.record(
            AuditEvent::new(
                Category::Authentication,
                "refresh.reuse_detected",
                Outcome::Denied,
            )
            .actor(row.user_id.clone())
            .details(
                serde_json::json!({ "session": row.session_id, "generation": row.generation }),
            ),
        )
        .await;
        Err(SessionError::Reused)
    }

    async fn record(&self, ev: AuditEvent) {
        // The change already happened; a failed audit write is logged, not turned into a 500
        // that would cost the client its new tokens.
        if let Err(e) = self.audit.record(ev).await {
            tracing::error!(error = %e, "audit write failed");
        }
    }

    fn issue(
        &self,
        ring: &KeyRing,
        user_id: &str,
        session_id: &str,
        refresh: SecretString,
        now: i64,
    ) -> Result<IssuedTokens, SessionError> {
        let (access, ttl) = self.access_token(ring, user_id, session_id, now)?;
        Ok(IssuedTokens {
            access_token: access,
            refresh_token: refresh,
            session_id: session_id.to_owned(),
            access_expires_in_secs: ttl,
        })
    }

    /// Revokes a session (its whole token family), forgets its cached liveness here, and
    /// audits it.
    pub async fn revoke(&self, session_id: &str, reason: &str) -> Result<bool, SessionError> {
        let done = self
            .store
            .revoke_session(&SCOPE, session_id, self.clock.now_ms(), reason)
            .await?;
        if let Ok(mut cache) = self.liveness.lock() {
            cache.insert(session_id.to_owned(), (false, self.clock.now_ms()));
        }
        if done {
            self.record(
                AuditEvent::new(
                    Category::Authentication,
                    "session.revoked",
                    Outcome::Success,
                )
                .details(serde_json::json!({ "session": session_id, "reason": reason })),
            )
            .await;
        }
        Ok(done)
    }

    /// The user's sessions, newest first (read in the user's own scope).
    pub async fn list(&self, user_id: &str) -> Result<Vec<SessionRow>, SessionError> {
        let scope = Scope::User {
            user_id: user_id.to_owned(),
            org_id: None,
        };
        Ok(self.store.sessions_of(&scope, user_id).await?)
    }

    /// Revokes one of the user's own sessions; `false` if it is not theirs or already ended.
    pub async fn revoke_own(
        &self,
        user_id: &str,
        session_id: &str,
        reason: &str,
    ) -> Result<bool, SessionError> {
        let scope = Scope::User {
            user_id: user_id.to_owned(),
            org_id: None,
        };
        let done = self
            .store
            .revoke_session(&scope, session_id, self.clock.now_ms(), reason)
            .await?;
        if done && let Ok(mut cache) = self.liveness.lock() {
            cache.insert(session_id.to_owned(), (false, self.clock.now_ms()));
        }
        if done {
            let action = if reason == "logout" {
                "logout"
            } else {
                "session.revoked"
            };
            self.record(
                AuditEvent::new(Category::Authentication, action, Outcome::Success)
                    .actor(user_id.to_owned())
                    .details(serde_json::json!({ "session": session_id, "reason": reason })),
            )
            .await;
        }
        Ok(done)
    }

    fn verifier(&self) -> Result<Arc<JwtVerifier>, SessionError> {
        let ring = self.keys.current();
        let mut slot = self
            .verifier
            .lock()
            .map_err(|_| StoreError::Database("verifier cache poisoned".into()))?;
        if let Some(c) = slot.as_ref().filter(|c| Arc::ptr_eq(&c.ring, &ring)) {
            return Ok(c.verifier.clone());
        }
        // Every token key in the ring verifies, however old: expiry bounds what they accept.
        let jwks = ring.token_jwks(self.clock.now_ms(), i64::MAX);
        let verifier = Arc::new(JwtVerifier::new(
            &jwks,
            &self.policy.issuer,
            &self.policy.audience,
            ACCESS_LEEWAY_SECS.unsigned_abs(),
        )?);
        *slot = Some(VerifierCache {
            ring,
            verifier: verifier.clone(),
        });
        Ok(verifier)
    }

    /// Validates an access token and its session's liveness.
    pub async fn authenticate(&self, access_token: &str) -> Result<Principal, SessionError> {
        let claims = self.verified(access_token)?;
        let now = self.clock.now_ms();
        let cached = self
            .liveness
            .lock()
            .ok()
            .and_then(|c| c.get(&claims.sid).copied());
        let live = match cached {
            Some((live, at)) if now - at < self.policy.liveness_cache_ms => live,
            _ => {
                let live = self
                    .store
                    .session(&SCOPE, &claims.sid)
                    .await?
                    .is_some_and(|s| is_live(&s, now) && s.user_id == claims.sub);
                if let Ok(mut c) = self.liveness.lock() {
                    // Bounded: entries older than the cache lifetime are useless, drop them.
                    if c.len() > 100_000 {
                        c.retain(|_, (_, at)| now - *at < self.policy.liveness_cache_ms);
                    }
                    c.insert(claims.sid.clone(), (live, now));
                }
                live
            }
        };
        if !live {
            return Err(SessionError::Ended);
        }
        Ok(Principal {
            user_id: claims.sub,
            session_id: claims.sid,
        })
    }

    /// The token's claims: from the verified-token cache, or by full validation.
    fn verified(&self, token: &str) -> Result<Verified, SessionError> {
        let ring = self.keys.current();
        let key = bastion_crypto::sha256(token.as_bytes());
        let now_s = unix_now_secs();
        if let Ok(cache) = self.verified.lock()
            && let Some(c) = cache.as_ref().filter(|c| Arc::ptr_eq(&c.ring, &ring))
            && let Some(v) = c.tokens.get(&key)
            && now_s <= v.exp + ACCESS_LEEWAY_SECS
        {
            return Ok(v.clone());
        }
        let claims: AccessClaims = self
            .verifier()?
            .verify(token)
            .map_err(SessionError::InvalidAccess)?;
        let v = Verified {
            sub: claims.sub,
            sid: claims.sid,
            exp: claims.exp,
        };
        if let Ok(mut cache) = self.verified.lock() {
            let c = match cache.take() {
                Some(c) if Arc::ptr_eq(&c.ring, &ring) => cache.insert(c),
                _ => cache.insert(VerifiedTokens {
                    ring,
                    tokens: HashMap::new(),
                }),
            };
            if c.tokens.len() >= VERIFIED_CAPACITY {
                c.tokens.retain(|_, t| now_s <= t.exp + ACCESS_LEEWAY_SECS);
                if c.tokens.len() >= VERIFIED_CAPACITY {
                    c.tokens.clear();
                }
            }
            c.tokens.insert(key, v.clone());
        }
        Ok(v)
    }
}

fn is_live(s: &SessionRow, now: i64) -> bool {
    s.revoked_ms.is_none() && s.idle_expires_ms > now && s.absolute_expires_ms > now
}
