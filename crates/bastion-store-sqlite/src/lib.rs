//! Embedded SQLite backend (WAL). Single node: the [`Scope`] is enforced by these queries,
//! since SQLite has no row-level security; `bastion attest` reports this.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use bastion_store::{
    AttemptDecision, AuditRecord, AuditStore, ChainHead, CheckpointRecord, CounterRule,
    CounterState, Isolation, KeyRingStore, LockoutStore, NewAuditEvent, Scope, Sealer, Store,
    StoreError, StoreResult, StoredKey, ThrottleRule,
};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};
use tokio::sync::Mutex;

/// Events per multi-row INSERT (10 parameters each, far below SQLite's variable limit).
const INSERT_CHUNK: usize = 100;

mod accounts;
mod idempotency;
mod licenses;
mod links_mail;
mod orgs;
mod reach;
mod vault;
mod wallet;
mod webhooks;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The SQLite store. Writers to the audit chain are serialised in-process and by
/// `BEGIN IMMEDIATE` across processes (the CLI and the server may share a file).
pub struct SqliteStore {
    pub(crate) pool: SqlitePool,
    chain_lock: Mutex<()>,
}

pub(crate) fn db_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict("unique"),
        _ => StoreError::Database(e.to_string()),
    }
}

pub(crate) fn require_system(scope: &Scope) -> StoreResult<()> {
    if scope.is_system() {
        Ok(())
    } else {
        Err(StoreError::Forbidden)
    }
}

fn hash32(row: &SqliteRow, col: &str) -> StoreResult<[u8; 32]> {
    let v: Vec<u8> = row.try_get(col).map_err(db_err)?;
    <[u8; 32]>::try_from(v.as_slice())
        .map_err(|_| StoreError::Corrupt(format!("{col} is not 32 bytes")))
}

/// One event as packed by the page query (see `events_after`).
type PageRow = (
    i64,
    i64,
    Option<String>,
    Option<String>,
    String,
    String,
    String,
    String,
    String,
    String,
);

fn unhex32(s: &str) -> StoreResult<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out)
        .map_err(|_| StoreError::Corrupt("stored hash is not 32 bytes".into()))?;
    Ok(out)
}

impl SqliteStore {
    /// Opens (creating if missing) the database at a `sqlite://` URL or path, WAL mode.
    pub async fn open(url: &str) -> StoreResult<Self> {
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Database(format!("invalid SQLite URL: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            // Rows cross from SQLite's worker thread in batches rather than one wake-up each.
            .row_buffer_size(1024);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            // A local file handle cannot go stale the way a socket can: no ping per checkout.
            .test_before_acquire(false)
            .connect_with(opts)
            .await
            .map_err(db_err)?;
        Ok(Self {
            pool,
            chain_lock: Mutex::new(()),
        })
    }

    /// Opens `<dir>/bastion.db`.
    pub async fn open_in_dir(dir: &Path) -> StoreResult<Self> {
        Self::open(&format!("sqlite://{}", dir.join("bastion.db").display())).await
    }

    pub async fn migrate(&self) -> StoreResult<()> {
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Migration(e.to_string()))
    }

    /// The pool, for tests that play an attacker with direct database access.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    async fn head_on(conn: &mut sqlx::SqliteConnection) -> StoreResult<ChainHead> {
        let row = sqlx::query("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_err)?;
        match row {
            None => Ok(ChainHead::GENESIS),
            Some(r) => Ok(ChainHead {
                seq: r.try_get("seq").map_err(db_err)?,
                hash: hash32(&r, "hash")?,
            }),
        }
    }

    async fn append_in_tx(
        conn: &mut sqlx::SqliteConnection,
        events: &[NewAuditEvent],
        seal: &Sealer,
    ) -> StoreResult<ChainHead> {
        let start = Self::head_on(conn).await?;
        let mut head = start;
        let mut links = Vec::with_capacity(events.len());
        for ev in events {
            let seq = head.seq + 1;
            let hash = seal(&head, seq, ev);
            links.push((seq, head.hash, hash));
            head = ChainHead { seq, hash };
        }
        // Multi-row INSERTs: one statement per chunk instead of one round trip per event.
        for (evs, links) in events.chunks(INSERT_CHUNK).zip(links.chunks(INSERT_CHUNK)) {
            let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO audit_events (seq, ts_ms, actor, org_id, category, action, outcome, details, prev_hash, hash) ",
            );
            qb.push_values(evs.iter().zip(links), |mut b, (ev, (seq, prev, hash))| {
                b.push_bind(*seq)
                    .push_bind(ev.ts_ms)
                    .push_bind(ev.actor.as_deref())
                    .push_bind(ev.org_id.as_deref())
                    .push_bind(ev.category.as_str())
                    .push_bind(ev.action.as_str())
                    .push_bind(ev.outcome.as_str())
                    .push_bind(ev.details.as_str())
                    .push_bind(&prev[..])
                    .push_bind(&hash[..]);
            });
            qb.build().execute(&mut *conn).await.map_err(db_err)?;
        }
        Ok(head)
    }
}

