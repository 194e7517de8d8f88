//! Accounts and sessions on SQLite. A user scope reads only its own rows; writes are system paths.

use bastion_store::{
    AccountStore, RefreshRow, Rotation, Scope, SessionRow, SessionStore, StoreError, StoreResult,
    UserRow,
};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use crate::{SqliteStore, db_err, require_system};

/// System paths see everyone; a user sees only themself; anyone else nothing.
fn require_self_or_system(scope: &Scope, user_id: &str) -> StoreResult<()> {
    match scope {
        Scope::System(_) => Ok(()),
        Scope::User { user_id: me, .. } if me == user_id => Ok(()),
        _ => Err(StoreError::Forbidden),
    }
}

const USER_COLS: &str =
    "id, email, email_verified_ms, password_hash, created_ms, updated_ms, super_admin";
const SESSION_COLS: &str = "id, user_id, device_name, platform, ip, user_agent, created_ms, last_seen_ms, \
                            idle_expires_ms, absolute_expires_ms, revoked_ms, revoked_reason";

fn user(r: &SqliteRow) -> StoreResult<UserRow> {
    Ok(UserRow {
        id: r.try_get(0).map_err(db_err)?,
        email: r.try_get(1).map_err(db_err)?,
        email_verified_ms: r.try_get(2).map_err(db_err)?,
        password_hash: r.try_get(3).map_err(db_err)?,
        created_ms: r.try_get(4).map_err(db_err)?,
        updated_ms: r.try_get(5).map_err(db_err)?,
        super_admin: r.try_get(6).map_err(db_err)?,
    })
}

fn session(r: &SqliteRow) -> StoreResult<SessionRow> {
    Ok(SessionRow {
        id: r.try_get(0).map_err(db_err)?,
        user_id: r.try_get(1).map_err(db_err)?,
        device_name: r.try_get(2).map_err(db_err)?,
        platform: r.try_get(3).map_err(db_err)?,
        ip: r.try_get(4).map_err(db_err)?,
        user_agent: r.try_get(5).map_err(db_err)?,
        created_ms: r.try_get(6).map_err(db_err)?,
        last_seen_ms: r.try_get(7).map_err(db_err)?,
        idle_expires_ms: r.try_get(8).map_err(db_err)?,
        absolute_expires_ms: r.try_get(9).map_err(db_err)?,
        revoked_ms: r.try_get(10).map_err(db_err)?,
        revoked_reason: r.try_get(11).map_err(db_err)?,
    })
}

