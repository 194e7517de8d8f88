//! Magic links, the email outbox and cleanup on PostgreSQL: system paths (`bastion_system`);
//! the app role has no grant on these tables.

use bastion_store::{
    ClaimedMail, CleanupStore, ConsumedLink, MagicLinkRow, MagicLinkStore, MailCounts, MailStore,
    OutboundMail, Purgeable, Scope, StoreError, StoreResult,
};
use sqlx::Row;

use crate::{PgStore, db_err, require_system};

pub(crate) async fn insert_mail(
    conn: &mut sqlx::PgConnection,
    m: &OutboundMail,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO email_outbox (id, recipient, template, sealed, sealed_key, created_ms, next_attempt_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $6)",
    )
    .bind(&m.id)
    .bind(&m.recipient)
    .bind(&m.template)
    .bind(&m.sealed)
    .bind(&m.sealed_key)
    .bind(m.created_ms)
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    Ok(())
}

#[async_trait::async_trait]
impl MagicLinkStore for PgStore {
    async fn insert_link(
        &self,
        scope: &Scope,
        link: &MagicLinkRow,
        mail: Option<&OutboundMail>,
    ) -> StoreResult<()> {
        require_system(scope)?;
        let mut tx = self.begin(scope).await?;
        sqlx::query(
            "DELETE FROM magic_links WHERE purpose = $1 AND subject = $2 AND consumed_ms IS NULL",
        )
        .bind(&link.purpose)
        .bind(&link.subject)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        sqlx::query(
            "INSERT INTO magic_links (token_hash, purpose, subject, email, created_ms, expires_ms) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&link.token_hash[..])
        .bind(&link.purpose)
        .bind(&link.subject)
        .bind(&link.email)
        .bind(link.created_ms)
        .bind(link.expires_ms)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        if let Some(mail) = mail {
            insert_mail(&mut tx, mail).await?;
        }
        tx.commit().await.map_err(db_err)
    }

    async fn consume_link(
        &self,
        scope: &Scope,
        token_hash: &[u8; 32],
        purpose: &str,
        now_ms: i64,
    ) -> StoreResult<Option<ConsumedLink>> {
        require_system(scope)?;
        let mut tx = self.begin(scope).await?;
        // A concurrent consumer waits on the row lock, then re-checks `consumed_ms IS NULL`.
        let row = sqlx::query(
            "UPDATE magic_links l SET consumed_ms = $1 \
             WHERE l.token_hash = $2 AND l.purpose = $3 AND l.consumed_ms IS NULL AND l.expires_ms > $1 \
               AND NOT EXISTS (SELECT 1 FROM magic_links n WHERE n.purpose = l.purpose \
                               AND n.subject = l.subject AND n.id > l.id) \
             RETURNING l.purpose, l.subject, l.email",
        )
        .bind(now_ms)
        .bind(&token_hash[..])
        .bind(purpose)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        row.map(|r| {
            Ok(ConsumedLink {
                purpose: r.try_get(0).map_err(db_err)?,
                subject: r.try_get(1).map_err(db_err)?,
                email: r.try_get(2).map_err(db_err)?,
            })
        })
        .transpose()
    }
}

#[async_trait::async_trait]
impl MailStore for PgStore {
    async fn enqueue_mail(&self, scope: &Scope, mail: &OutboundMail) -> StoreResult<()> {
        require_system(scope)?;
        let mut tx = self.begin(scope).await?;
        insert_mail(&mut tx, mail).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn claim_mail(
        &self,
        scope: &Scope,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<ClaimedMail>> {
        require_system(scope)?;
        let mut tx = self.begin(scope).await?;
        // SKIP LOCKED: dispatchers on other nodes take other messages instead of waiting.
        let rows = sqlx::query(
            "UPDATE email_outbox SET lease_until_ms = $1 + $2, attempts = attempts + 1 \
             WHERE id IN (SELECT id FROM email_outbox \
                          WHERE sent_ms IS NULL AND failed_ms IS NULL AND next_attempt_ms <= $1 AND lease_until_ms <= $1 \
                          ORDER BY next_attempt_ms, id LIMIT $3 FOR UPDATE SKIP LOCKED) \
             RETURNING id, recipient, template, sealed, attempts",
        )
        .bind(now_ms)
        .bind(lease_ms)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        rows.iter()
            .map(|r| {
                let attempts: i32 = r.try_get(4).map_err(db_err)?;
                Ok(ClaimedMail {
                    id: r.try_get(0).map_err(db_err)?,
                    recipient: r.try_get(1).map_err(db_err)?,
                    template: r.try_get(2).map_err(db_err)?,
                    sealed: r.try_get(3).map_err(db_err)?,
                    attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                })
            })
            .collect()
    }

    async fn mail_sent(&self, scope: &Scope, id: &str, now_ms: i64) -> StoreResult<()> {
        require_system(scope)?;
        let mut tx = self.begin(scope).await?;
        sqlx::query(
            "UPDATE email_outbox SET sent_ms = $1, sealed = '\\x'::bytea, sealed_key = NULL, lease_until_ms = 0, last_error = NULL WHERE id = $2",
        )
        .bind(now_ms)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)
    }

    async fn mail_failed(
        &self,
        scope: &Scope,
        id: &str,
        now_ms: i64,
        retry_at_ms: Option<i64>,
        error: &str,
    ) -> StoreResult<()> {
        require_system(scope)?;
        let mut tx = self.begin(scope).await?;
        let q = match retry_at_ms {
            Some(at) => sqlx::query(
                "UPDATE email_outbox SET next_attempt_ms = $1, lease_until_ms = 0, last_error = $2 WHERE id = $3",
            )
            .bind(at),
            None => sqlx::query(
                "UPDATE email_outbox SET failed_ms = $1, sealed = '\\x'::bytea, sealed_key = NULL, lease_until_ms = 0, last_error = $2 WHERE id = $3",
            )
            .bind(now_ms),
        };
        q.bind(error)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)
    }

