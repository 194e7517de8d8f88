//! Inbound webhooks on SQLite (SPEC P2, P3): endpoints, their sealed signing secrets and the
//! inbox of verified events. Like the licensing tables, each statement carries the tenant
//! boundary itself ([`IN_ORG`], plus [`OWN_ORG`] where a row is looked up by its id alone), so
//! the check and the read or write are one step; the permission decision is bastion-core's.
//!
//! Secrets are read only by the system path (ingestion verifies with them), and recording,
//! claiming and finishing events are the system's alone: a request scope is `Forbidden` there.

use bastion_store::{
    EndpointRow, EndpointSecretRow, EventRow, EventStatus, Finish, Recorded, Scope, StoreError,
    StoreResult, WebhookStore,
};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use crate::orgs::IN_ORG;
use crate::reach::{OWN_ORG, Reach, write_err};
use crate::{SqliteStore, db_err, require_system};

const ENDPOINT_COLS: &str =
    "id, org_id, provider, name, config, created_ms, created_by, disabled_ms";
const SECRET_COLS: &str = "id, endpoint_id, org_id, secret_key, secret, created_ms, expires_ms";
const EVENT_COLS: &str = "id, endpoint_id, org_id, provider, event_id, event_type, payload, \
     received_ms, status, attempts, next_attempt_ms, last_error, processed_ms";

/// Due for a claim at the parameter `now`: received or failed and due, or processing with a
/// lapsed lease (its `next_attempt_ms` is the lease's end).
fn due(now: &str) -> String {
    format!("status IN ('received', 'failed', 'processing') AND next_attempt_ms <= {now}")
}

fn endpoint(r: &SqliteRow) -> StoreResult<EndpointRow> {
    Ok(EndpointRow {
        id: r.try_get("id").map_err(db_err)?,
        org_id: r.try_get("org_id").map_err(db_err)?,
        provider: r.try_get("provider").map_err(db_err)?,
        name: r.try_get("name").map_err(db_err)?,
        config: r.try_get("config").map_err(db_err)?,
        created_ms: r.try_get("created_ms").map_err(db_err)?,
        created_by: r.try_get("created_by").map_err(db_err)?,
        disabled_ms: r.try_get("disabled_ms").map_err(db_err)?,
    })
}

fn secret(r: &SqliteRow) -> StoreResult<EndpointSecretRow> {
    Ok(EndpointSecretRow {
        id: r.try_get("id").map_err(db_err)?,
        endpoint_id: r.try_get("endpoint_id").map_err(db_err)?,
        org_id: r.try_get("org_id").map_err(db_err)?,
        secret_key: r.try_get("secret_key").map_err(db_err)?,
        secret: r.try_get("secret").map_err(db_err)?,
        created_ms: r.try_get("created_ms").map_err(db_err)?,
        expires_ms: r.try_get("expires_ms").map_err(db_err)?,
    })
}

fn event(r: &SqliteRow) -> StoreResult<EventRow> {
    let status: String = r.try_get("status").map_err(db_err)?;
    let attempts: i64 = r.try_get("attempts").map_err(db_err)?;
    Ok(EventRow {
        id: r.try_get("id").map_err(db_err)?,
        endpoint_id: r.try_get("endpoint_id").map_err(db_err)?,
        org_id: r.try_get("org_id").map_err(db_err)?,
        provider: r.try_get("provider").map_err(db_err)?,
        event_id: r.try_get("event_id").map_err(db_err)?,
        event_type: r.try_get("event_type").map_err(db_err)?,
        payload: r.try_get("payload").map_err(db_err)?,
        received_ms: r.try_get("received_ms").map_err(db_err)?,
        status: EventStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("webhook event status {status:?}")))?,
        attempts: u32::try_from(attempts)
            .map_err(|_| StoreError::Corrupt("attempts out of range".into()))?,
        next_attempt_ms: r.try_get("next_attempt_ms").map_err(db_err)?,
        last_error: r.try_get("last_error").map_err(db_err)?,
        processed_ms: r.try_get("processed_ms").map_err(db_err)?,
    })
}

