//! Organizations, memberships, invitations, API keys and private activity on SQLite. Without
//! row-level security each statement carries the tenant boundary itself ([`IN_ORG`]), so the
//! check and the read or write are one step; the permission decision is bastion-core's.

use bastion_store::{
    ActivityRow, ApiKeyRow, InvitationRow, KeyKind, MemberChange, MemberRow, OrgRow, OrgStore,
    Scope, StoreError, StoreResult,
};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use crate::{SqliteStore, db_err, hash32, require_system};

const ORG_COLS: &str = "id, name, created_by, created_ms, updated_ms";
const MEMBER_COLS: &str = "org_id, user_id, email, level, created_ms, updated_ms";
const INVITATION_COLS: &str =
    "id, org_id, email, level, invited_by, created_ms, expires_ms, accepted_ms, accepted_by";
const KEY_COLS: &str =
    "id, org_id, kind, name, hint, key_hash, created_by, created_ms, last_used_ms, revoked_ms";
const ACTIVITY_COLS: &str = "id, user_id, org_id, ts_ms, kind, data";

/// Whether the scope (`?1` kind, `?2` user or key id) is inside org `?3`: the system, a member,
/// or a live key of that org. Every statement below binds these three first.
pub(crate) const IN_ORG: &str = "(?1 = 'system' \
     OR (?1 = 'user' AND EXISTS (SELECT 1 FROM memberships s WHERE s.org_id = ?3 AND s.user_id = ?2)) \
     OR (?1 IN ('service', 'publishable') AND EXISTS (SELECT 1 FROM api_keys s \
         WHERE s.id = ?2 AND s.org_id = ?3 AND s.kind = ?1 AND s.revoked_ms IS NULL)))";

/// The scope as [`IN_ORG`]'s kind and id for `org_id`; `None` when it cannot be inside that org
/// (anonymous, or a scope inside another org).
pub(crate) fn actor<'a>(scope: &'a Scope, org_id: &str) -> Option<(&'static str, &'a str)> {
    match scope {
        Scope::System(_) => Some(("system", "")),
        Scope::User {
            user_id,
            org_id: Some(o),
        } if o == org_id => Some(("user", user_id)),
        Scope::ApiKey {
            key_id,
            org_id: o,
            kind,
        } if o == org_id => Some((kind.as_str(), key_id)),
        _ => None,
    }
}

fn org(r: &SqliteRow) -> StoreResult<OrgRow> {
    Ok(OrgRow {
        id: r.try_get(0).map_err(db_err)?,
        name: r.try_get(1).map_err(db_err)?,
        created_by: r.try_get(2).map_err(db_err)?,
        created_ms: r.try_get(3).map_err(db_err)?,
        updated_ms: r.try_get(4).map_err(db_err)?,
    })
}

fn member(r: &SqliteRow) -> StoreResult<MemberRow> {
    Ok(MemberRow {
        org_id: r.try_get(0).map_err(db_err)?,
        user_id: r.try_get(1).map_err(db_err)?,
        email: r.try_get(2).map_err(db_err)?,
        level: r.try_get(3).map_err(db_err)?,
        created_ms: r.try_get(4).map_err(db_err)?,
        updated_ms: r.try_get(5).map_err(db_err)?,
    })
}

fn invitation(r: &SqliteRow) -> StoreResult<InvitationRow> {
    Ok(InvitationRow {
        id: r.try_get(0).map_err(db_err)?,
        org_id: r.try_get(1).map_err(db_err)?,
        email: r.try_get(2).map_err(db_err)?,
        level: r.try_get(3).map_err(db_err)?,
        invited_by: r.try_get(4).map_err(db_err)?,
        created_ms: r.try_get(5).map_err(db_err)?,
        expires_ms: r.try_get(6).map_err(db_err)?,
        accepted_ms: r.try_get(7).map_err(db_err)?,
        accepted_by: r.try_get(8).map_err(db_err)?,
    })
}

