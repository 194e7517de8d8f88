//! Organizations, memberships, invitations, API keys and private activity on PostgreSQL. The
//! policies of migration 0006 make every scope decision, permission and level rules included:
//! a row they hide reads as absent, and a row they refuse to write is `Forbidden`.

use bastion_store::{
    API_KEY_TOUCH_MS, ActivityRow, ApiKeyRow, InvitationRow, KeyKind, MemberChange, MemberRow,
    OrgRow, OrgStore, Scope, StoreError, StoreResult,
};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use crate::{PgStore, db_err, hash32, require_system};

const ORG_COLS: &str = "id, name, created_by, created_ms, updated_ms";
const MEMBER_COLS: &str = "org_id, user_id, email, level, created_ms, updated_ms";
const INVITATION_COLS: &str =
    "id, org_id, email, level, invited_by, created_ms, expires_ms, accepted_ms, accepted_by";
const KEY_COLS: &str =
    "id, org_id, kind, name, hint, key_hash, created_by, created_ms, last_used_ms, revoked_ms";
const ACTIVITY_COLS: &str = "id, user_id, org_id, ts_ms, kind, data";

fn org(r: &PgRow) -> StoreResult<OrgRow> {
    Ok(OrgRow {
        id: r.try_get(0).map_err(db_err)?,
        name: r.try_get(1).map_err(db_err)?,
        created_by: r.try_get(2).map_err(db_err)?,
        created_ms: r.try_get(3).map_err(db_err)?,
        updated_ms: r.try_get(4).map_err(db_err)?,
    })
}

fn member(r: &PgRow) -> StoreResult<MemberRow> {
    Ok(MemberRow {
        org_id: r.try_get(0).map_err(db_err)?,
        user_id: r.try_get(1).map_err(db_err)?,
        email: r.try_get(2).map_err(db_err)?,
        level: r.try_get(3).map_err(db_err)?,
        created_ms: r.try_get(4).map_err(db_err)?,
        updated_ms: r.try_get(5).map_err(db_err)?,
    })
}

fn invitation(r: &PgRow) -> StoreResult<InvitationRow> {
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

fn api_key(r: &PgRow) -> StoreResult<ApiKeyRow> {
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

fn activity(r: &PgRow) -> StoreResult<ActivityRow> {
    Ok(ActivityRow {
        id: r.try_get(0).map_err(db_err)?,
        user_id: r.try_get(1).map_err(db_err)?,
        org_id: r.try_get(2).map_err(db_err)?,
        ts_ms: r.try_get(3).map_err(db_err)?,
        kind: r.try_get(4).map_err(db_err)?,
        data: r.try_get(5).map_err(db_err)?,
    })
}

/// The `keep_a_super_admin` trigger's refusal (check_violation on `last_super_admin`).
fn is_last_super_admin(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d)
        if d.code().as_deref() == Some("23514") && d.constraint() == Some("last_super_admin"))
}

