//! Inbound webhooks on PostgreSQL (SPEC P2, P3): endpoints, their sealed signing secrets and
//! the inbox of verified events. The policies of migration 0010 make every scope decision
//! (webhooks.read to see endpoints and events, webhooks.manage to add or delete endpoints and
//! retry events, in the row's org): a row they hide reads as absent, a write they refuse is
//! `Forbidden`. Composite keys tie each secret and event to its endpoint's org.
//!
//! Signing secrets are the system's alone (the app role has no grant on them): only ingestion,
//! `Scope::System("webhooks")`, reads them. A request that adds secrets (a new endpoint, a
//! rotation) is first admitted by the endpoint's policy, then switches its transaction to the
//! named system path [`SECRETS_SCOPE`] for the secrets' statements, so the endpoint and its
//! secrets still commit together. Recording, claiming and finishing events are system paths.

use bastion_store::{
    EndpointRow, EndpointSecretRow, EventRow, EventStatus, Finish, Recorded, Scope, StoreError,
    StoreResult, WebhookStore,
};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use crate::{PgStore, db_err, require_system};

/// The system path that writes an endpoint's secrets for a request scope.
const SECRETS_SCOPE: Scope = Scope::System("webhook_secrets");

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

/// A write's error: a duplicate is `duplicate`; a parent that is not there, or is of another
/// org, is `NotFound`.
fn write_err(e: sqlx::Error, duplicate: &'static str) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict(duplicate),
        sqlx::Error::Database(d) if d.is_foreign_key_violation() => StoreError::NotFound,
        _ => db_err(e),
    }
}

