//! Projects, secrets and the vault's system paths (encryption budget, status, rewrap, key
//! retirement, master-key rotation) on SQLite. Secret statements carry the tenant boundary
//! ([`IN_ORG`]) like the org tables; the permission decision is bastion-core's.

use std::collections::HashSet;

use bastion_store::{
    ProjectRow, Rewrapped, Scope, SealedColumn, SealedCount, SealedRow, SecretMeta, SecretRow,
    SecretStore, SecretUpdate, StoreError, StoreResult, StoredKey, VaultStore,
};
use sqlx::Row;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{Sqlite, SqliteRow};

use crate::orgs::{IN_ORG, actor};
use crate::{SqliteStore, db_err, require_system};

const PROJECT_COLS: &str = "id, org_id, name, created_by, created_ms";
const SECRET_COLS: &str =
    "id, org_id, project_id, name, value_key, value, version, created_ms, updated_ms, updated_by";
const META_COLS: &str = "id, project_id, name, version, created_ms, updated_ms, updated_by";

/// Where a sealed column's envelopes and key ids live (fixed names, never user input).
struct Sealed {
    table: &'static str,
    envelope: &'static str,
    key: &'static str,
    /// Extra condition for rows that hold an envelope (delivered mail keeps an empty one).
    live: &'static str,
}

fn sealed(column: SealedColumn) -> Sealed {
    let (key, live) = match column {
        SealedColumn::MailBody => ("sealed_key", " AND length(sealed) > 0"),
        SealedColumn::SecretValue => ("value_key", ""),
        SealedColumn::WebhookSecret => ("secret_key", ""),
        // In flight: no response yet.
        SealedColumn::IdempotentResponse => ("body_key", " AND body IS NOT NULL"),
    };
    Sealed {
        table: column.table(),
        envelope: column.column(),
        key,
        live,
    }
}

/// `<purpose>-v<N>` (the id an envelope names) as its key-ring purpose and version.
fn purpose_version(key_id: &str) -> Option<(&str, i64)> {
    let (purpose, version) = key_id.rsplit_once("-v")?;
    if purpose.is_empty() || version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((purpose, i64::from(version.parse::<u32>().ok()?)))
}

fn version_of(v: i64) -> StoreResult<u32> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt("secret version".into()))
}

fn project(r: &SqliteRow) -> StoreResult<ProjectRow> {
    Ok(ProjectRow {
        id: r.try_get(0).map_err(db_err)?,
        org_id: r.try_get(1).map_err(db_err)?,
        name: r.try_get(2).map_err(db_err)?,
        created_by: r.try_get(3).map_err(db_err)?,
        created_ms: r.try_get(4).map_err(db_err)?,
    })
}

fn secret(r: &SqliteRow) -> StoreResult<SecretRow> {
    Ok(SecretRow {
        id: r.try_get(0).map_err(db_err)?,
        org_id: r.try_get(1).map_err(db_err)?,
        project_id: r.try_get(2).map_err(db_err)?,
        name: r.try_get(3).map_err(db_err)?,
        value_key: r.try_get(4).map_err(db_err)?,
        value: r.try_get(5).map_err(db_err)?,
        version: version_of(r.try_get(6).map_err(db_err)?)?,
        created_ms: r.try_get(7).map_err(db_err)?,
        updated_ms: r.try_get(8).map_err(db_err)?,
        updated_by: r.try_get(9).map_err(db_err)?,
    })
}

fn meta(r: &SqliteRow) -> StoreResult<SecretMeta> {
    Ok(SecretMeta {
        id: r.try_get(0).map_err(db_err)?,
        project_id: r.try_get(1).map_err(db_err)?,
        name: r.try_get(2).map_err(db_err)?,
        version: version_of(r.try_get(3).map_err(db_err)?)?,
        created_ms: r.try_get(4).map_err(db_err)?,
        updated_ms: r.try_get(5).map_err(db_err)?,
        updated_by: r.try_get(6).map_err(db_err)?,
    })
}

/// A write's error, with the vault's own meanings for its constraints.
fn write_err(e: sqlx::Error, duplicate: &'static str) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict(duplicate),
        sqlx::Error::Database(d) if d.is_foreign_key_violation() => StoreError::NotFound,
        _ => db_err(e),
    }
}