/// The secrets of an insert or rotation must name the endpoint they are stored under.
fn check_secret_of(s: &EndpointSecretRow, endpoint_id: &str, org_id: &str) -> StoreResult<()> {
    if s.endpoint_id == endpoint_id && s.org_id == org_id {
        Ok(())
    } else {
        Err(StoreError::NotFound)
    }
}

/// Inserts one secret of an endpoint the caller has already reached, in its transaction.
async fn insert_secret(
    conn: &mut sqlx::SqliteConnection,
    s: &EndpointSecretRow,
) -> StoreResult<()> {
    let sql = format!("INSERT INTO webhook_secrets ({SECRET_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?)");
    sqlx::query(&sql)
        .bind(&s.id)
        .bind(&s.endpoint_id)
        .bind(&s.org_id)
        .bind(&s.secret_key)
        .bind(&s.secret)
        .bind(s.created_ms)
        .bind(s.expires_ms)
        .execute(&mut *conn)
        .await
        .map_err(|e| write_err(e, "secret_exists"))?;
    Ok(())
}

/// [`WebhookStore::rotate_secret`] inside its write transaction.
async fn rotate_in_tx(
    conn: &mut sqlx::SqliteConnection,
    reach: Reach<'_>,
    s: &EndpointSecretRow,
    overlap_until_ms: i64,
) -> StoreResult<()> {
    let sql = format!(
        "SELECT 1 FROM webhook_endpoints WHERE id = ?4 AND org_id = ?5 AND {OWN_ORG} AND {IN_ORG}"
    );
    let found: Option<i64> = sqlx::query_scalar(&sql)
        .bind(reach.kind)
        .bind(reach.id)
        .bind(reach.org)
        .bind(&s.endpoint_id)
        .bind(&s.org_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_err)?;
    if found.is_none() {
        return Err(StoreError::NotFound);
    }
    sqlx::query(
        "UPDATE webhook_secrets SET expires_ms = ?1 \
         WHERE endpoint_id = ?2 AND id <> ?3 AND (expires_ms IS NULL OR expires_ms > ?1)",
    )
    .bind(overlap_until_ms)
    .bind(&s.endpoint_id)
    .bind(&s.id)
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    insert_secret(conn, s).await
}