#[async_trait::async_trait]
impl AuditStore for SqliteStore {
    async fn append(
        &self,
        scope: &Scope,
        events: &[NewAuditEvent],
        seal: &Sealer,
    ) -> StoreResult<ChainHead> {
        require_system(scope)?;
        let _guard = self.chain_lock.lock().await;
        let mut conn = self.pool.acquire().await.map_err(db_err)?;
        // IMMEDIATE takes the write lock up front, so another process cannot interleave a head read.
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
        let result = match Self::append_in_tx(&mut conn, events, seal).await {
            Ok(head) => sqlx::query("COMMIT")
                .execute(&mut *conn)
                .await
                .map(|_| head)
                .map_err(db_err),
            Err(e) => Err(e),
        };
        // Any failure, the COMMIT's included, must not hand an open transaction back to the pool.
        if result.is_err() && sqlx::query("ROLLBACK").execute(&mut *conn).await.is_err() {
            tracing::warn!(
                "rollback after a failed audit append did not run; discarding the connection"
            );
            conn.detach();
        }
        result
    }

    async fn head(&self, scope: &Scope) -> StoreResult<ChainHead> {
        require_system(scope)?;
        let mut conn = self.pool.acquire().await.map_err(db_err)?;
        Self::head_on(&mut conn).await
    }