#[async_trait::async_trait]
impl AccountStore for SqliteStore {
    async fn create_user(&self, scope: &Scope, u: &UserRow) -> StoreResult<()> {
        require_system(scope)?;
        sqlx::query(
            "INSERT INTO users (id, email, email_verified_ms, password_hash, created_ms, updated_ms, super_admin) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&u.id)
        .bind(&u.email)
        .bind(u.email_verified_ms)
        .bind(u.password_hash.as_deref())
        .bind(u.created_ms)
        .bind(u.updated_ms)
        .bind(u.super_admin)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn user_by_email(&self, scope: &Scope, email: &str) -> StoreResult<Option<UserRow>> {
        require_system(scope)?;
        let sql = format!("SELECT {USER_COLS} FROM users WHERE email = ?");
        let row = sqlx::query(&sql)
            .bind(email)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(user).transpose()
    }

    async fn user_by_id(&self, scope: &Scope, id: &str) -> StoreResult<Option<UserRow>> {
        if require_self_or_system(scope, id).is_err() {
            return Ok(None);
        }
        let sql = format!("SELECT {USER_COLS} FROM users WHERE id = ?");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(user).transpose()
    }

    async fn set_password_hash(
        &self,
        scope: &Scope,
        user_id: &str,
        hash: &str,
        now_ms: i64,
    ) -> StoreResult<()> {
        require_self_or_system(scope, user_id)?;
        let done = sqlx::query("UPDATE users SET password_hash = ?, updated_ms = ? WHERE id = ?")
            .bind(hash)
            .bind(now_ms)
            .bind(user_id)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        if done.rows_affected() == 0 {
            Err(StoreError::NotFound)
        } else {
            Ok(())
        }
    }

    async fn mark_email_verified(
        &self,
        scope: &Scope,
        user_id: &str,
        now_ms: i64,
    ) -> StoreResult<()> {
        require_self_or_system(scope, user_id)?;
        let done = sqlx::query(
            "UPDATE users SET email_verified_ms = COALESCE(email_verified_ms, ?1), updated_ms = ?1 WHERE id = ?2",
        )
        .bind(now_ms)
        .bind(user_id)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        if done.rows_affected() == 0 {
            Err(StoreError::NotFound)
        } else {
            Ok(())
        }
    }

    #[tracing::instrument(skip_all)]
    async fn users_page(
        &self,
        scope: &Scope,
        after_id: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<UserRow>> {
        require_system(scope)?;
        let sql = format!("SELECT {USER_COLS} FROM users WHERE id > ? ORDER BY id LIMIT ?");
        let rows = sqlx::query(&sql)
            .bind(after_id.unwrap_or(""))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter().map(user).collect()
    }

    #[tracing::instrument(skip_all)]
    async fn set_email(
        &self,
        scope: &Scope,
        user_id: &str,
        from: &str,
        to: &str,
        now_ms: i64,
    ) -> StoreResult<bool> {
        require_system(scope)?;
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let done =
            sqlx::query("UPDATE users SET email = ?, updated_ms = ? WHERE id = ? AND email = ?")
                .bind(to)
                .bind(now_ms)
                .bind(user_id)
                .bind(from)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        // The copy member lists show; not a change of the membership itself.
        sqlx::query("UPDATE memberships SET email = ? WHERE user_id = ?")
            .bind(to)
            .bind(user_id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(true)
    }
}

#[async_trait::async_trait]
impl SessionStore for SqliteStore {
    async fn create_session(
        &self,
        scope: &Scope,
        s: &SessionRow,
        first: &[u8; 32],
    ) -> StoreResult<()> {
        require_system(scope)?;
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        sqlx::query(
            "INSERT INTO sessions (id, user_id, device_name, platform, ip, user_agent, created_ms, last_seen_ms, \
             idle_expires_ms, absolute_expires_ms, revoked_ms, revoked_reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL)",
        )
        .bind(&s.id)
        .bind(&s.user_id)
        .bind(&s.device_name)
        .bind(&s.platform)
        .bind(&s.ip)
        .bind(&s.user_agent)
        .bind(s.created_ms)
        .bind(s.last_seen_ms)
        .bind(s.idle_expires_ms)
        .bind(s.absolute_expires_ms)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        sqlx::query("INSERT INTO refresh_tokens (token_hash, session_id, generation, issued_ms, used_ms) VALUES (?, ?, 1, ?, NULL)")
            .bind(&first[..])
            .bind(&s.id)
            .bind(s.created_ms)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)
    }

    async fn session(&self, scope: &Scope, id: &str) -> StoreResult<Option<SessionRow>> {
        let sql = format!("SELECT {SESSION_COLS} FROM sessions WHERE id = ?");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        let found = row.as_ref().map(session).transpose()?;
        Ok(found.filter(|s| require_self_or_system(scope, &s.user_id).is_ok()))
    }

    async fn sessions_of(&self, scope: &Scope, user_id: &str) -> StoreResult<Vec<SessionRow>> {
        if require_self_or_system(scope, user_id).is_err() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {SESSION_COLS} FROM sessions WHERE user_id = ? ORDER BY created_ms DESC, id"
        );
        let rows = sqlx::query(&sql)
            .bind(user_id)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter().map(session).collect()
    }

    async fn find_refresh(
        &self,
        scope: &Scope,
        token_hash: &[u8; 32],
    ) -> StoreResult<Option<RefreshRow>> {
        require_system(scope)?;
        let row = sqlx::query(
            "SELECT t.session_id, s.user_id, t.generation, t.issued_ms, t.used_ms \
             FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id WHERE t.token_hash = ?",
        )
        .bind(&token_hash[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        row.map(|r| {
            Ok(RefreshRow {
                session_id: r.try_get(0).map_err(db_err)?,
                user_id: r.try_get(1).map_err(db_err)?,
                generation: r.try_get(2).map_err(db_err)?,
                issued_ms: r.try_get(3).map_err(db_err)?,
                used_ms: r.try_get(4).map_err(db_err)?,
            })
        })
        .transpose()
    }

    async fn rotate_refresh(
        &self,
        scope: &Scope,
        old: &[u8; 32],
        new: &[u8; 32],
        now_ms: i64,
        idle_expires_ms: i64,
    ) -> StoreResult<Rotation> {
        require_system(scope)?;
        let mut conn = self.pool.acquire().await.map_err(db_err)?;
        // IMMEDIATE: take the write lock before reading, so the conditional update is decisive.
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
        let outcome = rotate_in_tx(&mut conn, old, new, now_ms, idle_expires_ms).await;
        let end = if matches!(outcome, Ok(Rotation::Rotated)) {
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

    async fn revoke_session(
        &self,
        scope: &Scope,
        session_id: &str,
        now_ms: i64,
        reason: &str,
    ) -> StoreResult<bool> {
        let owner: Option<String> = sqlx::query_scalar("SELECT user_id FROM sessions WHERE id = ?")
            .bind(session_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        let Some(owner) = owner else { return Ok(false) };
        if require_self_or_system(scope, &owner).is_err() {
            return Ok(false);
        }
        let done = sqlx::query("UPDATE sessions SET revoked_ms = ?, revoked_reason = ? WHERE id = ? AND revoked_ms IS NULL")
            .bind(now_ms)
            .bind(reason)
            .bind(session_id)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }
}

async fn rotate_in_tx(
    conn: &mut sqlx::SqliteConnection,
    old: &[u8; 32],
    new: &[u8; 32],
    now_ms: i64,
    idle_expires_ms: i64,
) -> StoreResult<Rotation> {
    let consumed = sqlx::query(
        "UPDATE refresh_tokens SET used_ms = ? WHERE token_hash = ? AND used_ms IS NULL RETURNING session_id, generation",
    )
    .bind(now_ms)
    .bind(&old[..])
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_err)?;
    let Some(row) = consumed else {
        return Ok(Rotation::AlreadyUsed);
    };
    let session_id: String = row.try_get(0).map_err(db_err)?;
    let generation: i64 = row.try_get(1).map_err(db_err)?;
    let live = sqlx::query(
        "UPDATE sessions SET last_seen_ms = ?, idle_expires_ms = min(?, absolute_expires_ms) \
         WHERE id = ? AND revoked_ms IS NULL AND idle_expires_ms > ? AND absolute_expires_ms > ?",
    )
    .bind(now_ms)
    .bind(idle_expires_ms)
    .bind(&session_id)
    .bind(now_ms)
    .bind(now_ms)
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    if live.rows_affected() == 0 {
        return Ok(Rotation::SessionEnded);
    }
    sqlx::query("INSERT INTO refresh_tokens (token_hash, session_id, generation, issued_ms, used_ms) VALUES (?, ?, ?, ?, NULL)")
        .bind(&new[..])
        .bind(&session_id)
        .bind(generation + 1)
        .bind(now_ms)
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    Ok(Rotation::Rotated)
}