async fn insert_member(conn: &mut PgConnection, m: &MemberRow) -> StoreResult<()> {
    let sql = format!("INSERT INTO memberships ({MEMBER_COLS}) VALUES ($1, $2, $3, $4, $5, $6)");
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

impl PgStore {
    /// An org's rows: `sql` binds the org id as `$1`; the policies decide what the scope sees.
    async fn org_rows<T>(
        &self,
        scope: &Scope,
        org_id: &str,
        sql: &str,
        map: fn(&PgRow) -> StoreResult<T>,
    ) -> StoreResult<Vec<T>> {
        let mut tx = self.begin(scope).await?;
        let rows = sqlx::query(sql)
            .bind(org_id)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        rows.iter().map(map).collect()
    }
}

#[async_trait::async_trait]
impl OrgStore for PgStore {
    async fn create_org(&self, scope: &Scope, o: &OrgRow, creator: &MemberRow) -> StoreResult<()> {
        let mut tx = self.begin(scope).await?;
        // `creator_insert` and `creator_first` admit only the signed-in creator, as Super Admin.
        sqlx::query(
            "INSERT INTO orgs (id, name, created_by, created_ms, updated_ms) VALUES ($1, $2, $3, $4, $5)",
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
        let mut tx = self.begin(scope).await?;
        let sql = format!("SELECT {ORG_COLS} FROM orgs WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(org_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        row.as_ref().map(org).transpose()
    }

    async fn orgs_of(&self, scope: &Scope, user_id: &str) -> StoreResult<Vec<(OrgRow, i32)>> {
        // Only one's own list: members.read would otherwise leak others' rows of this org.
        if !scope.is_system() && scope.user_id() != Some(user_id) {
            return Ok(Vec::new());
        }
        let mut tx = self.begin(scope).await?;
        let rows = sqlx::query(
            "SELECT o.id, o.name, o.created_by, o.created_ms, o.updated_ms, m.level \
             FROM memberships m JOIN orgs o ON o.id = m.org_id WHERE m.user_id = $1 \
             ORDER BY m.created_ms, o.id",
        )
        .bind(user_id)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
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
        let mut tx = self.begin(scope).await?;
        let done = sqlx::query("UPDATE orgs SET name = $1, updated_ms = $2 WHERE id = $3")
            .bind(name)
            .bind(now_ms)
            .bind(org_id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_org(&self, scope: &Scope, org_id: &str) -> StoreResult<bool> {
        let mut tx = self.begin(scope).await?;
        // The cascade to memberships, invitations, keys and activity bypasses row security.
        let done = sqlx::query("DELETE FROM orgs WHERE id = $1")
            .bind(org_id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn membership(
        &self,
        scope: &Scope,
        org_id: &str,
        user_id: &str,
    ) -> StoreResult<Option<MemberRow>> {
        let mut tx = self.begin(scope).await?;
        let sql =
            format!("SELECT {MEMBER_COLS} FROM memberships WHERE org_id = $1 AND user_id = $2");
        let row = sqlx::query(&sql)
            .bind(org_id)
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        row.as_ref().map(member).transpose()
    }

    async fn members(&self, scope: &Scope, org_id: &str) -> StoreResult<Vec<MemberRow>> {
        let sql = format!(
            "SELECT {MEMBER_COLS} FROM memberships WHERE org_id = $1 ORDER BY level DESC, created_ms, user_id"
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
        let mut tx = self.begin(scope).await?;
        let q = match to {
            Some(level) => sqlx::query(
                "UPDATE memberships SET level = $4, updated_ms = $5 \
                 WHERE org_id = $1 AND user_id = $2 AND level = $3",
            )
            .bind(org_id)
            .bind(user_id)
            .bind(expected)
            .bind(level)
            .bind(now_ms),
            None => sqlx::query(
                "DELETE FROM memberships WHERE org_id = $1 AND user_id = $2 AND level = $3",
            )
            .bind(org_id)
            .bind(user_id)
            .bind(expected),
        };
        // The trigger serialises on the org row: a concurrent loser fails here and rolls back.
        let done = match q.execute(&mut *tx).await {
            Ok(done) => done,
            Err(e) if is_last_super_admin(&e) => return Ok(MemberChange::LastSuperAdmin),
            Err(e) => return Err(db_err(e)),
        };
        tx.commit().await.map_err(db_err)?;
        Ok(if done.rows_affected() == 0 {
            MemberChange::NotFound
        } else {
            MemberChange::Changed
        })
    }

    async fn replace_invitation(
        &self,
        scope: &Scope,
        inv: &InvitationRow,
        replaceable_up_to: i32,
    ) -> StoreResult<Vec<String>> {
        let mut tx = self.begin(scope).await?;
        // Row-level security withdraws only what the scope may; the level bound says the same
        // for the system path and keeps both backends alike.
        let withdrawn: Vec<String> = sqlx::query_scalar(
            "DELETE FROM invitations WHERE org_id = $1 AND email = $2 AND accepted_ms IS NULL \
             AND level <= $3 RETURNING id",
        )
        .bind(&inv.org_id)
        .bind(&inv.email)
        .bind(replaceable_up_to)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        let sql = format!(
            "INSERT INTO invitations ({INVITATION_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        );
        sqlx::query(&sql)
            .bind(&inv.id)
            .bind(&inv.org_id)
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
        tx.commit().await.map_err(db_err)?;
        Ok(withdrawn)
    }

    async fn invitations(&self, scope: &Scope, org_id: &str) -> StoreResult<Vec<InvitationRow>> {
        let sql = format!(
            "SELECT {INVITATION_COLS} FROM invitations WHERE org_id = $1 ORDER BY created_ms DESC, id DESC"
        );
        self.org_rows(scope, org_id, &sql, invitation).await
    }

    async fn revoke_invitation(&self, scope: &Scope, org_id: &str, id: &str) -> StoreResult<bool> {
        let mut tx = self.begin(scope).await?;
        let done = sqlx::query(
            "DELETE FROM invitations WHERE id = $1 AND org_id = $2 AND accepted_ms IS NULL",
        )
        .bind(id)
        .bind(org_id)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn invitation(&self, scope: &Scope, id: &str) -> StoreResult<Option<InvitationRow>> {
        require_system(scope)?;
        let mut tx = self.begin(scope).await?;
        let sql = format!("SELECT {INVITATION_COLS} FROM invitations WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
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
        let mut tx = self.begin(scope).await?;
        // A concurrent acceptor waits on the row lock, then re-checks `accepted_ms IS NULL`.
        let done = sqlx::query(
            "UPDATE invitations SET accepted_ms = $1, accepted_by = $2 \
             WHERE id = $3 AND org_id = $4 AND level = $5 AND accepted_ms IS NULL AND expires_ms > $1",
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
        let mut tx = self.begin(scope).await?;
        let sql = format!(
            "INSERT INTO api_keys ({KEY_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        );
        sqlx::query(&sql)
            .bind(&key.id)
            .bind(&key.org_id)
            .bind(key.kind.as_str())
            .bind(&key.name)
            .bind(&key.hint)
            .bind(&key.key_hash[..])
            .bind(&key.created_by)
            .bind(key.created_ms)
            .bind(key.last_used_ms)
            .bind(key.revoked_ms)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)
    }

    async fn api_keys(&self, scope: &Scope, org_id: &str) -> StoreResult<Vec<ApiKeyRow>> {
        let sql = format!(
            "SELECT {KEY_COLS} FROM api_keys WHERE org_id = $1 ORDER BY created_ms DESC, id DESC"
        );
        self.org_rows(scope, org_id, &sql, api_key).await
    }

    async fn revoke_api_key(
        &self,
        scope: &Scope,
        org_id: &str,
        id: &str,
        now_ms: i64,
    ) -> StoreResult<bool> {
        let mut tx = self.begin(scope).await?;
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_ms = $1 WHERE id = $2 AND org_id = $3 AND revoked_ms IS NULL",
        )
        .bind(now_ms)
        .bind(id)
        .bind(org_id)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn api_key_by_hash(
        &self,
        scope: &Scope,
        key_hash: &[u8; 32],
    ) -> StoreResult<Option<ApiKeyRow>> {
        require_system(scope)?;
        let mut tx = self.begin(scope).await?;
        let sql = format!("SELECT {KEY_COLS} FROM api_keys WHERE key_hash = $1");
        let row = sqlx::query(&sql)
            .bind(&key_hash[..])
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        row.as_ref().map(api_key).transpose()
    }

    async fn touch_api_key(&self, scope: &Scope, id: &str, now_ms: i64) -> StoreResult<()> {
        require_system(scope)?;
        let mut tx = self.begin(scope).await?;
        sqlx::query(
            "UPDATE api_keys SET last_used_ms = $1 \
             WHERE id = $2 AND (last_used_ms IS NULL OR last_used_ms < $1 - $3)",
        )
        .bind(now_ms)
        .bind(id)
        .bind(API_KEY_TOUCH_MS)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)
    }

    async fn sync_permissions(&self, scope: &Scope, map: &[(i32, String)]) -> StoreResult<()> {
        require_system(scope)?;
        let (levels, permissions): (Vec<i32>, Vec<String>) = map.iter().cloned().unzip();
        let mut tx = self.begin(scope).await?;
        // One transaction: policies never see a half-written map.
        sqlx::query("DELETE FROM level_permissions")
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        sqlx::query(
            "INSERT INTO level_permissions (level, permission) \
             SELECT * FROM UNNEST($1::integer[], $2::text[])",
        )
        .bind(&levels)
        .bind(&permissions)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)
    }

    async fn add_activity(&self, scope: &Scope, row: &ActivityRow) -> StoreResult<()> {
        let mut tx = self.begin(scope).await?;
        let sql = format!(
            "INSERT INTO activity_events ({ACTIVITY_COLS}) VALUES ($1, $2, $3, $4, $5, $6)"
        );
        sqlx::query(&sql)
            .bind(&row.id)
            .bind(&row.user_id)
            .bind(row.org_id.as_deref())
            .bind(row.ts_ms)
            .bind(&row.kind)
            .bind(&row.data)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)
    }

    async fn activity_of(
        &self,
        scope: &Scope,
        user_id: &str,
        limit: u32,
    ) -> StoreResult<Vec<ActivityRow>> {
        let mut tx = self.begin(scope).await?;
        let sql = format!(
            "SELECT {ACTIVITY_COLS} FROM activity_events WHERE user_id = $1 \
             ORDER BY ts_ms DESC, id DESC LIMIT $2"
        );
        let rows = sqlx::query(&sql)
            .bind(user_id)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        rows.iter().map(activity).collect()
    }
}