impl SqliteStore {
    /// A connection inside `BEGIN IMMEDIATE`: the write lock is taken up front, so what the
    /// transaction reads cannot change before it writes (another process included).
    pub(crate) async fn begin_immediate(&self) -> StoreResult<PoolConnection<Sqlite>> {
        let mut conn = self.pool.acquire().await.map_err(db_err)?;
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
        Ok(conn)
    }

    /// Commits after `Ok`, rolls back after `Err`; a connection whose transaction could not be
    /// ended is discarded rather than handed back to the pool mid-transaction.
    pub(crate) async fn end_immediate<T>(
        mut conn: PoolConnection<Sqlite>,
        result: StoreResult<T>,
    ) -> StoreResult<T> {
        let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
        if let Err(e) = sqlx::query(end).execute(&mut *conn).await {
            if result.is_ok() && sqlx::query("ROLLBACK").execute(&mut *conn).await.is_ok() {
                return Err(db_err(e));
            }
            conn.detach();
            return result.and(Err(db_err(e)));
        }
        result
    }

    /// An org's rows of a project-or-secret query: `sql` binds [`IN_ORG`]'s three parameters,
    /// then `extra`; a scope that cannot be inside the org gets none without a query.
    async fn vault_rows<T>(
        &self,
        scope: &Scope,
        org_id: &str,
        sql: &str,
        extra: &[&str],
        map: fn(&SqliteRow) -> StoreResult<T>,
    ) -> StoreResult<Vec<T>> {
        let Some((kind, id)) = actor(scope, org_id) else {
            return Ok(Vec::new());
        };
        let mut q = sqlx::query(sql).bind(kind).bind(id).bind(org_id);
        for v in extra {
            q = q.bind(*v);
        }
        let rows = q.fetch_all(&self.pool).await.map_err(db_err)?;
        rows.iter().map(map).collect()
    }
}

