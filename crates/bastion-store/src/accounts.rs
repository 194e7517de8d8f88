//! Accounts, per-device sessions and their refresh-token families (SPEC A1, A3, A4).

use crate::{Scope, StoreResult};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub id: String,
    /// Normalised by the domain before it gets here (`bastion_core::accounts::normalize_email`:
    /// one form per mailbox); rows from an older rule are rewritten at start-up.
    pub email: String,
    pub email_verified_ms: Option<i64>,
    pub password_hash: Option<String>,
    /// Platform administrator (set only from the CLI).
    pub super_admin: bool,
    pub created_ms: i64,
    pub updated_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub id: String,
    pub user_id: String,
    pub device_name: String,
    pub platform: String,
    pub ip: String,
    pub user_agent: String,
    pub created_ms: i64,
    pub last_seen_ms: i64,
    pub idle_expires_ms: i64,
    pub absolute_expires_ms: i64,
    pub revoked_ms: Option<i64>,
    pub revoked_reason: Option<String>,
}

/// A refresh token's record: only its hash is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRow {
    pub session_id: String,
    pub user_id: String,
    pub generation: i64,
    pub issued_ms: i64,
    pub used_ms: Option<i64>,
}

/// The outcome of one conditional rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// This call consumed the token and stored its successor.
    Rotated,
    /// The token had already been consumed (by a concurrent call or earlier).
    AlreadyUsed,
    /// The session is revoked or expired; nothing changed.
    SessionEnded,
}

#[async_trait::async_trait]
pub trait AccountStore {
    /// `Conflict` when the email is taken.
    async fn create_user(&self, scope: &Scope, user: &UserRow) -> StoreResult<()>;
    async fn user_by_email(&self, scope: &Scope, email: &str) -> StoreResult<Option<UserRow>>;
    async fn user_by_id(&self, scope: &Scope, id: &str) -> StoreResult<Option<UserRow>>;
    async fn set_password_hash(
        &self,
        scope: &Scope,
        user_id: &str,
        hash: &str,
        now_ms: i64,
    ) -> StoreResult<()>;
    /// Records that the user proved control of their email; idempotent.
    async fn mark_email_verified(
        &self,
        scope: &Scope,
        user_id: &str,
        now_ms: i64,
    ) -> StoreResult<()>;
    /// At most `limit` users in id order, starting after `after_id` (from the first when
    /// `None`). A system path: the start-up pass over stored addresses.
    async fn users_page(
        &self,
        scope: &Scope,
        after_id: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<UserRow>>;
    /// Changes the user's email from `from` to `to`, with the copy their memberships hold, in
    /// one transaction and only while it still reads `from`: `false` when it does not (changed
    /// meanwhile, or no such user). `Conflict` when another account holds `to`. A system path.
    async fn set_email(
        &self,
        scope: &Scope,
        user_id: &str,
        from: &str,
        to: &str,
        now_ms: i64,
    ) -> StoreResult<bool>;
}

#[async_trait::async_trait]
pub trait SessionStore {
    /// Creates the session and its first refresh token (generation 1), atomically.
    async fn create_session(
        &self,
        scope: &Scope,
        session: &SessionRow,
        first_token_hash: &[u8; 32],
    ) -> StoreResult<()>;
    async fn session(&self, scope: &Scope, id: &str) -> StoreResult<Option<SessionRow>>;
    /// The user's sessions, newest first.
    async fn sessions_of(&self, scope: &Scope, user_id: &str) -> StoreResult<Vec<SessionRow>>;
    async fn find_refresh(
        &self,
        scope: &Scope,
        token_hash: &[u8; 32],
    ) -> StoreResult<Option<RefreshRow>>;
    /// Consumes `old` and stores `new` as the next generation, extending the session's idle
    /// expiry, in one transaction whose first step is a conditional update: of any number of
    /// concurrent calls with the same `old`, exactly one gets [`Rotation::Rotated`].
    async fn rotate_refresh(
        &self,
        scope: &Scope,
        old: &[u8; 32],
        new: &[u8; 32],
        now_ms: i64,
        idle_expires_ms: i64,
    ) -> StoreResult<Rotation>;
    /// Revokes a session (its whole token family); `false` if it was already revoked or absent.
    async fn revoke_session(
        &self,
        scope: &Scope,
        session_id: &str,
        now_ms: i64,
        reason: &str,
    ) -> StoreResult<bool>;
}
