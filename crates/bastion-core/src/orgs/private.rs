//! User-private data (SPEC R5): rows only their user reads, whatever anyone's level in the
//! org. The first kind is desktop activity; the database enforces the same rule (PostgreSQL's
//! `owner_only` policy) so no org role, key or query in Bastion can widen it.

use bastion_store::ActivityRow;

use super::service::{Caller, OrgError, Orgs, new_id, user_scope};

const MAX_DATA_BYTES: usize = 16 * 1024;
/// Rows returned at most per read.
pub const MAX_ACTIVITY_PAGE: u32 = 500;

fn check_kind(kind: &str) -> Result<(), OrgError> {
    let ok = !kind.is_empty()
        && kind.len() <= 64
        && kind
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(OrgError::Invalid(
            "kind must be 1 to 64 characters of a-z, 0-9, '.', '_' or '-'".into(),
        ))
    }
}

impl Orgs {
    /// Records a row of the caller's own activity, optionally tagged with an org the caller
    /// belongs to.
    pub async fn add_activity(
        &self,
        caller: &Caller,
        org_id: Option<&str>,
        kind: &str,
        data: &str,
    ) -> Result<ActivityRow, OrgError> {
        let Caller::User { user_id } = caller else {
            return Err(OrgError::UserOnly);
        };
        check_kind(kind)?;
        if data.len() > MAX_DATA_BYTES {
            return Err(OrgError::Invalid(format!(
                "data must be at most {MAX_DATA_BYTES} bytes"
            )));
        }
        if let Some(org) = org_id {
            self.access(caller, org).await?;
        }
        let row = ActivityRow {
            id: new_id("act")?,
            user_id: user_id.clone(),
            org_id: org_id.map(str::to_owned),
            ts_ms: self.clock.now_ms(),
            kind: kind.to_owned(),
            data: data.to_owned(),
        };
        let me = user_scope(user_id);
        self.store.add_activity(&me, &row).await?;
        Ok(row)
    }

    /// The caller's own activity, newest first.
    pub async fn activity(
        &self,
        caller: &Caller,
        limit: u32,
    ) -> Result<Vec<ActivityRow>, OrgError> {
        let Caller::User { user_id } = caller else {
            return Err(OrgError::UserOnly);
        };
        let me = user_scope(user_id);
        Ok(self
            .store
            .activity_of(&me, user_id, limit.clamp(1, MAX_ACTIVITY_PAGE))
            .await?)
    }
}