    async fn events_after(
        &self,
        scope: &Scope,
        after: i64,
        limit: u32,
    ) -> StoreResult<Vec<AuditRecord>> {
        require_system(scope)?;
        // SQLite packs the whole page into one JSON array: one value crosses from SQLite's
        // worker thread instead of one row per event, which is what makes `audit verify` fast.
        let page: Option<String> = sqlx::query_scalar(
            "SELECT json_group_array(json_array(seq, ts_ms, actor, org_id, category, action, outcome, details, \
             hex(prev_hash), hex(hash))) FROM (SELECT * FROM audit_events WHERE seq > ? ORDER BY seq LIMIT ?)",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_one(&self.pool)
        .await
        .map_err(db_err)?;
        let rows: Vec<PageRow> = serde_json::from_str(page.as_deref().unwrap_or("[]"))
            .map_err(|e| StoreError::Corrupt(format!("audit page: {e}")))?;
        let mut out = Vec::with_capacity(rows.len());
        for (seq, ts_ms, actor, org_id, category, action, outcome, details, prev, hash) in rows {
            out.push(AuditRecord {
                seq,
                event: NewAuditEvent {
                    ts_ms,
                    actor,
                    org_id,
                    category,
                    action,
                    outcome,
                    details,
                },
                prev_hash: unhex32(&prev)?,
                hash: unhex32(&hash)?,
            });
        }
        // The aggregate keeps the subquery's order in SQLite; sorting makes that a guarantee.
        out.sort_unstable_by_key(|r| r.seq);
        Ok(out)
    }

    async fn insert_checkpoint(&self, scope: &Scope, cp: &CheckpointRecord) -> StoreResult<()> {
        require_system(scope)?;
        sqlx::query(
            "INSERT INTO audit_checkpoints (size, head_hash, ts_ms, key_id, signature) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (size) DO NOTHING",
        )
        .bind(cp.size)
        .bind(&cp.head_hash[..])
        .bind(cp.ts_ms)
        .bind(&cp.key_id)
        .bind(&cp.signature)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn checkpoints(&self, scope: &Scope) -> StoreResult<Vec<CheckpointRecord>> {
        require_system(scope)?;
        let rows = sqlx::query(
            "SELECT size, head_hash, ts_ms, key_id, signature FROM audit_checkpoints ORDER BY size",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                Ok(CheckpointRecord {
                    size: r.try_get("size").map_err(db_err)?,
                    head_hash: hash32(r, "head_hash")?,
                    ts_ms: r.try_get("ts_ms").map_err(db_err)?,
                    key_id: r.try_get("key_id").map_err(db_err)?,
                    signature: r.try_get("signature").map_err(db_err)?,
                })
            })
            .collect()
    }

    async fn org_events(
        &self,
        scope: &Scope,
        org_id: &str,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<AuditRecord>> {
        let Some((kind, id)) = orgs::actor(scope, org_id) else {
            return Ok(Vec::new());
        };
        let sql = format!(
            "SELECT seq, ts_ms, actor, org_id, category, action, outcome, details, prev_hash, hash \
             FROM audit_events WHERE org_id = ?3 AND seq < ?4 AND {} ORDER BY seq DESC LIMIT ?5",
            orgs::IN_ORG
        );
        let rows = sqlx::query(&sql)
            .bind(kind)
            .bind(id)
            .bind(org_id)
            .bind(before.unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                Ok(AuditRecord {
                    seq: r.try_get("seq").map_err(db_err)?,
                    event: NewAuditEvent {
                        ts_ms: r.try_get("ts_ms").map_err(db_err)?,
                        actor: r.try_get("actor").map_err(db_err)?,
                        org_id: r.try_get("org_id").map_err(db_err)?,
                        category: r.try_get("category").map_err(db_err)?,
                        action: r.try_get("action").map_err(db_err)?,
                        outcome: r.try_get("outcome").map_err(db_err)?,
                        details: r.try_get("details").map_err(db_err)?,
                    },
                    prev_hash: hash32(r, "prev_hash")?,
                    hash: hash32(r, "hash")?,
                })
            })
            .collect()
    }
}

#[async_trait::async_trait]
impl KeyRingStore for SqliteStore {
    async fn canary(&self, scope: &Scope) -> StoreResult<Option<Vec<u8>>> {
        require_system(scope)?;
        sqlx::query_scalar("SELECT canary FROM key_canary WHERE id = 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)
    }

    async fn init_canary(&self, scope: &Scope, canary: &[u8], now_ms: i64) -> StoreResult<Vec<u8>> {
        require_system(scope)?;
        sqlx::query("INSERT INTO key_canary (id, canary, created_ms) VALUES (1, ?, ?) ON CONFLICT (id) DO NOTHING")
            .bind(canary)
            .bind(now_ms)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        self.canary(scope)
            .await?
            .ok_or(StoreError::Corrupt("canary vanished".into()))
    }

    async fn keys(&self, scope: &Scope) -> StoreResult<Vec<StoredKey>> {
        require_system(scope)?;
        let rows = sqlx::query(
            "SELECT purpose, version, key_id, algorithm, wrapped, public_key, created_ms, retired \
             FROM key_ring ORDER BY purpose, version",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                let version: i64 = r.try_get("version").map_err(db_err)?;
                Ok(StoredKey {
                    purpose: r.try_get("purpose").map_err(db_err)?,
                    version: u32::try_from(version)
                        .map_err(|_| StoreError::Corrupt("key version".into()))?,
                    key_id: r.try_get("key_id").map_err(db_err)?,
                    algorithm: r.try_get("algorithm").map_err(db_err)?,
                    wrapped: r.try_get("wrapped").map_err(db_err)?,
                    public_key: r.try_get("public_key").map_err(db_err)?,
                    created_ms: r.try_get("created_ms").map_err(db_err)?,
                    retired: r.try_get::<i64, _>("retired").map_err(db_err)? != 0,
                })
            })
            .collect()
    }

