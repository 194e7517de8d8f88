//! Projects, secrets and the vault's system paths on PostgreSQL. The policies of migration 0007
//! make every scope decision for projects and secrets (projects.read/write, secrets.read/write
//! in the row's org): a row they hide reads as absent, a row they refuse to write is
//! `Forbidden`. Budget, status, rewrap, retirement and master-key rotation are system paths.

use std::collections::HashSet;

use bastion_store::{
    ProjectRow, Rewrapped, Scope, SealedColumn, SealedCount, SealedRow, SecretMeta, SecretRow,
    SecretStore, SecretUpdate, StoreError, StoreResult, StoredKey, VaultStore,
};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use crate::{PgStore, db_err, require_system};

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
        SealedColumn::MailBody => ("sealed_key", " AND octet_length(t.sealed) > 0"),
        SealedColumn::SecretValue => ("value_key", ""),
        SealedColumn::WebhookSecret => ("secret_key", ""),
        // In flight: no response yet.
        SealedColumn::IdempotentResponse => ("body_key", " AND t.body IS NOT NULL"),
    };
    Sealed {
        table: column.table(),
        envelope: column.column(),
        key,
        live,
    }
}

/// `<purpose>-v<N>` (the id an envelope names) as its key-ring purpose and version.
fn purpose_version(key_id: &str) -> Option<(&str, i32)> {
    let (purpose, version) = key_id.rsplit_once("-v")?;
    if purpose.is_empty() || version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    version.parse::<i32>().ok().map(|v| (purpose, v))
}

fn version_of(v: i32) -> StoreResult<u32> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt("secret version".into()))
}

fn project(r: &PgRow) -> StoreResult<ProjectRow> {
    Ok(ProjectRow {
        id: r.try_get(0).map_err(db_err)?,
        org_id: r.try_get(1).map_err(db_err)?,
        name: r.try_get(2).map_err(db_err)?,
        created_by: r.try_get(3).map_err(db_err)?,
        created_ms: r.try_get(4).map_err(db_err)?,
    })
}