#[async_trait::async_trait]
impl SecretStore for SqliteStore {
    async fn create_project(&self, scope: &Scope, row: &ProjectRow) -> StoreResult<()> {
        let Some((kind, id)) = actor(scope, &row.org_id) else {
            return Err(StoreError::Forbidden);
        };
        let sql = format!(
            "INSERT INTO secret_projects ({PROJECT_COLS}) SELECT ?4, ?3, ?5, ?6, ?7 WHERE {IN_ORG}"
        );
        let done = sqlx::query(&sql)
            .bind(kind)
            .bind(id)
            .bind(&row.org_id)
            .bind(&row.id)
            .bind(&row.name)
            .bind(&row.created_by)
            .bind(row.created_ms)
            .execute(&self.pool)
            .await
            .map_err(|e| write_err(e, "the org has a project of that name"))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Forbidden);
        }
        Ok(())
    }

    async fn projects(&self, scope: &Scope, org_id: &str) -> StoreResult<Vec<ProjectRow>> {
        let sql = format!(
            "SELECT {PROJECT_COLS} FROM secret_projects WHERE org_id = ?3 AND {IN_ORG} ORDER BY name, id"
        );
        self.vault_rows(scope, org_id, &sql, &[], project).await
    }

    async fn project(
        &self,
        scope: &Scope,
        org_id: &str,
        project_id: &str,
    ) -> StoreResult<Option<ProjectRow>> {
        let sql = format!(
            "SELECT {PROJECT_COLS} FROM secret_projects WHERE org_id = ?3 AND id = ?4 AND {IN_ORG}"
        );
        let rows = self
            .vault_rows(scope, org_id, &sql, &[project_id], project)
            .await?;
        Ok(rows.into_iter().next())
    }

    async fn delete_project(
        &self,
        scope: &Scope,
        org_id: &str,
        project_id: &str,
    ) -> StoreResult<bool> {
        let Some((kind, id)) = actor(scope, org_id) else {
            return Ok(false);
        };
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        // Explicitly as well as by the cascade: a connection without foreign keys keeps none.
        let sql = format!("DELETE FROM secrets WHERE org_id = ?3 AND project_id = ?4 AND {IN_ORG}");
        sqlx::query(&sql)
            .bind(kind)
            .bind(id)
            .bind(org_id)
            .bind(project_id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        let sql = format!("DELETE FROM secret_projects WHERE org_id = ?3 AND id = ?4 AND {IN_ORG}");
        let done = sqlx::query(&sql)
            .bind(kind)
            .bind(id)
            .bind(org_id)
            .bind(project_id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn insert_secret(&self, scope: &Scope, row: &SecretRow) -> StoreResult<()> {
        let Some((kind, id)) = actor(scope, &row.org_id) else {
            return Err(StoreError::Forbidden);
        };
        // The composite key (project_id, org_id) refuses a project of another org: NotFound.
        let sql = format!(
            "INSERT INTO secrets ({SECRET_COLS}) \
             SELECT ?4, ?3, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12 WHERE {IN_ORG}"
        );
        let done = sqlx::query(&sql)
            .bind(kind)
            .bind(id)
            .bind(&row.org_id)
            .bind(&row.id)
            .bind(&row.project_id)
            .bind(&row.name)
            .bind(&row.value_key)
            .bind(&row.value)
            .bind(i64::from(row.version))
            .bind(row.created_ms)
            .bind(row.updated_ms)
            .bind(&row.updated_by)
            .execute(&self.pool)
            .await
            .map_err(|e| write_err(e, "the project has a secret of that name"))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Forbidden);
        }
        Ok(())
    }

    async fn update_secret(
        &self,
        scope: &Scope,
        org_id: &str,
        secret_id: &str,
        update: &SecretUpdate,
    ) -> StoreResult<Option<u32>> {
        let Some((kind, id)) = actor(scope, org_id) else {
            return Ok(None);
        };
        let sql = format!(
            "UPDATE secrets SET value_key = ?5, value = ?6, version = version + 1, updated_ms = ?7, \
             updated_by = ?8 WHERE id = ?4 AND org_id = ?3 AND {IN_ORG} RETURNING version"
        );
        let version: Option<i64> = sqlx::query_scalar(&sql)
            .bind(kind)
            .bind(id)
            .bind(org_id)
            .bind(secret_id)
            .bind(&update.value_key)
            .bind(&update.value)
            .bind(update.updated_ms)
            .bind(&update.updated_by)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        version.map(version_of).transpose()
    }

    async fn secrets(
        &self,
        scope: &Scope,
        org_id: &str,
        project_id: &str,
    ) -> StoreResult<Vec<SecretMeta>> {
        let sql = format!(
            "SELECT {META_COLS} FROM secrets WHERE org_id = ?3 AND project_id = ?4 AND {IN_ORG} ORDER BY name"
        );
        self.vault_rows(scope, org_id, &sql, &[project_id], meta)
            .await
    }

    async fn secret(
        &self,
        scope: &Scope,
        org_id: &str,
        project_id: &str,
        name: &str,
    ) -> StoreResult<Option<SecretRow>> {
        let sql = format!(
            "SELECT {SECRET_COLS} FROM secrets WHERE org_id = ?3 AND project_id = ?4 AND name = ?5 AND {IN_ORG}"
        );
        let rows = self
            .vault_rows(scope, org_id, &sql, &[project_id, name], secret)
            .await?;
        Ok(rows.into_iter().next())
    }

    async fn delete_secret(
        &self,
        scope: &Scope,
        org_id: &str,
        project_id: &str,
        name: &str,
    ) -> StoreResult<bool> {
        let Some((kind, id)) = actor(scope, org_id) else {
            return Ok(false);
        };
        let sql = format!(
            "DELETE FROM secrets WHERE org_id = ?3 AND project_id = ?4 AND name = ?5 AND {IN_ORG}"
        );
        let done = sqlx::query(&sql)
            .bind(kind)
            .bind(id)
            .bind(org_id)
            .bind(project_id)
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }
}