    async fn insert_key(&self, scope: &Scope, key: &StoredKey) -> StoreResult<()> {
        require_system(scope)?;
        sqlx::query(
            "INSERT INTO key_ring (purpose, version, key_id, algorithm, wrapped, public_key, created_ms, retired) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&key.purpose)
        .bind(i64::from(key.version))
        .bind(&key.key_id)
        .bind(&key.algorithm)
        .bind(&key.wrapped)
        .bind(key.public_key.as_deref())
        .bind(key.created_ms)
        .bind(i64::from(key.retired))
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }
}

/// [`LockoutStore::update_counters`] inside a `BEGIN IMMEDIATE` transaction: the write lock
/// makes every process sharing the file count one by one.
async fn update_counters_in_tx(
    conn: &mut sqlx::SqliteConnection,
    keys: &[&str],
    now_ms: i64,
    rule: CounterRule<'_>,
) -> StoreResult<()> {
    let mut before = Vec::with_capacity(keys.len());
    for key in keys {
        let row = sqlx::query(
            "SELECT window_start_ms, attempts, locked_until_ms, in_flight, in_flight_until_ms \
             FROM attempt_counters WHERE key = ?1",
        )
        .bind(key)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_err)?;
        before.push(match row {
            Some(r) => CounterState {
                window_start_ms: r.try_get(0).map_err(db_err)?,
                count: r.try_get(1).map_err(db_err)?,
                locked_until_ms: r.try_get(2).map_err(db_err)?,
                in_flight: r.try_get(3).map_err(db_err)?,
                in_flight_until_ms: r.try_get(4).map_err(db_err)?,
            },
            None => CounterState::new(now_ms),
        });
    }
    let after = rule(&before);
    for ((key, old), new) in keys.iter().zip(&before).zip(after.iter().flatten()) {
        if old == new {
            continue;
        }
        sqlx::query(
            "INSERT INTO attempt_counters \
               (key, window_start_ms, attempts, locked_until_ms, in_flight, in_flight_until_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
             ON CONFLICT (key) DO UPDATE SET window_start_ms = excluded.window_start_ms, \
               attempts = excluded.attempts, locked_until_ms = excluded.locked_until_ms, \
               in_flight = excluded.in_flight, in_flight_until_ms = excluded.in_flight_until_ms",
        )
        .bind(key)
        .bind(new.window_start_ms)
        .bind(new.count)
        .bind(new.locked_until_ms)
        .bind(new.in_flight)
        .bind(new.in_flight_until_ms)
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl LockoutStore for SqliteStore {
    /// One UPSERT: every SET expression sees the row as it was, and the row (PostgreSQL) or the
    /// database (SQLite) is locked while it runs, so concurrent attempts are counted one by one.
    /// Parameters: 1 key, 2 now, 3 window, 4 max attempts, 5 lockout.
    async fn register_attempt(
        &self,
        scope: &Scope,
        key: &str,
        now_ms: i64,
        rule: &ThrottleRule,
    ) -> StoreResult<AttemptDecision> {
        require_system(scope)?;
        let row = sqlx::query(
            "INSERT INTO attempt_counters AS c (key, window_start_ms, attempts, locked_until_ms) \
             VALUES (?1, ?2, 1, CASE WHEN 1 > ?4 THEN ?2 + ?5 ELSE 0 END) \
             ON CONFLICT (key) DO UPDATE SET \
               attempts = CASE WHEN c.locked_until_ms > ?2 THEN c.attempts \
                               WHEN c.window_start_ms + ?3 <= ?2 THEN 1 \
                               ELSE c.attempts + 1 END, \
               window_start_ms = CASE WHEN c.locked_until_ms <= ?2 AND c.window_start_ms + ?3 <= ?2 THEN ?2 \
                                      ELSE c.window_start_ms END, \
               locked_until_ms = CASE WHEN c.locked_until_ms > ?2 THEN c.locked_until_ms \
                                      WHEN c.window_start_ms + ?3 > ?2 AND c.attempts + 1 > ?4 THEN ?2 + ?5 \
                                      ELSE c.locked_until_ms END \
             RETURNING attempts, locked_until_ms",
        )
        .bind(key)
        .bind(now_ms)
        .bind(rule.window_ms)
        .bind(i64::from(rule.max_attempts))
        .bind(rule.lockout_ms)
        .fetch_one(&self.pool)
        .await
        .map_err(db_err)?;
        let attempts: i64 = row.try_get(0).map_err(db_err)?;
        let locked_until: i64 = row.try_get(1).map_err(db_err)?;
        Ok(if locked_until > now_ms {
            AttemptDecision::Locked {
                until_ms: locked_until,
            }
        } else {
            AttemptDecision::Allowed {
                attempt: u32::try_from(attempts).unwrap_or(u32::MAX),
            }
        })
    }

    #[tracing::instrument(skip_all, fields(keys = keys.len()))]
    async fn update_counters(
        &self,
        scope: &Scope,
        keys: &[&str],
        now_ms: i64,
        rule: CounterRule<'_>,
    ) -> StoreResult<()> {
        require_system(scope)?;
        let mut conn = self.begin_immediate().await?;
        let outcome = update_counters_in_tx(&mut conn, keys, now_ms, rule).await;
        SqliteStore::end_immediate(conn, outcome).await
    }

    async fn locked_until(
        &self,
        scope: &Scope,
        key: &str,
        now_ms: i64,
    ) -> StoreResult<Option<i64>> {
        require_system(scope)?;
        let until: Option<i64> = sqlx::query_scalar(
            "SELECT locked_until_ms FROM attempt_counters WHERE key = ?1 AND locked_until_ms > ?2",
        )
        .bind(key)
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(until)
    }

    async fn clear_attempts(&self, scope: &Scope, key: &str) -> StoreResult<()> {
        require_system(scope)?;
        sqlx::query("DELETE FROM attempt_counters WHERE key = ?1")
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn isolation(&self) -> Isolation {
        Isolation::StoreQueries
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(db_err)
            .map(|_| ())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