fn secret(r: &PgRow) -> StoreResult<SecretRow> {
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

fn meta(r: &PgRow) -> StoreResult<SecretMeta> {
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

impl PgStore {
    /// Rows of one query whose parameters are all text; the policies decide what the scope sees.
    pub(crate) async fn scoped_rows<T>(
        &self,
        scope: &Scope,
        sql: &str,
        params: &[&str],
        map: fn(&PgRow) -> StoreResult<T>,
    ) -> StoreResult<Vec<T>> {
        let mut tx = self.begin(scope).await?;
        let mut q = sqlx::query(sql);
        for p in params {
            q = q.bind(*p);
        }
        let rows = q.fetch_all(&mut *tx).await.map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        rows.iter().map(map).collect()
    }

    /// One statement whose parameters are all text, in its own scoped transaction: rows changed.
    pub(crate) async fn scoped_exec(
        &self,
        scope: &Scope,
        sql: &str,
        params: &[&str],
    ) -> StoreResult<u64> {
        let mut tx = self.begin(scope).await?;
        let mut q = sqlx::query(sql);
        for p in params {
            q = q.bind(*p);
        }
        let done = q.execute(&mut *tx).await.map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(done.rows_affected())
    }
}

#[async_trait::async_trait]
impl SecretStore for PgStore {
    async fn create_project(&self, scope: &Scope, row: &ProjectRow) -> StoreResult<()> {
        let mut tx = self.begin(scope).await?;
        // `project_create` admits projects.write holders in the row's org only.
        let sql =
            format!("INSERT INTO secret_projects ({PROJECT_COLS}) VALUES ($1, $2, $3, $4, $5)");
        sqlx::query(&sql)
            .bind(&row.id)
            .bind(&row.org_id)
            .bind(&row.name)
            .bind(&row.created_by)
            .bind(row.created_ms)
            .execute(&mut *tx)
            .await
            .map_err(|e| write_err(e, "the org has a project of that name"))?;
        tx.commit().await.map_err(db_err)
    }

    async fn projects(&self, scope: &Scope, org_id: &str) -> StoreResult<Vec<ProjectRow>> {
        let sql = format!(
            "SELECT {PROJECT_COLS} FROM secret_projects WHERE org_id = $1 ORDER BY name, id"
        );
        self.scoped_rows(scope, &sql, &[org_id], project).await
    }

    async fn project(
        &self,
        scope: &Scope,
        org_id: &str,
        project_id: &str,
    ) -> StoreResult<Option<ProjectRow>> {
        let sql =
            format!("SELECT {PROJECT_COLS} FROM secret_projects WHERE org_id = $1 AND id = $2");
        let rows = self
            .scoped_rows(scope, &sql, &[org_id, project_id], project)
            .await?;
        Ok(rows.into_iter().next())
    }

    async fn delete_project(
        &self,
        scope: &Scope,
        org_id: &str,
        project_id: &str,
    ) -> StoreResult<bool> {
        // The cascade to the project's secrets runs with the owner's rights, past row security
        // (tested: a Manager's deletion leaves no secret behind).
        let n = self
            .scoped_exec(
                scope,
                "DELETE FROM secret_projects WHERE org_id = $1 AND id = $2",
                &[org_id, project_id],
            )
            .await?;
        Ok(n == 1)
    }

    async fn insert_secret(&self, scope: &Scope, row: &SecretRow) -> StoreResult<()> {
        let version = i32::try_from(row.version)
            .map_err(|_| StoreError::Conflict("secret version out of range"))?;
        let mut tx = self.begin(scope).await?;
        // `secret_create` checks the org first (Forbidden); then the composite key (project_id,
        // org_id) refuses a project that is not that org's (NotFound).
        let sql = format!(
            "INSERT INTO secrets ({SECRET_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        );
        sqlx::query(&sql)
            .bind(&row.id)
            .bind(&row.org_id)
            .bind(&row.project_id)
            .bind(&row.name)
            .bind(&row.value_key)
            .bind(&row.value)
            .bind(version)
            .bind(row.created_ms)
            .bind(row.updated_ms)
            .bind(&row.updated_by)
            .execute(&mut *tx)
            .await
            .map_err(|e| write_err(e, "the project has a secret of that name"))?;
        tx.commit().await.map_err(db_err)
    }

    async fn update_secret(
        &self,
        scope: &Scope,
        org_id: &str,
        secret_id: &str,
        update: &SecretUpdate,
    ) -> StoreResult<Option<u32>> {
        let mut tx = self.begin(scope).await?;
        let version: Option<i32> = sqlx::query_scalar(
            "UPDATE secrets SET value_key = $3, value = $4, version = version + 1, updated_ms = $5, \
             updated_by = $6 WHERE id = $1 AND org_id = $2 RETURNING version",
        )
        .bind(secret_id)
        .bind(org_id)
        .bind(&update.value_key)
        .bind(&update.value)
        .bind(update.updated_ms)
        .bind(&update.updated_by)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        version.map(version_of).transpose()
    }

    async fn secrets(
        &self,
        scope: &Scope,
        org_id: &str,
        project_id: &str,
    ) -> StoreResult<Vec<SecretMeta>> {
        let sql = format!(
            "SELECT {META_COLS} FROM secrets WHERE org_id = $1 AND project_id = $2 ORDER BY name"
        );
        self.scoped_rows(scope, &sql, &[org_id, project_id], meta)
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
            "SELECT {SECRET_COLS} FROM secrets WHERE org_id = $1 AND project_id = $2 AND name = $3"
        );
        let rows = self
            .scoped_rows(scope, &sql, &[org_id, project_id, name], secret)
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
        let n = self
            .scoped_exec(
                scope,
                "DELETE FROM secrets WHERE org_id = $1 AND project_id = $2 AND name = $3",
                &[org_id, project_id, name],
            )
            .await?;
        Ok(n == 1)
    }
}

async fn retire_in_tx(
    conn: &mut PgConnection,
    columns: &[SealedColumn],
    key_ids: &[String],
) -> StoreResult<u64> {
    let columns: Vec<SealedColumn> = SealedColumn::ALL
        .iter()
        .copied()
        .filter(|c| columns.contains(c))
        .collect();
    if !columns.is_empty() {
        // SHARE mode waits out writers in flight and holds new ones until commit, so a row
        // sealed by a retiring key cannot commit between this check and the retirement.
        let tables: Vec<&str> = columns.iter().map(|c| c.table()).collect();
        sqlx::query(&format!("LOCK TABLE {} IN SHARE MODE", tables.join(", ")))
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
    }
    // '' is a row whose key could not be told (queued before key ids were kept): it may be
    // sealed by any of them.
    let mut held: Vec<&str> = key_ids.iter().map(String::as_str).collect();
    held.push("");
    for column in &columns {
        let s = sealed(*column);
        let sql = format!(
            "SELECT EXISTS (SELECT 1 FROM {t} t WHERE t.{k} = ANY($1){live})",
            t = s.table,
            k = s.key,
            live = s.live
        );
        let used: bool = sqlx::query_scalar(&sql)
            .bind(&held)
            .fetch_one(&mut *conn)
            .await
            .map_err(db_err)?;
        if used {
            return Err(StoreError::Conflict(
                "a row is still sealed by a key being retired",
            ));
        }
    }
    // Envelopes name a key `<purpose>-v<N>`, the ring's AES rows add a fingerprint: match by
    // purpose and version (or by the exact key id, for an id of another form).
    let (purposes, versions): (Vec<&str>, Vec<i32>) =
        key_ids.iter().filter_map(|k| purpose_version(k)).unzip();
    let done = sqlx::query(
        "UPDATE key_ring SET retired = true WHERE key_id = ANY($1) \
         OR (purpose, version) IN (SELECT * FROM unnest($2::text[], $3::integer[]))",
    )
    .bind(key_ids)
    .bind(&purposes)
    .bind(&versions)
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    Ok(done.rows_affected())
}

async fn replace_ring_in_tx(
    conn: &mut PgConnection,
    old_canary: &[u8],
    new_canary: &[u8],
    keys: &[StoredKey],
) -> StoreResult<()> {
    // The row lock serialises rotations; the table lock holds off a key inserted meanwhile,
    // which would stay wrapped under the old master key.
    let current: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT canary FROM key_canary WHERE id = 1 FOR UPDATE")
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_err)?;
    if current.as_deref() != Some(old_canary) {
        return Err(StoreError::Conflict("the master-key canary has changed"));
    }
    sqlx::query("LOCK TABLE key_ring IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    sqlx::query("UPDATE key_canary SET canary = $1 WHERE id = 1")
        .bind(new_canary)
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    let n = keys.len();
    let (mut purposes, mut versions, mut ids, mut wrapped, mut publics) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for k in keys {
        purposes.push(k.purpose.as_str());
        versions.push(
            i32::try_from(k.version)
                .map_err(|_| StoreError::Conflict("key version out of range"))?,
        );
        ids.push(k.key_id.as_str());
        wrapped.push(k.wrapped.as_slice());
        publics.push(k.public_key.as_deref());
    }
    let done = sqlx::query(
        "UPDATE key_ring k SET key_id = v.key_id, wrapped = v.wrapped, public_key = v.public_key \
         FROM unnest($1::text[], $2::integer[], $3::text[], $4::bytea[], $5::bytea[]) \
              AS v(purpose, version, key_id, wrapped, public_key) \
         WHERE k.purpose = v.purpose AND k.version = v.version",
    )
    .bind(&purposes)
    .bind(&versions)
    .bind(&ids)
    .bind(&wrapped)
    .bind(&publics)
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    if usize::try_from(done.rows_affected()).ok() != Some(n) {
        return Err(StoreError::NotFound);
    }
    // A key left out would stay wrapped under the old master key, unopenable after the switch.
    let in_ring: i64 = sqlx::query_scalar("SELECT count(*) FROM key_ring")
        .fetch_one(&mut *conn)
        .await
        .map_err(db_err)?;
    if usize::try_from(in_ring).ok() != Some(n) {
        return Err(StoreError::Conflict(
            "the key ring holds a key that was not re-wrapped",
        ));
    }
    Ok(())
}

#[async_trait::async_trait]
impl VaultStore for PgStore {
    async fn reserve_encryptions(&self, scope: &Scope, key_id: &str, n: u64) -> StoreResult<u64> {
        require_system(scope)?;
        let n = i64::try_from(n).map_err(|_| StoreError::Conflict("reservation too large"))?;
        let mut tx = self.begin(scope).await?;
        // One upsert: a concurrent reserver waits on the row lock, then adds to the new total.
        let total: i64 = sqlx::query_scalar(
            "INSERT INTO key_encryptions AS e (key_id, reserved) VALUES ($1, $2) \
             ON CONFLICT (key_id) DO UPDATE SET reserved = e.reserved + excluded.reserved \
             RETURNING reserved",
        )
        .bind(key_id)
        .bind(n)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        u64::try_from(total).map_err(|_| StoreError::Corrupt("negative reservation".into()))
    }

    async fn encryptions(&self, scope: &Scope) -> StoreResult<Vec<(String, u64)>> {
        require_system(scope)?;
        let mut tx = self.begin(scope).await?;
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT key_id, reserved FROM key_encryptions ORDER BY key_id")
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
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
        let mut tx = self.begin(scope).await?;
        let mut out = Vec::new();
        for column in SealedColumn::ALL {
            let s = sealed(*column);
            let sql = format!(
                "SELECT t.{k}, count(*) FROM {t} t WHERE t.{k} IS NOT NULL{live} \
                 GROUP BY t.{k} ORDER BY t.{k}",
                k = s.key,
                t = s.table,
                live = s.live
            );
            let rows: Vec<(String, i64)> = sqlx::query_as(&sql)
                .fetch_all(&mut *tx)
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
        tx.commit().await.map_err(db_err)?;
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
            "SELECT t.id, t.{k}, t.{e} FROM {t} t \
             WHERE t.{k} IS NOT NULL AND t.{k} <> $1 AND t.id > $2{live} ORDER BY t.id LIMIT $3",
            k = s.key,
            e = s.envelope,
            t = s.table,
            live = s.live
        );
        let mut tx = self.begin(scope).await?;
        let rows = sqlx::query(&sql)
            .bind(current_key_id)
            .bind(after.unwrap_or(""))
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
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
        let n = rows.len();
        let (mut ids, mut olds, mut keys, mut news) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for r in rows {
            ids.push(r.row_id.as_str());
            olds.push(r.old.as_slice());
            keys.push(r.key_id.as_str());
            news.push(r.new.as_slice());
        }
        // One set-based statement per batch; `old` must still be there, so a value written
        // since the batch was read wins.
        let sql = format!(
            "UPDATE {t} t SET {k} = v.new_key, {e} = v.new_env \
             FROM unnest($1::text[], $2::bytea[], $3::text[], $4::bytea[]) AS v(row_id, old_env, new_key, new_env) \
             WHERE t.id = v.row_id AND t.{e} = v.old_env{live}",
            t = s.table,
            k = s.key,
            e = s.envelope,
            live = s.live
        );
        let mut tx = self.begin(scope).await?;
        let done = sqlx::query(&sql)
            .bind(&ids)
            .bind(&olds)
            .bind(&keys)
            .bind(&news)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(done.rows_affected())
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
        let mut tx = self.begin(scope).await?;
        let retired = retire_in_tx(&mut tx, columns, key_ids).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(retired)
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
        let mut tx = self.begin(scope).await?;
        replace_ring_in_tx(&mut tx, old_canary, new_canary, keys).await?;
        tx.commit().await.map_err(db_err)
    }
}