async fn retire_in_tx(
    conn: &mut sqlx::SqliteConnection,
    columns: &[SealedColumn],
    key_ids: &[String],
) -> StoreResult<u64> {
    // '' is a row whose key could not be told (queued before key ids were kept): it may be
    // sealed by any of them.
    for column in SealedColumn::ALL.iter().filter(|c| columns.contains(c)) {
        let s = sealed(*column);
        let sql = format!(
            "SELECT EXISTS (SELECT 1 FROM {t} WHERE {k} = ?1{live})",
            t = s.table,
            k = s.key,
            live = s.live
        );
        for key_id in key_ids.iter().map(String::as_str).chain([""]) {
            let used: bool = sqlx::query_scalar(&sql)
                .bind(key_id)
                .fetch_one(&mut *conn)
                .await
                .map_err(db_err)?;
            if used {
                return Err(StoreError::Conflict(
                    "a row is still sealed by a key being retired",
                ));
            }
        }
    }
    // Envelopes name a key `<purpose>-v<N>`, the ring's AES rows add a fingerprint: match by
    // purpose and version (or by the exact key id, for an id of another form).
    let mut retired = 0;
    for key_id in key_ids {
        let (purpose, version) = purpose_version(key_id).unwrap_or(("", 0));
        let done = sqlx::query(
            "UPDATE key_ring SET retired = 1 WHERE key_id = ?1 OR (purpose = ?2 AND version = ?3)",
        )
        .bind(key_id)
        .bind(purpose)
        .bind(version)
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
        retired += done.rows_affected();
    }
    Ok(retired)
}

async fn replace_ring_in_tx(
    conn: &mut sqlx::SqliteConnection,
    old_canary: &[u8],
    new_canary: &[u8],
    keys: &[StoredKey],
) -> StoreResult<()> {
    let current: Option<Vec<u8>> = sqlx::query_scalar("SELECT canary FROM key_canary WHERE id = 1")
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_err)?;
    if current.as_deref() != Some(old_canary) {
        return Err(StoreError::Conflict("the master-key canary has changed"));
    }
    sqlx::query("UPDATE key_canary SET canary = ?1 WHERE id = 1")
        .bind(new_canary)
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    for key in keys {
        let done = sqlx::query(
            "UPDATE key_ring SET key_id = ?3, wrapped = ?4, public_key = ?5 WHERE purpose = ?1 AND version = ?2",
        )
        .bind(&key.purpose)
        .bind(i64::from(key.version))
        .bind(&key.key_id)
        .bind(&key.wrapped)
        .bind(key.public_key.as_deref())
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
        if done.rows_affected() != 1 {
            return Err(StoreError::NotFound);
        }
    }
    // A key left out would stay wrapped under the old master key, unopenable after the switch.
    let in_ring: i64 = sqlx::query_scalar("SELECT count(*) FROM key_ring")
        .fetch_one(&mut *conn)
        .await
        .map_err(db_err)?;
    if usize::try_from(in_ring).ok() != Some(keys.len()) {
        return Err(StoreError::Conflict(
            "the key ring holds a key that was not re-wrapped",
        ));
    }
    Ok(())
}

#[async_trait::async_trait]
impl VaultStore for SqliteStore {
    async fn reserve_encryptions(&self, scope: &Scope, key_id: &str, n: u64) -> StoreResult<u64> {
        require_system(scope)?;
        let n = i64::try_from(n).map_err(|_| StoreError::Conflict("reservation too large"))?;
        // One statement: SQLite runs it under the database write lock, so nodes' (connections')
        // reservations add up one after another.
        let total: i64 = sqlx::query_scalar(
            "INSERT INTO key_encryptions (key_id, reserved) VALUES (?1, ?2) \
             ON CONFLICT (key_id) DO UPDATE SET reserved = reserved + excluded.reserved \
             RETURNING reserved",
        )
        .bind(key_id)
        .bind(n)
        .fetch_one(&self.pool)
        .await
        .map_err(db_err)?;
        u64::try_from(total).map_err(|_| StoreError::Corrupt("negative reservation".into()))
    }

    async fn encryptions(&self, scope: &Scope) -> StoreResult<Vec<(String, u64)>> {
        require_system(scope)?;
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT key_id, reserved FROM key_encryptions ORDER BY key_id")
                .fetch_all(&self.pool)
                .await
                .map_err(db_err)?;
        rows.into_iter()
            .map(|(k, n)| {
                u64::try_from(n)
                    .map(|n| (k, n))
                    .map_err(|_| StoreError::Corrupt("negative reservation".into()))
            })
            .collect()
    }