fn api_key(r: &SqliteRow) -> StoreResult<ApiKeyRow> {
    let kind: String = r.try_get(2).map_err(db_err)?;
    Ok(ApiKeyRow {
        id: r.try_get(0).map_err(db_err)?,
        org_id: r.try_get(1).map_err(db_err)?,
        kind: KeyKind::parse(&kind).ok_or_else(|| StoreError::Corrupt("api key kind".into()))?,
        name: r.try_get(3).map_err(db_err)?,
        hint: r.try_get(4).map_err(db_err)?,
        key_hash: hash32(r, "key_hash")?,
        created_by: r.try_get(6).map_err(db_err)?,
        created_ms: r.try_get(7).map_err(db_err)?,
        last_used_ms: r.try_get(8).map_err(db_err)?,
        revoked_ms: r.try_get(9).map_err(db_err)?,
    })
}

fn activity(r: &SqliteRow) -> StoreResult<ActivityRow> {
    Ok(ActivityRow {
        id: r.try_get(0).map_err(db_err)?,
        user_id: r.try_get(1).map_err(db_err)?,
        org_id: r.try_get(2).map_err(db_err)?,
        ts_ms: r.try_get(3).map_err(db_err)?,
        kind: r.try_get(4).map_err(db_err)?,
        data: r.try_get(5).map_err(db_err)?,
    })
}

/// Only the user themself (or the system) reaches a user's own data.
fn is_self_or_system(scope: &Scope, user_id: &str) -> bool {
    scope.is_system() || scope.user_id() == Some(user_id)
}

impl SqliteStore {
    /// An org's rows: `sql` binds [`IN_ORG`]'s three parameters and nothing else; a scope that
    /// cannot be inside the org gets none without a query.
    async fn org_rows<T>(
        &self,
        scope: &Scope,
        org_id: &str,
        sql: &str,
        map: fn(&SqliteRow) -> StoreResult<T>,
    ) -> StoreResult<Vec<T>> {
        let Some((kind, id)) = actor(scope, org_id) else {
            return Ok(Vec::new());
        };
        let rows = sqlx::query(sql)
            .bind(kind)
            .bind(id)
            .bind(org_id)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter().map(map).collect()
    }
}