    async fn mail_counts(&self, scope: &Scope) -> StoreResult<MailCounts> {
        require_system(scope)?;
        let mut tx = self.begin(scope).await?;
        let (pending, sent, failed): (i64, i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE sent_ms IS NULL AND failed_ms IS NULL), \
                    count(*) FILTER (WHERE sent_ms IS NOT NULL), count(*) FILTER (WHERE failed_ms IS NOT NULL) \
             FROM email_outbox",
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        let n = |v: i64| u64::try_from(v).unwrap_or(0);
        Ok(MailCounts {
            pending: n(pending),
            sent: n(sent),
            failed: n(failed),
        })
    }
}

/// The table, key column and condition of each purgeable kind (`$1` = now, `$2` = its span;
/// every condition mentions both, so each statement takes the same parameters).
fn purge_target(what: Purgeable) -> (&'static str, &'static str, &'static str, i64) {
    match what {
        Purgeable::EndedSessions => (
            "sessions",
            "id",
            "(revoked_ms IS NOT NULL OR idle_expires_ms <= $1 OR absolute_expires_ms <= $1) AND $2::bigint IS NOT NULL",
            0,
        ),
        Purgeable::SpentLinks => (
            "magic_links",
            "id",
            "(consumed_ms IS NOT NULL OR expires_ms <= $1) AND $2::bigint IS NOT NULL",
            0,
        ),
        Purgeable::StaleAttempts { window_ms } => (
            "attempt_counters",
            "key",
            "locked_until_ms <= $1 AND window_start_ms + $2 <= $1",
            window_ms,
        ),
        Purgeable::FinishedMail { retention_ms } => (
            "email_outbox",
            "id",
            "(sent_ms + $2 <= $1 OR failed_ms + $2 <= $1)",
            retention_ms,
        ),
        Purgeable::ExpiredInvitations => (
            "invitations",
            "id",
            "accepted_ms IS NULL AND expires_ms <= $1 AND $2::bigint IS NOT NULL",
            0,
        ),
        Purgeable::LapsedMachineRevocations => (
            "revoked_machines",
            "machine_id",
            "until_ms <= $1 AND $2::bigint IS NOT NULL",
            0,
        ),
    }
}

#[async_trait::async_trait]
impl CleanupStore for PgStore {
    async fn count_purgeable(
        &self,
        scope: &Scope,
        what: Purgeable,
        now_ms: i64,
    ) -> StoreResult<u64> {
        require_system(scope)?;
        let (table, _, cond, span) = purge_target(what);
        // Table and condition are constants of this file; the values are bound.
        let sql = format!("SELECT count(*) FROM {table} WHERE {cond}");
        let mut tx = self.begin(scope).await?;
        let n: i64 = sqlx::query_scalar(&sql)
            .bind(now_ms)
            .bind(span)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        u64::try_from(n).map_err(|_| StoreError::Corrupt("negative count".into()))
    }

    async fn purge(
        &self,
        scope: &Scope,
        what: Purgeable,
        now_ms: i64,
        limit: u32,
    ) -> StoreResult<u64> {
        require_system(scope)?;
        let (table, key, cond, span) = purge_target(what);
        let sql = format!(
            "DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} WHERE {cond} LIMIT $3 FOR UPDATE SKIP LOCKED)"
        );
        let mut tx = self.begin(scope).await?;
        let done = sqlx::query(&sql)
            .bind(now_ms)
            .bind(span)
            .bind(i64::from(limit))
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(done.rows_affected())
    }
}
