//! Organizations, memberships, invitations, API keys and user-private data (SPEC R1–R6).
//!
//! Every call is scoped. On PostgreSQL the policies of migration 0006 decide what a scope may
//! see and change (including the permission and level rules); on SQLite the queries apply the
//! tenant boundary — a user scope reaches only orgs it is a member of, a key scope only its own
//! org while the key is live — and bastion-core makes the permission decision.

use crate::{KeyKind, Scope, StoreResult};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgRow {
    pub id: String,
    pub name: String,
    pub created_by: String,
    pub created_ms: i64,
    pub updated_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRow {
    pub org_id: String,
    pub user_id: String,
    pub email: String,
    /// 20, 30, 40, 60, 80 or 100.
    pub level: i32,
    pub created_ms: i64,
    pub updated_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvitationRow {
    pub id: String,
    pub org_id: String,
    pub email: String,
    pub level: i32,
    pub invited_by: String,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub accepted_ms: Option<i64>,
    pub accepted_by: Option<String>,
}

/// An API key as stored: the SHA-256 of the key, never the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRow {
    pub id: String,
    pub org_id: String,
    pub kind: KeyKind,
    pub name: String,
    /// The key's first characters (`bst_sk_AbCd`), to tell keys apart in a list.
    pub hint: String,
    pub key_hash: [u8; 32],
    pub created_by: String,
    pub created_ms: i64,
    pub last_used_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
}

/// One row of user-private data (R5): only its user ever reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityRow {
    pub id: String,
    pub user_id: String,
    pub org_id: Option<String>,
    pub ts_ms: i64,
    pub kind: String,
    pub data: String,
}

/// The outcome of a conditional membership change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberChange {
    Changed,
    /// No such member at the expected level (absent, changed meanwhile, or out of scope).
    NotFound,
    /// The change would leave the organization without a Super Admin.
    LastSuperAdmin,
}

/// How long a key's last-used time may lag, so a busy key is not a write per request.
pub const API_KEY_TOUCH_MS: i64 = 60_000;

#[async_trait::async_trait]
pub trait OrgStore {
    /// Creates `org` and its creator's Super Admin membership in one transaction. The scope
    /// must be the creator (`org.created_by == creator.user_id`, `creator.level == 100`).
    async fn create_org(&self, scope: &Scope, org: &OrgRow, creator: &MemberRow)
    -> StoreResult<()>;
    /// The org, if the scope may see it (a member, or one of its live keys).
    async fn org(&self, scope: &Scope, org_id: &str) -> StoreResult<Option<OrgRow>>;
    /// The scope's user's orgs with their level, oldest membership first.
    async fn orgs_of(&self, scope: &Scope, user_id: &str) -> StoreResult<Vec<(OrgRow, i32)>>;
    /// `false` when the org is not there for this scope.
    async fn rename_org(
        &self,
        scope: &Scope,
        org_id: &str,
        name: &str,
        now_ms: i64,
    ) -> StoreResult<bool>;
    /// Deletes the org with its memberships, invitations and keys; `false` if not there.
    async fn delete_org(&self, scope: &Scope, org_id: &str) -> StoreResult<bool>;

    async fn membership(
        &self,
        scope: &Scope,
        org_id: &str,
        user_id: &str,
    ) -> StoreResult<Option<MemberRow>>;
    /// The org's members, highest level first.
    async fn members(&self, scope: &Scope, org_id: &str) -> StoreResult<Vec<MemberRow>>;
    /// Moves a member from `expected` to `to` (`None`: removes them) in one conditional
    /// statement, refusing to leave the org without a Super Admin, whoever asks and however
    /// many ask at once.
    async fn change_member(
        &self,
        scope: &Scope,
        org_id: &str,
        user_id: &str,
        expected: i32,
        to: Option<i32>,
        now_ms: i64,
    ) -> StoreResult<MemberChange>;

    /// Stores an invitation, replacing any pending one for the same org and email.
    async fn create_invitation(&self, scope: &Scope, inv: &InvitationRow) -> StoreResult<()> {
        self.replace_invitation(scope, inv, i32::MAX)
            .await
            .map(drop)
    }
    /// Stores an invitation, withdrawing the pending ones for the same org and email whose level
    /// is at most `replaceable_up_to` (the highest level the inviter may grant: a replacement
    /// must not withdraw what its author could not). Returns the ids withdrawn.
    async fn replace_invitation(
        &self,
        scope: &Scope,
        inv: &InvitationRow,
        replaceable_up_to: i32,
    ) -> StoreResult<Vec<String>>;
    /// The org's invitations, newest first.
    async fn invitations(&self, scope: &Scope, org_id: &str) -> StoreResult<Vec<InvitationRow>>;
    /// Deletes a pending invitation; `false` if absent, accepted or out of scope.
    async fn revoke_invitation(&self, scope: &Scope, org_id: &str, id: &str) -> StoreResult<bool>;
    /// System path: an invitation by id (its link has just been consumed).
    async fn invitation(&self, scope: &Scope, id: &str) -> StoreResult<Option<InvitationRow>>;
    /// System path: marks the invitation accepted (it must be pending and unexpired at
    /// `now_ms`) and adds `member`, in one transaction. `false` when it was not pending;
    /// `Conflict` when the user is already a member.
    async fn accept_invitation(
        &self,
        scope: &Scope,
        id: &str,
        member: &MemberRow,
        now_ms: i64,
    ) -> StoreResult<bool>;

    async fn create_api_key(&self, scope: &Scope, key: &ApiKeyRow) -> StoreResult<()>;
    /// The org's keys (revoked ones too), newest first.
    async fn api_keys(&self, scope: &Scope, org_id: &str) -> StoreResult<Vec<ApiKeyRow>>;
    /// `false` when absent, already revoked or out of scope.
    async fn revoke_api_key(
        &self,
        scope: &Scope,
        org_id: &str,
        id: &str,
        now_ms: i64,
    ) -> StoreResult<bool>;
    /// System path: the key with this hash, revoked or not.
    async fn api_key_by_hash(
        &self,
        scope: &Scope,
        key_hash: &[u8; 32],
    ) -> StoreResult<Option<ApiKeyRow>>;
    /// System path: records use at `now_ms`, unless recorded less than [`API_KEY_TOUCH_MS`] ago.
    async fn touch_api_key(&self, scope: &Scope, id: &str, now_ms: i64) -> StoreResult<()>;

    /// System path: replaces the stored level → permission map (effective sets; level 0 is the
    /// publishable-key set) that the database's `has_permission()` reads. SQLite keeps none.
    async fn sync_permissions(&self, scope: &Scope, map: &[(i32, String)]) -> StoreResult<()>;

    /// Stores a row of the scope's user's private data (`row.user_id` must be that user).
    async fn add_activity(&self, scope: &Scope, row: &ActivityRow) -> StoreResult<()>;
    /// The user's private data, newest first; empty for anyone but that user.
    async fn activity_of(
        &self,
        scope: &Scope,
        user_id: &str,
        limit: u32,
    ) -> StoreResult<Vec<ActivityRow>>;
}