fn endpoint(r: &PgRow) -> StoreResult<EndpointRow> {
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

fn secret(r: &PgRow) -> StoreResult<EndpointSecretRow> {
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

fn event(r: &PgRow) -> StoreResult<EventRow> {
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

/// Inserts one secret in the open transaction (which runs as a system path by now).
async fn insert_secret(conn: &mut PgConnection, s: &EndpointSecretRow) -> StoreResult<()> {
    let sql =
        format!("INSERT INTO webhook_secrets ({SECRET_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7)");
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

impl PgStore {
    /// Switches the open transaction of a request scope to [`SECRETS_SCOPE`] (the app role has
    /// no grant on the secrets); a system scope's transaction stays as it is.
    async fn to_secrets_path(&self, conn: &mut PgConnection, scope: &Scope) -> StoreResult<()> {
        if scope.is_system() {
            return Ok(());
        }
        let (role, ctx) = self.signed_context(&SECRETS_SCOPE)?;
        sqlx::query("SELECT set_config('role', $1, true), set_config('bastion.ctx', $2, true)")
            .bind(role)
            .bind(ctx)
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl WebhookStore for PgStore {
    async fn insert_endpoint(
        &self,
        scope: &Scope,
        e: &EndpointRow,
        secrets: &[EndpointSecretRow],
    ) -> StoreResult<()> {
        for s in secrets {
            check_secret_of(s, &e.id, &e.org_id)?;
        }
        let mut tx = self.begin(scope).await?;
        // `endpoint_create` admits webhooks.manage holders in the row's org only.
        let sql = format!(
            "INSERT INTO webhook_endpoints ({ENDPOINT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        );
        sqlx::query(&sql)
            .bind(&e.id)
            .bind(&e.org_id)
            .bind(&e.provider)
            .bind(&e.name)
            .bind(&e.config)
            .bind(e.created_ms)
            .bind(&e.created_by)
            .bind(e.disabled_ms)
            .execute(&mut *tx)
            .await
            .map_err(|err| write_err(err, "endpoint_exists"))?;
        if !secrets.is_empty() {
            // Admitted above for this very endpoint, which the secrets name (checked).
            self.to_secrets_path(&mut tx, scope).await?;
            for s in secrets {
                insert_secret(&mut tx, s).await?;
            }
        }
        tx.commit().await.map_err(db_err)
    }

    async fn endpoint(&self, scope: &Scope, endpoint_id: &str) -> StoreResult<Option<EndpointRow>> {
        let sql = format!("SELECT {ENDPOINT_COLS} FROM webhook_endpoints WHERE id = $1");
        let rows = self
            .scoped_rows(scope, &sql, &[endpoint_id], endpoint)
            .await?;
        Ok(rows.into_iter().next())
    }

    async fn endpoints(&self, scope: &Scope, org_id: &str) -> StoreResult<Vec<EndpointRow>> {
        let sql = format!(
            "SELECT {ENDPOINT_COLS} FROM webhook_endpoints WHERE org_id = $1 ORDER BY name, id"
        );
        self.scoped_rows(scope, &sql, &[org_id], endpoint).await
    }

    async fn delete_endpoint(&self, scope: &Scope, endpoint_id: &str) -> StoreResult<bool> {
        // `endpoint_delete` admits webhooks.manage holders; the foreign keys take the secrets
        // and events along.
        let n = self
            .scoped_exec(
                scope,
                "DELETE FROM webhook_endpoints WHERE id = $1",
                &[endpoint_id],
            )
            .await?;
        Ok(n == 1)
    }

    async fn live_secrets(
        &self,
        scope: &Scope,
        endpoint_id: &str,
        now_ms: i64,
    ) -> StoreResult<Vec<EndpointSecretRow>> {
        // Only ingestion verifies signatures; the app role has no grant here either.
        require_system(scope)?;
        let mut tx = self.begin(scope).await?;
        let sql = format!(
            "SELECT {SECRET_COLS} FROM webhook_secrets \
             WHERE endpoint_id = $1 AND (expires_ms IS NULL OR expires_ms > $2) \
             ORDER BY created_ms DESC, id DESC"
        );
        let rows = sqlx::query(&sql)
            .bind(endpoint_id)
            .bind(now_ms)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        rows.iter().map(secret).collect()
    }

    async fn rotate_secret(
        &self,
        scope: &Scope,
        s: &EndpointSecretRow,
        overlap_until_ms: i64,
    ) -> StoreResult<()> {
        let mut tx = self.begin(scope).await?;
        if !scope.is_system() {
            // Under the caller's own policies: the endpoint must be visible (webhooks.read)
            // and the caller must hold webhooks.manage in its org.
            let manage: Option<bool> = sqlx::query_scalar(
                "SELECT coalesce(ARRAY['o:' || org_id] && bastion.scope_tokens('webhooks.manage'), false) \
                 FROM webhook_endpoints WHERE id = $1 AND org_id = $2",
            )
            .bind(&s.endpoint_id)
            .bind(&s.org_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
            match manage {
                None => return Err(StoreError::NotFound),
                Some(false) => return Err(StoreError::Forbidden),
                Some(true) => {}
            }
            self.to_secrets_path(&mut tx, scope).await?;
        }
        // The endpoint's row lock serialises rotations of one endpoint, so each one sees (and
        // expires) the secret the previous one added.
        let locked: Option<String> = sqlx::query_scalar(
            "SELECT id FROM webhook_endpoints WHERE id = $1 AND org_id = $2 FOR NO KEY UPDATE",
        )
        .bind(&s.endpoint_id)
        .bind(&s.org_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
        if locked.is_none() {
            return Err(StoreError::NotFound);
        }
        sqlx::query(
            "UPDATE webhook_secrets SET expires_ms = $1 \
             WHERE endpoint_id = $2 AND id <> $3 AND (expires_ms IS NULL OR expires_ms > $1)",
        )
        .bind(overlap_until_ms)
        .bind(&s.endpoint_id)
        .bind(&s.id)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        insert_secret(&mut tx, s).await?;
        tx.commit().await.map_err(db_err)
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
        let mut tx = self.begin(scope).await?;
        // ON CONFLICT waits out a concurrent insert of the same delivery and then does nothing,
        // so exactly one caller inserts; the others read its committed row next.
        let sql = format!(
            "INSERT INTO webhook_events ({EVENT_COLS}, signed_digest) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
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
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| write_err(e, "event_exists"))?;
        let recorded = match inserted {
            Some(row) => Recorded::New(event(&row)?),
            None => {
                let sql = format!(
                    "SELECT {EVENT_COLS} FROM webhook_events \
                     WHERE endpoint_id = $1 AND (event_id = $2 OR signed_digest = $3) \
                     ORDER BY received_ms, id LIMIT 1"
                );
                let existing = sqlx::query(&sql)
                    .bind(&ev.endpoint_id)
                    .bind(&ev.event_id)
                    .bind(signed_digest.map(|d| d.to_vec()))
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_err)?;
                match existing {
                    Some(row) => Recorded::Duplicate(event(&row)?),
                    // Only a deletion of the endpoint in between removes a row that was there.
                    None => return Err(StoreError::NotFound),
                }
            }
        };
        tx.commit().await.map_err(db_err)?;
        Ok(recorded)
    }

    async fn claim_event(
        &self,
        scope: &Scope,
        event_id: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> StoreResult<Option<EventRow>> {
        require_system(scope)?;
        let mut tx = self.begin(scope).await?;
        // One conditional statement: a concurrent claim waits for the row lock, then finds the
        // row processing under a fresh lease and no longer matches.
        let sql = format!(
            "UPDATE webhook_events \
             SET status = 'processing', attempts = attempts + 1, next_attempt_ms = $2 + $3 \
             WHERE id = $1 AND {} RETURNING {EVENT_COLS}",
            due("$2")
        );
        let row = sqlx::query(&sql)
            .bind(event_id)
            .bind(now_ms)
            .bind(lease_ms)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
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
        let mut tx = self.begin(scope).await?;
        let done = sqlx::query(
            "UPDATE webhook_events SET status = $2, next_attempt_ms = $3, \
                    last_error = coalesce($4, last_error), processed_ms = $5 \
             WHERE id = $1 AND status = 'processing'",
        )
        .bind(event_id)
        .bind(status.as_str())
        .bind(next)
        .bind(error)
        .bind(processed)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn due_events(&self, scope: &Scope, now_ms: i64, limit: u32) -> StoreResult<Vec<String>> {
        require_system(scope)?;
        let mut tx = self.begin(scope).await?;
        let sql = format!(
            "SELECT id FROM webhook_events WHERE {} ORDER BY next_attempt_ms, id LIMIT $2",
            due("$1")
        );
        let ids: Vec<String> = sqlx::query_scalar(&sql)
            .bind(now_ms)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(ids)
    }

    async fn event(&self, scope: &Scope, event_id: &str) -> StoreResult<Option<EventRow>> {
        let sql = format!("SELECT {EVENT_COLS} FROM webhook_events WHERE id = $1");
        let rows = self.scoped_rows(scope, &sql, &[event_id], event).await?;
        Ok(rows.into_iter().next())
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
        let mut tx = self.begin(scope).await?;
        // `event_read` admits webhooks.read holders in the row's org only.
        let sql = format!(
            "SELECT {EVENT_COLS} FROM webhook_events \
             WHERE org_id = $1 AND ($2::text IS NULL OR endpoint_id = $2) \
               AND ($3::text IS NULL OR status = $3) AND ($4::bigint IS NULL OR received_ms < $4) \
             ORDER BY received_ms DESC, id DESC LIMIT $5"
        );
        let rows = sqlx::query(&sql)
            .bind(org_id)
            .bind(endpoint_id)
            .bind(status.map(EventStatus::as_str))
            .bind(before_ms)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        rows.iter().map(event).collect()
    }

    async fn retry_event(&self, scope: &Scope, event_id: &str, now_ms: i64) -> StoreResult<bool> {
        // `event_retry` admits webhooks.manage holders, and only back to `received`.
        let mut tx = self.begin(scope).await?;
        let done = sqlx::query(
            "UPDATE webhook_events SET status = 'received', next_attempt_ms = $2 \
             WHERE id = $1 AND status IN ('failed', 'dead')",
        )
        .bind(event_id)
        .bind(now_ms)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }
}