#[async_trait::async_trait]
impl WebhookStore for SqliteStore {
    async fn insert_endpoint(
        &self,
        scope: &Scope,
        e: &EndpointRow,
        secrets: &[EndpointSecretRow],
    ) -> StoreResult<()> {
        let Some(reach) = Reach::within(scope, &e.org_id) else {
            return Err(StoreError::Forbidden);
        };
        for s in secrets {
            check_secret_of(s, &e.id, &e.org_id)?;
        }
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let sql = format!(
            "INSERT INTO webhook_endpoints ({ENDPOINT_COLS}) \
             SELECT ?4, ?3, ?5, ?6, ?7, ?8, ?9, ?10 WHERE {IN_ORG}"
        );
        let done = reach
            .query(&sql)
            .bind(&e.id)
            .bind(&e.provider)
            .bind(&e.name)
            .bind(&e.config)
            .bind(e.created_ms)
            .bind(&e.created_by)
            .bind(e.disabled_ms)
            .execute(&mut *tx)
            .await
            .map_err(|err| write_err(err, "endpoint_exists"))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Forbidden);
        }
        for s in secrets {
            insert_secret(&mut tx, s).await?;
        }
        tx.commit().await.map_err(db_err)
    }

    async fn endpoint(&self, scope: &Scope, endpoint_id: &str) -> StoreResult<Option<EndpointRow>> {
        let Some(reach) = Reach::of(scope) else {
            return Ok(None);
        };
        let sql = format!(
            "SELECT {ENDPOINT_COLS} FROM webhook_endpoints WHERE id = ?4 AND {OWN_ORG} AND {IN_ORG}"
        );
        let row = reach
            .query(&sql)
            .bind(endpoint_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(endpoint).transpose()
    }

    async fn endpoints(&self, scope: &Scope, org_id: &str) -> StoreResult<Vec<EndpointRow>> {
        let Some(reach) = Reach::within(scope, org_id) else {
            return Ok(Vec::new());
        };
        let sql = format!(
            "SELECT {ENDPOINT_COLS} FROM webhook_endpoints WHERE {OWN_ORG} AND {IN_ORG} \
             ORDER BY name, id"
        );
        let rows = reach
            .query(&sql)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter().map(endpoint).collect()
    }

    async fn delete_endpoint(&self, scope: &Scope, endpoint_id: &str) -> StoreResult<bool> {
        let Some(reach) = Reach::of(scope) else {
            return Ok(false);
        };
        // The foreign keys take the secrets and events along.
        let sql = format!("DELETE FROM webhook_endpoints WHERE id = ?4 AND {OWN_ORG} AND {IN_ORG}");
        let done = reach
            .query(&sql)
            .bind(endpoint_id)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn live_secrets(
        &self,
        scope: &Scope,
        endpoint_id: &str,
        now_ms: i64,
    ) -> StoreResult<Vec<EndpointSecretRow>> {
        // Only ingestion verifies signatures; no request reads a secret back.
        require_system(scope)?;
        let sql = format!(
            "SELECT {SECRET_COLS} FROM webhook_secrets \
             WHERE endpoint_id = ?1 AND (expires_ms IS NULL OR expires_ms > ?2) \
             ORDER BY created_ms DESC, id DESC"
        );
        let rows = sqlx::query(&sql)
            .bind(endpoint_id)
            .bind(now_ms)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter().map(secret).collect()
    }

    async fn rotate_secret(
        &self,
        scope: &Scope,
        s: &EndpointSecretRow,
        overlap_until_ms: i64,
    ) -> StoreResult<()> {
        let Some(reach) = Reach::of(scope) else {
            return Err(StoreError::NotFound);
        };
        // IMMEDIATE: concurrent rotations of one endpoint queue here, so each one expires the
        // secret the previous one added.
        let mut conn = self.begin_immediate().await?;
        let result = rotate_in_tx(&mut conn, reach, s, overlap_until_ms).await;
        SqliteStore::end_immediate(conn, result).await
    }

    async fn record_event(
        &self,
        scope: &Scope,
        ev: &EventRow,
        signed_digest: Option<&[u8; 32]>,
    ) -> StoreResult<Recorded> {
        require_system(scope)?;
        // A received event without a due time is due on arrival.
        let next_attempt_ms = match ev.status {
            EventStatus::Received => ev.next_attempt_ms.or(Some(ev.received_ms)),
            _ => ev.next_attempt_ms,
        };
        // One statement: of concurrent deliveries exactly one inserts; the others find its row.
        let sql = format!(
            "INSERT INTO webhook_events ({EVENT_COLS}, signed_digest) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT DO NOTHING RETURNING {EVENT_COLS}"
        );
        let inserted = sqlx::query(&sql)
            .bind(&ev.id)
            .bind(&ev.endpoint_id)
            .bind(&ev.org_id)
            .bind(&ev.provider)
            .bind(&ev.event_id)
            .bind(&ev.event_type)
            .bind(&ev.payload)
            .bind(ev.received_ms)
            .bind(ev.status.as_str())
            .bind(i64::from(ev.attempts))
            .bind(next_attempt_ms)
            .bind(&ev.last_error)
            .bind(ev.processed_ms)
            .bind(signed_digest.map(|d| d.to_vec()))
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| write_err(e, "event_exists"))?;
        if let Some(row) = inserted {
            return Ok(Recorded::New(event(&row)?));
        }
        let sql = format!(
            "SELECT {EVENT_COLS} FROM webhook_events \
             WHERE endpoint_id = ?1 AND (event_id = ?2 OR signed_digest = ?3) \
             ORDER BY received_ms, id LIMIT 1"
        );
        let existing = sqlx::query(&sql)
            .bind(&ev.endpoint_id)
            .bind(&ev.event_id)
            .bind(signed_digest.map(|d| d.to_vec()))
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        match existing {
            Some(row) => Ok(Recorded::Duplicate(event(&row)?)),
            // Only a deletion of the endpoint in between removes a row that was there.
            None => Err(StoreError::NotFound),
        }
    }

    async fn claim_event(
        &self,
        scope: &Scope,
        event_id: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> StoreResult<Option<EventRow>> {
        require_system(scope)?;
        // One conditional statement: of concurrent claims exactly one matches.
        let sql = format!(
            "UPDATE webhook_events \
             SET status = 'processing', attempts = attempts + 1, next_attempt_ms = ?2 + ?3 \
             WHERE id = ?1 AND {} RETURNING {EVENT_COLS}",
            due("?2")
        );
        let row = sqlx::query(&sql)
            .bind(event_id)
            .bind(now_ms)
            .bind(lease_ms)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(event).transpose()
    }

    async fn finish_event(
        &self,
        scope: &Scope,
        event_id: &str,
        now_ms: i64,
        finish: &Finish,
    ) -> StoreResult<bool> {
        require_system(scope)?;
        let (status, next, error, processed) = match finish {
            Finish::Processed => (EventStatus::Processed, None, None, Some(now_ms)),
            Finish::Failed {
                error,
                retry_at_ms: Some(at),
            } => (EventStatus::Failed, Some(*at), Some(error.as_str()), None),
            Finish::Failed {
                error,
                retry_at_ms: None,
            } => (EventStatus::Dead, None, Some(error.as_str()), None),
        };
        let done = sqlx::query(
            "UPDATE webhook_events SET status = ?2, next_attempt_ms = ?3, \
                    last_error = coalesce(?4, last_error), processed_ms = ?5 \
             WHERE id = ?1 AND status = 'processing'",
        )
        .bind(event_id)
        .bind(status.as_str())
        .bind(next)
        .bind(error)
        .bind(processed)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn due_events(&self, scope: &Scope, now_ms: i64, limit: u32) -> StoreResult<Vec<String>> {
        require_system(scope)?;
        let sql = format!(
            "SELECT id FROM webhook_events WHERE {} ORDER BY next_attempt_ms, id LIMIT ?2",
            due("?1")
        );
        let ids: Vec<String> = sqlx::query_scalar(&sql)
            .bind(now_ms)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(ids)
    }

    async fn event(&self, scope: &Scope, event_id: &str) -> StoreResult<Option<EventRow>> {
        let Some(reach) = Reach::of(scope) else {
            return Ok(None);
        };
        let sql = format!(
            "SELECT {EVENT_COLS} FROM webhook_events WHERE id = ?4 AND {OWN_ORG} AND {IN_ORG}"
        );
        let row = reach
            .query(&sql)
            .bind(event_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(event).transpose()
    }

    async fn events(
        &self,
        scope: &Scope,
        org_id: &str,
        endpoint_id: Option<&str>,
        status: Option<EventStatus>,
        before_ms: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<EventRow>> {
        let Some(reach) = Reach::within(scope, org_id) else {
            return Ok(Vec::new());
        };
        let sql = format!(
            "SELECT {EVENT_COLS} FROM webhook_events \
             WHERE {OWN_ORG} AND (?4 IS NULL OR endpoint_id = ?4) AND (?5 IS NULL OR status = ?5) \
               AND (?6 IS NULL OR received_ms < ?6) AND {IN_ORG} \
             ORDER BY received_ms DESC, id DESC LIMIT ?7"
        );
        let rows = reach
            .query(&sql)
            .bind(endpoint_id)
            .bind(status.map(EventStatus::as_str))
            .bind(before_ms)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter().map(event).collect()
    }

    async fn retry_event(&self, scope: &Scope, event_id: &str, now_ms: i64) -> StoreResult<bool> {
        let Some(reach) = Reach::of(scope) else {
            return Ok(false);
        };
        let sql = format!(
            "UPDATE webhook_events SET status = 'received', next_attempt_ms = ?5 \
             WHERE id = ?4 AND status IN ('failed', 'dead') AND {OWN_ORG} AND {IN_ORG}"
        );
        let done = reach
            .query(&sql)
            .bind(event_id)
            .bind(now_ms)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }
}
