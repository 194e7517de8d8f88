//! Idempotency keys on PostgreSQL (SPEC P4): a system path only (`bastion_system`; the app role
//! has no grant on the table); the owner column is the isolation.

use bastion_store::{Begin, IdempotencyStore, Scope, StoreError, StoreResult, StoredResponse};
use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::{PgStore, db_err, require_system};

/// Claims the key inside one transaction. `ON CONFLICT DO UPDATE` locks the conflicting row
/// even when its `WHERE` leaves it unchanged, so the row read next is the one that won and
/// stays until this transaction ends; a concurrent insert of the same key waits for this one.
async fn begin_in_tx(
    conn: &mut sqlx::PgConnection,
    owner: &str,
    key: &str,
    request_hash: &[u8; 32],
    row_id: &str,
    now_ms: i64,
    expires_ms: i64,
) -> StoreResult<Begin> {
    // Inserts a free key, or replaces a row that expired (a new id, no response).
    let claimed: Option<String> = sqlx::query_scalar(
        "INSERT INTO idempotency_keys (id, owner, key, request_hash, created_ms, expires_ms) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (owner, key) DO UPDATE SET \
           id = excluded.id, request_hash = excluded.request_hash, status = NULL, headers = NULL, \
           body_key = NULL, body = NULL, created_ms = excluded.created_ms, expires_ms = excluded.expires_ms \
         WHERE idempotency_keys.expires_ms <= $5 \
         RETURNING id",
    )
    .bind(row_id)
    .bind(owner)
    .bind(key)
    .bind(&request_hash[..])
    .bind(now_ms)
    .bind(expires_ms)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_err)?;
    if claimed.is_some() {
        return Ok(Begin::Started {
            row_id: row_id.to_owned(),
        });
    }
    // Taken and live: the row lock keeps it there until this transaction ends.
    let row = sqlx::query(
        "SELECT id, request_hash = $3 AS same, status, headers::text AS headers, body_key, body \
         FROM idempotency_keys WHERE owner = $1 AND key = $2",
    )
    .bind(owner)
    .bind(key)
    .bind(&request_hash[..])
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_err)?;
    let Some(row) = row else {
        return Err(StoreError::Corrupt(
            "an idempotency key conflicted but is not there".into(),
        ));
    };
    existing(&row)
}

/// What a live row that another request claimed means for this one.
fn existing(row: &PgRow) -> StoreResult<Begin> {
    let same: bool = row.try_get("same").map_err(db_err)?;
    if !same {
        return Ok(Begin::Mismatch);
    }
    let body: Option<Vec<u8>> = row.try_get("body").map_err(db_err)?;
    let Some(body) = body else {
        return Ok(Begin::InFlight);
    };
    let status: Option<i32> = row.try_get("status").map_err(db_err)?;
    let headers: Option<String> = row.try_get("headers").map_err(db_err)?;
    let body_key: Option<String> = row.try_get("body_key").map_err(db_err)?;
    let (Some(status), Some(headers), Some(body_key)) = (status, headers, body_key) else {
        return Err(StoreError::Corrupt(
            "a completed idempotency key lacks its response".into(),
        ));
    };
    let status = u16::try_from(status)
        .map_err(|_| StoreError::Corrupt("idempotent response status".into()))?;
    Ok(Begin::Completed {
        row_id: row.try_get("id").map_err(db_err)?,
        response: StoredResponse {
            status,
            headers,
            body_key,
            body,
        },
    })
}

#[async_trait::async_trait]
impl IdempotencyStore for PgStore {
    #[tracing::instrument(skip_all)]
    async fn begin(
        &self,
        scope: &Scope,
        owner: &str,
        key: &str,
        request_hash: &[u8; 32],
        row_id: &str,
        now_ms: i64,
        expires_ms: i64,
    ) -> StoreResult<Begin> {
        require_system(scope)?;
        let mut tx = self.begin(scope).await?;
        let outcome = begin_in_tx(
            &mut tx,
            owner,
            key,
            request_hash,
            row_id,
            now_ms,
            expires_ms,
        )
        .await?;
        tx.commit().await.map_err(db_err)?;
        Ok(outcome)
    }

    #[tracing::instrument(skip_all)]
    async fn complete(
        &self,
        scope: &Scope,
        row_id: &str,
        response: &StoredResponse,
    ) -> StoreResult<bool> {
        require_system(scope)?;
        let mut tx = self.begin(scope).await?;
        let done = sqlx::query(
            "UPDATE idempotency_keys SET status = $1, headers = $2::json, body_key = $3, body = $4 \
             WHERE id = $5 AND body IS NULL",
        )
        .bind(i32::from(response.status))
        .bind(&response.headers)
        .bind(&response.body_key)
        .bind(&response.body)
        .bind(row_id)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    #[tracing::instrument(skip_all)]
    async fn release(&self, scope: &Scope, row_id: &str) -> StoreResult<bool> {
        require_system(scope)?;
        let mut tx = self.begin(scope).await?;
        let done = sqlx::query("DELETE FROM idempotency_keys WHERE id = $1 AND body IS NULL")
            .bind(row_id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    #[tracing::instrument(skip_all)]
    async fn purge_idempotency(&self, scope: &Scope, now_ms: i64, limit: u32) -> StoreResult<u64> {
        require_system(scope)?;
        let mut tx = self.begin(scope).await?;
        let done = sqlx::query(
            "DELETE FROM idempotency_keys WHERE id IN \
             (SELECT id FROM idempotency_keys WHERE expires_ms <= $1 ORDER BY expires_ms, id LIMIT $2 \
              FOR UPDATE SKIP LOCKED)",
        )
        .bind(now_ms)
        .bind(i64::from(limit))
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(done.rows_affected())
    }
}