#[async_trait::async_trait]
impl OrgStore for SqliteStore {
    async fn create_org(&self, scope: &Scope, o: &OrgRow, creator: &MemberRow) -> StoreResult<()> {
        let is_creator = scope.user_id() == Some(o.created_by.as_str())
            && creator.user_id == o.created_by
            && creator.org_id == o.id
            && creator.level == 100;
        if !is_creator {
            return Err(StoreError::Forbidden);
        }
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        sqlx::query(
            "INSERT INTO orgs (id, name, created_by, created_ms, updated_ms) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&o.id)
        .bind(&o.name)
        .bind(&o.created_by)
        .bind(o.created_ms)
        .bind(o.updated_ms)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        insert_member(&mut tx, creator).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn org(&self, scope: &Scope, org_id: &str) -> StoreResult<Option<OrgRow>> {
        // A member sees their orgs from any scope of theirs (an org list has no org yet).
        let reach = match scope {
            Scope::User { user_id, .. } => Some(("user", user_id.as_str())),
            _ => actor(scope, org_id),
        };
        let Some((kind, id)) = reach else {
            return Ok(None);
        };
        let sql = format!("SELECT {ORG_COLS} FROM orgs WHERE id = ?3 AND {IN_ORG}");
        let row = sqlx::query(&sql)
            .bind(kind)
            .bind(id)
            .bind(org_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(org).transpose()
    }

    async fn orgs_of(&self, scope: &Scope, user_id: &str) -> StoreResult<Vec<(OrgRow, i32)>> {
        if !is_self_or_system(scope, user_id) {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT o.id, o.name, o.created_by, o.created_ms, o.updated_ms, m.level \
             FROM memberships m JOIN orgs o ON o.id = m.org_id WHERE m.user_id = ? \
             ORDER BY m.created_ms, o.id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter()
            .map(|r| Ok((org(r)?, r.try_get(5).map_err(db_err)?)))
            .collect()
    }

    async fn rename_org(
        &self,
        scope: &Scope,
        org_id: &str,
        name: &str,
        now_ms: i64,
    ) -> StoreResult<bool> {
        let Some((kind, id)) = actor(scope, org_id) else {
            return Ok(false);
        };
        let sql = format!("UPDATE orgs SET name = ?4, updated_ms = ?5 WHERE id = ?3 AND {IN_ORG}");
        let done = sqlx::query(&sql)
            .bind(kind)
            .bind(id)
            .bind(org_id)
            .bind(name)
            .bind(now_ms)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_org(&self, scope: &Scope, org_id: &str) -> StoreResult<bool> {
        let Some((kind, id)) = actor(scope, org_id) else {
            return Ok(false);
        };
        // Memberships, invitations, keys and activity go with it (ON DELETE CASCADE).
        let sql = format!("DELETE FROM orgs WHERE id = ?3 AND {IN_ORG}");
        let done = sqlx::query(&sql)
            .bind(kind)
            .bind(id)
            .bind(org_id)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn membership(
        &self,
        scope: &Scope,
        org_id: &str,
        user_id: &str,
    ) -> StoreResult<Option<MemberRow>> {
        // One's own membership is visible from any of one's scopes.
        let reach = match scope {
            Scope::User { user_id: me, .. } if me == user_id => Some(("user", me.as_str())),
            _ => actor(scope, org_id),
        };
        let Some((kind, id)) = reach else {
            return Ok(None);
        };
        let sql = format!(
            "SELECT {MEMBER_COLS} FROM memberships WHERE org_id = ?3 AND user_id = ?4 AND {IN_ORG}"
        );
        let row = sqlx::query(&sql)
            .bind(kind)
            .bind(id)
            .bind(org_id)
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(member).transpose()
    }

    async fn members(&self, scope: &Scope, org_id: &str) -> StoreResult<Vec<MemberRow>> {
        let sql = format!(
            "SELECT {MEMBER_COLS} FROM memberships WHERE org_id = ?3 AND {IN_ORG} ORDER BY level DESC, created_ms, user_id"
        );
        self.org_rows(scope, org_id, &sql, member).await
    }

    async fn change_member(
        &self,
        scope: &Scope,
        org_id: &str,
        user_id: &str,
        expected: i32,
        to: Option<i32>,
        now_ms: i64,
    ) -> StoreResult<MemberChange> {
        let Some((kind, id)) = actor(scope, org_id) else {
            return Ok(MemberChange::NotFound);
        };
        let mut conn = self.pool.acquire().await.map_err(db_err)?;
        // IMMEDIATE: concurrent changes queue here, so the Super Admin count below is decisive.
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
        let change = Change {
            actor: (kind, id),
            org_id,
            user_id,
            expected,
            to,
            now_ms,
        };
        let outcome = change_in_tx(&mut conn, &change).await;
        let end = if matches!(outcome, Ok(MemberChange::Changed)) {
            "COMMIT"
        } else {
            "ROLLBACK"
        };
        if let Err(e) = sqlx::query(end).execute(&mut *conn).await {
            conn.detach();
            return Err(db_err(e));
        }
        outcome
    }

    async fn replace_invitation(
        &self,
        scope: &Scope,
        inv: &InvitationRow,
        replaceable_up_to: i32,
    ) -> StoreResult<Vec<String>> {
        let Some((kind, id)) = actor(scope, &inv.org_id) else {
            return Err(StoreError::Forbidden);
        };
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let sql = format!(
            "DELETE FROM invitations WHERE org_id = ?3 AND email = ?4 AND accepted_ms IS NULL \
             AND level <= ?5 AND {IN_ORG} RETURNING id"
        );
        let withdrawn: Vec<String> = sqlx::query_scalar(&sql)
            .bind(kind)
            .bind(id)
            .bind(&inv.org_id)
            .bind(&inv.email)
            .bind(replaceable_up_to)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
        let sql = format!(
            "INSERT INTO invitations ({INVITATION_COLS}) \
             SELECT ?4, ?3, ?5, ?6, ?7, ?8, ?9, ?10, ?11 WHERE {IN_ORG}"
        );
        let done = sqlx::query(&sql)
            .bind(kind)
            .bind(id)
            .bind(&inv.org_id)
            .bind(&inv.id)
            .bind(&inv.email)
            .bind(inv.level)
            .bind(&inv.invited_by)
            .bind(inv.created_ms)
            .bind(inv.expires_ms)
            .bind(inv.accepted_ms)
            .bind(inv.accepted_by.as_deref())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Forbidden);
        }
        tx.commit().await.map_err(db_err)?;
        Ok(withdrawn)
    }

    async fn invitations(&self, scope: &Scope, org_id: &str) -> StoreResult<Vec<InvitationRow>> {
        let sql = format!(
            "SELECT {INVITATION_COLS} FROM invitations WHERE org_id = ?3 AND {IN_ORG} ORDER BY created_ms DESC, id DESC"
        );
        self.org_rows(scope, org_id, &sql, invitation).await
    }

    async fn revoke_invitation(
        &self,
        scope: &Scope,
        org_id: &str,
        inv_id: &str,
    ) -> StoreResult<bool> {
        let Some((kind, id)) = actor(scope, org_id) else {
            return Ok(false);
        };
        let sql = format!(
            "DELETE FROM invitations WHERE id = ?4 AND org_id = ?3 AND accepted_ms IS NULL AND {IN_ORG}"
        );
        let done = sqlx::query(&sql)
            .bind(kind)
            .bind(id)
            .bind(org_id)
            .bind(inv_id)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn invitation(&self, scope: &Scope, id: &str) -> StoreResult<Option<InvitationRow>> {
        require_system(scope)?;
        let sql = format!("SELECT {INVITATION_COLS} FROM invitations WHERE id = ?");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(invitation).transpose()
    }

    async fn accept_invitation(
        &self,
        scope: &Scope,
        id: &str,
        m: &MemberRow,
        now_ms: i64,
    ) -> StoreResult<bool> {
        require_system(scope)?;
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        // A member for another org or level does not match: this invitation is not theirs.
        let done = sqlx::query(
            "UPDATE invitations SET accepted_ms = ?1, accepted_by = ?2 \
             WHERE id = ?3 AND org_id = ?4 AND level = ?5 AND accepted_ms IS NULL AND expires_ms > ?1",
        )
        .bind(now_ms)
        .bind(&m.user_id)
        .bind(id)
        .bind(&m.org_id)
        .bind(m.level)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        // Already a member: Conflict, and the dropped transaction leaves the invitation pending.
        insert_member(&mut tx, m).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(true)
    }

    async fn create_api_key(&self, scope: &Scope, key: &ApiKeyRow) -> StoreResult<()> {
        let Some((kind, id)) = actor(scope, &key.org_id) else {
            return Err(StoreError::Forbidden);
        };
        let sql = format!(
            "INSERT INTO api_keys ({KEY_COLS}) \
             SELECT ?4, ?3, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12 WHERE {IN_ORG}"
        );
        let done = sqlx::query(&sql)
            .bind(kind)
            .bind(id)
            .bind(&key.org_id)
            .bind(&key.id)
            .bind(key.kind.as_str())
            .bind(&key.name)
            .bind(&key.hint)
            .bind(&key.key_hash[..])
            .bind(&key.created_by)
            .bind(key.created_ms)
            .bind(key.last_used_ms)
            .bind(key.revoked_ms)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Forbidden);
        }
        Ok(())
    }

    async fn api_keys(&self, scope: &Scope, org_id: &str) -> StoreResult<Vec<ApiKeyRow>> {
        let sql = format!(
            "SELECT {KEY_COLS} FROM api_keys WHERE org_id = ?3 AND {IN_ORG} ORDER BY created_ms DESC, id DESC"
        );
        self.org_rows(scope, org_id, &sql, api_key).await
    }

    async fn revoke_api_key(
        &self,
        scope: &Scope,
        org_id: &str,
        key_id: &str,
        now_ms: i64,
    ) -> StoreResult<bool> {
        let Some((kind, id)) = actor(scope, org_id) else {
            return Ok(false);
        };
        let sql = format!(
            "UPDATE api_keys SET revoked_ms = ?5 WHERE id = ?4 AND org_id = ?3 AND revoked_ms IS NULL AND {IN_ORG}"
        );
        let done = sqlx::query(&sql)
            .bind(kind)
            .bind(id)
            .bind(org_id)
            .bind(key_id)
            .bind(now_ms)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn api_key_by_hash(
        &self,
        scope: &Scope,
        key_hash: &[u8; 32],
    ) -> StoreResult<Option<ApiKeyRow>> {
        require_system(scope)?;
        let sql = format!("SELECT {KEY_COLS} FROM api_keys WHERE key_hash = ?");
        let row = sqlx::query(&sql)
            .bind(&key_hash[..])
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(api_key).transpose()
    }

    async fn touch_api_key(&self, scope: &Scope, id: &str, now_ms: i64) -> StoreResult<()> {
        require_system(scope)?;
        sqlx::query(
            "UPDATE api_keys SET last_used_ms = ?1 \
             WHERE id = ?2 AND (last_used_ms IS NULL OR last_used_ms < ?1 - ?3)",
        )
        .bind(now_ms)
        .bind(id)
        .bind(bastion_store::API_KEY_TOUCH_MS)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn sync_permissions(&self, scope: &Scope, _map: &[(i32, String)]) -> StoreResult<()> {
        // No policies read a map here: bastion-core alone decides permissions on SQLite.
        require_system(scope)
    }

    async fn add_activity(&self, scope: &Scope, row: &ActivityRow) -> StoreResult<()> {
        if scope.user_id() != Some(row.user_id.as_str()) {
            return Err(StoreError::Forbidden);
        }
        let sql =
            format!("INSERT INTO activity_events ({ACTIVITY_COLS}) VALUES (?, ?, ?, ?, ?, ?)");
        sqlx::query(&sql)
            .bind(&row.id)
            .bind(&row.user_id)
            .bind(row.org_id.as_deref())
            .bind(row.ts_ms)
            .bind(&row.kind)
            .bind(&row.data)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn activity_of(
        &self,
        scope: &Scope,
        user_id: &str,
        limit: u32,
    ) -> StoreResult<Vec<ActivityRow>> {
        if !is_self_or_system(scope, user_id) {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {ACTIVITY_COLS} FROM activity_events WHERE user_id = ? \
             ORDER BY ts_ms DESC, id DESC LIMIT ?"
        );
        let rows = sqlx::query(&sql)
            .bind(user_id)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter().map(activity).collect()
    }
}

async fn insert_member(conn: &mut sqlx::SqliteConnection, m: &MemberRow) -> StoreResult<()> {
    let sql = format!("INSERT INTO memberships ({MEMBER_COLS}) VALUES (?, ?, ?, ?, ?, ?)");
    sqlx::query(&sql)
        .bind(&m.org_id)
        .bind(&m.user_id)
        .bind(&m.email)
        .bind(m.level)
        .bind(m.created_ms)
        .bind(m.updated_ms)
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    Ok(())
}

/// One conditional membership change, as [`OrgStore::change_member`] received it.
struct Change<'a> {
    actor: (&'static str, &'a str),
    org_id: &'a str,
    user_id: &'a str,
    expected: i32,
    to: Option<i32>,
    now_ms: i64,
}

async fn change_in_tx(
    conn: &mut sqlx::SqliteConnection,
    c: &Change<'_>,
) -> StoreResult<MemberChange> {
    let (kind, id) = c.actor;
    let done = match c.to {
        Some(level) => {
            let sql = format!(
                "UPDATE memberships SET level = ?4, updated_ms = ?5 \
                 WHERE org_id = ?3 AND user_id = ?6 AND level = ?7 AND {IN_ORG}"
            );
            sqlx::query(&sql)
                .bind(kind)
                .bind(id)
                .bind(c.org_id)
                .bind(level)
                .bind(c.now_ms)
                .bind(c.user_id)
                .bind(c.expected)
                .execute(&mut *conn)
                .await
        }
        None => {
            let sql = format!(
                "DELETE FROM memberships WHERE org_id = ?3 AND user_id = ?4 AND level = ?5 AND {IN_ORG}"
            );
            sqlx::query(&sql)
                .bind(kind)
                .bind(id)
                .bind(c.org_id)
                .bind(c.user_id)
                .bind(c.expected)
                .execute(&mut *conn)
                .await
        }
    }
    .map_err(db_err)?;
    if done.rows_affected() == 0 {
        return Ok(MemberChange::NotFound);
    }
    if c.expected == 100 && c.to != Some(100) {
        let left: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM memberships WHERE org_id = ? AND level = 100)",
        )
        .bind(c.org_id)
        .fetch_one(&mut *conn)
        .await
        .map_err(db_err)?;
        if !left {
            return Ok(MemberChange::LastSuperAdmin);
        }
    }
    Ok(MemberChange::Changed)
}