    async fn sealed_counts(&self, scope: &Scope) -> StoreResult<Vec<SealedCount>> {
        require_system(scope)?;
        let mut out = Vec::new();
        for column in SealedColumn::ALL {
            let s = sealed(*column);
            let sql = format!(
                "SELECT {k}, count(*) FROM {t} WHERE {k} IS NOT NULL{live} GROUP BY {k} ORDER BY {k}",
                k = s.key,
                t = s.table,
                live = s.live
            );
            let rows: Vec<(String, i64)> = sqlx::query_as(&sql)
                .fetch_all(&self.pool)
                .await
                .map_err(db_err)?;
            for (key_id, n) in rows {
                out.push(SealedCount {
                    column: *column,
                    key_id,
                    rows: u64::try_from(n).map_err(|_| StoreError::Corrupt("count".into()))?,
                });
            }
        }
        Ok(out)
    }

    async fn sealed_batch(
        &self,
        scope: &Scope,
        column: SealedColumn,
        current_key_id: &str,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<SealedRow>> {
        require_system(scope)?;
        let s = sealed(column);
        let sql = format!(
            "SELECT id, {k}, {e} FROM {t} WHERE {k} IS NOT NULL AND {k} <> ?1 AND id > ?2{live} \
             ORDER BY id LIMIT ?3",
            k = s.key,
            e = s.envelope,
            t = s.table,
            live = s.live
        );
        let rows = sqlx::query(&sql)
            .bind(current_key_id)
            .bind(after.unwrap_or(""))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                Ok(SealedRow {
                    row_id: r.try_get(0).map_err(db_err)?,
                    key_id: r.try_get(1).map_err(db_err)?,
                    envelope: r.try_get(2).map_err(db_err)?,
                })
            })
            .collect()
    }

    async fn replace_sealed(
        &self,
        scope: &Scope,
        column: SealedColumn,
        rows: &[Rewrapped],
    ) -> StoreResult<u64> {
        require_system(scope)?;
        if rows.is_empty() {
            return Ok(0);
        }
        let s = sealed(column);
        // `old` must still be there: a value written since the batch was read wins.
        let sql = format!(
            "UPDATE {t} SET {k} = ?3, {e} = ?4 WHERE id = ?1 AND {e} = ?2{live}",
            t = s.table,
            k = s.key,
            e = s.envelope,
            live = s.live
        );
        let mut conn = self.begin_immediate().await?;
        let mut result = Ok(0);
        // One prepared statement (cached on the connection) per row, all in one transaction.
        for row in rows {
            match sqlx::query(&sql)
                .bind(&row.row_id)
                .bind(&row.old)
                .bind(&row.key_id)
                .bind(&row.new)
                .execute(&mut *conn)
                .await
            {
                Ok(done) => result = result.map(|n| n + done.rows_affected()),
                Err(e) => {
                    result = Err(db_err(e));
                    break;
                }
            }
        }
        Self::end_immediate(conn, result).await
    }

    async fn retire_keys(
        &self,
        scope: &Scope,
        columns: &[SealedColumn],
        key_ids: &[String],
    ) -> StoreResult<u64> {
        require_system(scope)?;
        if key_ids.is_empty() {
            return Ok(0);
        }
        let mut conn = self.begin_immediate().await?;
        let result = retire_in_tx(&mut conn, columns, key_ids).await;
        Self::end_immediate(conn, result).await
    }

    async fn replace_key_ring(
        &self,
        scope: &Scope,
        old_canary: &[u8],
        new_canary: &[u8],
        keys: &[StoredKey],
    ) -> StoreResult<()> {
        require_system(scope)?;
        let distinct: HashSet<(&str, u32)> = keys
            .iter()
            .map(|k| (k.purpose.as_str(), k.version))
            .collect();
        if distinct.len() != keys.len() {
            return Err(StoreError::Conflict("a key is given twice"));
        }
        let mut conn = self.begin_immediate().await?;
        let result = replace_ring_in_tx(&mut conn, old_canary, new_canary, keys).await;
        Self::end_immediate(conn, result).await
    }
}
