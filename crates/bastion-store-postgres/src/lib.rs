//! PostgreSQL backend. Every transaction runs as one of two RLS-subject roles, chosen from the
//! [`Scope`]: `bastion_app` for request work and `bastion_system` for named system paths, with
//! the scope passed as a signed context that the policies' helper functions verify
//! (`context.rs`, docs/tenancy.md). Row-level security is enabled and forced on every table.

use std::str::FromStr;
use std::time::Duration;

use bastion_store::{
    AttemptDecision, AuditRecord, AuditStore, ChainHead, CheckpointRecord, CounterRule,
    CounterState, Isolation, KeyRingStore, LockoutStore, NewAuditEvent, Scope, Sealer, Store,
    StoreError, StoreResult, StoredKey, ThrottleRule,
};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgPool, Postgres, Row, Transaction};

mod accounts;
mod context;
mod idempotency;
mod licenses;
mod links_mail;
mod orgs;
mod vault;
mod wallet;
mod webhooks;

use context::ScopeKey;

/// Migrations, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The schema that holds every Bastion table.
pub const SCHEMA: &str = "bastion";

pub struct PgStore {
    pool: PgPool,
    /// Loaded (or created) by the owner once the schema exists; without it every scoped
    /// transaction fails.
    scope_key: std::sync::OnceLock<ScopeKey>,
    owner: std::sync::atomic::AtomicBool,
}

/// Paths only system work may take (sign-in look-ups, links, mail, cleanup).
pub(crate) fn require_system(scope: &Scope) -> StoreResult<()> {
    if scope.is_system() {
        Ok(())
    } else {
        Err(StoreError::Forbidden)
    }
}

pub(crate) fn db_err(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(d) = &e {
        if d.is_unique_violation() {
            return StoreError::Conflict("unique");
        }
        // 42501: insufficient_privilege, also raised by row-level security WITH CHECK failures.
        if d.code().as_deref() == Some("42501") {
            return StoreError::Forbidden;
        }
    }
    StoreError::Database(e.to_string())
}

fn hash32(row: &PgRow, col: &str) -> StoreResult<[u8; 32]> {
    let v: Vec<u8> = row.try_get(col).map_err(db_err)?;
    <[u8; 32]>::try_from(v.as_slice())
        .map_err(|_| StoreError::Corrupt(format!("{col} is not 32 bytes")))
}

const AUDIT_COLS: &str =
    "seq, ts_ms, actor, org_id, category, action, outcome, details, prev_hash, hash";

fn audit_record(r: &PgRow) -> StoreResult<AuditRecord> {
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
}

/// A fingerprint of the embedded migrations (tests key their template database by it).
pub fn migrations_fingerprint() -> String {
    let mut acc = Vec::new();
    for m in MIGRATOR.iter() {
        acc.extend_from_slice(&m.version.to_be_bytes());
        acc.extend_from_slice(&m.checksum);
    }
    // Not a security hash: just a stable short name for the set of migrations.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in acc {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

impl PgStore {
    /// Connects a pool to a `postgres://` URL; every connection searches schema `bastion`.
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Self> {
        let opts = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Database(format!("invalid PostgreSQL URL: {e}")))?
            .application_name("bastion")
            .options([("search_path", SCHEMA)]);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await
            .map_err(db_err)?;
        let store = Self {
            pool,
            scope_key: std::sync::OnceLock::new(),
            owner: std::sync::atomic::AtomicBool::new(false),
        };
        // A migrated database: load its scope key now (a fresh one gets it from `migrate`).
        let migrated: bool =
            sqlx::query_scalar("SELECT to_regclass('bastion.scope_key') IS NOT NULL")
                .fetch_one(&store.pool)
                .await
                .map_err(db_err)?;
        if migrated {
            // A runtime role cannot read the key (by design): it adopts the owner's instead.
            store.load_scope_key().await?;
        }
        Ok(store)
    }

    /// Whether this pool's login can read the scope key, i.e. connects as the schema owner
    /// (or a superuser): a leak of those credentials bypasses row-level security.
    pub fn is_owner_connection(&self) -> bool {
        self.owner.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Takes the scope key from a store connected as the schema owner (the migration
    /// connection), for a pool whose login role cannot read it.
    pub fn adopt_scope_key(&self, owner: &PgStore) -> StoreResult<()> {
        let key = owner
            .scope_key
            .get()
            .ok_or_else(|| StoreError::Database("the owner's scope key is not loaded".into()))?;
        let _ = self.scope_key.set(key.clone());
        Ok(())
    }

    /// Reads the scope key, creating it on first use, when this login is the schema owner;
    /// otherwise leaves it unset (every scoped transaction then fails closed until a key is
    /// adopted).
    async fn load_scope_key(&self) -> StoreResult<()> {
        if self.scope_key.get().is_some() {
            return Ok(());
        }
        let readable: bool =
            sqlx::query_scalar("SELECT has_table_privilege('bastion.scope_key', 'SELECT, INSERT')")
                .fetch_one(&self.pool)
                .await
                .map_err(db_err)?;
        if !readable {
            return Ok(());
        }
        self.owner.store(true, std::sync::atomic::Ordering::Relaxed);
        let fresh = ScopeKey::generate()?;
        let (ipad, opad) = fresh.pads();
        sqlx::query(
            "INSERT INTO bastion.scope_key (id, k_ipad, k_opad) VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING",
        )
        .bind(ipad)
        .bind(opad)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        let (ipad, opad): (Vec<u8>, Vec<u8>) =
            sqlx::query_as("SELECT k_ipad, k_opad FROM bastion.scope_key WHERE id = 1")
                .fetch_one(&self.pool)
                .await
                .map_err(db_err)?;
        let key = ScopeKey::from_pads(&ipad, &opad);
        zeroize::Zeroize::zeroize(&mut (ipad, opad));
        let _ = self.scope_key.set(key?);
        Ok(())
    }

    /// The role and signed context a transaction for `scope` starts with. Public so tests can
    /// play a well-behaved client beside their forgeries; only this process holds the key.
    pub fn signed_context(&self, scope: &Scope) -> StoreResult<(&'static str, String)> {
        self.scope_key
            .get()
            .ok_or_else(|| StoreError::Database("the scope key is not loaded".into()))?
            .sign(scope)
    }

    /// As [`PgStore::signed_context`], expiring at `expires_ms` (tests of expiry).
    pub fn signed_context_until(
        &self,
        scope: &Scope,
        expires_ms: i64,
    ) -> StoreResult<(&'static str, String)> {
        self.scope_key
            .get()
            .ok_or_else(|| StoreError::Database("the scope key is not loaded".into()))?
            .sign_until(scope, expires_ms)
    }

    /// Creates the schema and applies pending migrations (run as the schema's owner).
    pub async fn migrate(&self) -> StoreResult<()> {
        sqlx::query("CREATE SCHEMA IF NOT EXISTS bastion")
            .execute(&self.pool)
            .await
            .map_err(|e| StoreError::Migration(e.to_string()))?;
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Migration(e.to_string()))?;
        self.load_scope_key().await
    }

    /// The owner's pool, for tests that play an attacker with direct database access.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Opens a transaction whose role and signed scope context follow `scope` (both local to
    /// the transaction).
    pub(crate) async fn begin(&self, scope: &Scope) -> StoreResult<Transaction<'static, Postgres>> {
        let (role, ctx) = self.signed_context(scope)?;
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        sqlx::query("SELECT set_config('role', $1, true), set_config('bastion.ctx', $2, true)")
            .bind(role)
            .bind(ctx)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        Ok(tx)
    }
}

#[async_trait::async_trait]
impl AuditStore for PgStore {
    #[tracing::instrument(skip_all, fields(events = events.len()))]
    async fn append(
        &self,
        scope: &Scope,
        events: &[NewAuditEvent],
        seal: &Sealer,
    ) -> StoreResult<ChainHead> {
        let mut tx = self.begin(scope).await?;
        // The row lock on the head serialises appenders across connections and nodes.
        let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE")
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err)?;
        let start = ChainHead {
            seq: row.try_get("seq").map_err(db_err)?,
            hash: hash32(&row, "hash")?,
        };
        if events.is_empty() {
            return Ok(start);
        }
        let n = events.len();
        let (mut seqs, mut ts, mut actors, mut orgs) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut cats, mut acts, mut outs, mut dets) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut prevs, mut hashes) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let mut head = start;
        for ev in events {
            let seq = head.seq + 1;
            let hash = seal(&head, seq, ev);
            seqs.push(seq);
            ts.push(ev.ts_ms);
            actors.push(ev.actor.clone());
            orgs.push(ev.org_id.clone());
            cats.push(ev.category.clone());
            acts.push(ev.action.clone());
            outs.push(ev.outcome.clone());
            dets.push(ev.details.clone());
            prevs.push(head.hash.to_vec());
            hashes.push(hash.to_vec());
            head = ChainHead { seq, hash };
        }
        sqlx::query(
            "INSERT INTO audit_events (seq, ts_ms, actor, org_id, category, action, outcome, details, prev_hash, hash) \
             SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], \
             $7::text[], $8::text[], $9::bytea[], $10::bytea[])",
        )
        .bind(&seqs)
        .bind(&ts)
        .bind(&actors)
        .bind(&orgs)
        .bind(&cats)
        .bind(&acts)
        .bind(&outs)
        .bind(&dets)
        .bind(&prevs)
        .bind(&hashes)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
            .bind(head.seq)
            .bind(&head.hash[..])
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(head)
    }

    async fn head(&self, scope: &Scope) -> StoreResult<ChainHead> {
        let mut tx = self.begin(scope).await?;
        let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?
            .ok_or(StoreError::Forbidden)?;
        let head = ChainHead {
            seq: row.try_get("seq").map_err(db_err)?,
            hash: hash32(&row, "hash")?,
        };
        tx.commit().await.map_err(db_err)?;
        Ok(head)
    }

    async fn events_after(
        &self,
        scope: &Scope,
        after: i64,
        limit: u32,
    ) -> StoreResult<Vec<AuditRecord>> {
        let mut tx = self.begin(scope).await?;
        let sql =
            format!("SELECT {AUDIT_COLS} FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2");
        let rows = sqlx::query(&sql)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        rows.iter().map(audit_record).collect()
    }

    async fn org_events(
        &self,
        scope: &Scope,
        org_id: &str,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<AuditRecord>> {
        let mut tx = self.begin(scope).await?;
        // `org_read` admits only members of that org (or its keys) holding audit.read there.
        let sql = format!(
            "SELECT {AUDIT_COLS} FROM audit_events WHERE org_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(org_id)
            .bind(before.unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        rows.iter().map(audit_record).collect()
    }

    async fn insert_checkpoint(&self, scope: &Scope, cp: &CheckpointRecord) -> StoreResult<()> {
        let mut tx = self.begin(scope).await?;
        sqlx::query(
            "INSERT INTO audit_checkpoints (size, head_hash, ts_ms, key_id, signature) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (size) DO NOTHING",
        )
        .bind(cp.size)
        .bind(&cp.head_hash[..])
        .bind(cp.ts_ms)
        .bind(&cp.key_id)
        .bind(&cp.signature)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)
    }

    async fn checkpoints(&self, scope: &Scope) -> StoreResult<Vec<CheckpointRecord>> {
        let mut tx = self.begin(scope).await?;
        let rows = sqlx::query(
            "SELECT size, head_hash, ts_ms, key_id, signature FROM audit_checkpoints ORDER BY size",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
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
}

#[async_trait::async_trait]
impl KeyRingStore for PgStore {
    async fn canary(&self, scope: &Scope) -> StoreResult<Option<Vec<u8>>> {
        let mut tx = self.begin(scope).await?;
        let c = sqlx::query_scalar("SELECT canary FROM key_canary WHERE id = 1")
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(c)
    }

    async fn init_canary(&self, scope: &Scope, canary: &[u8], now_ms: i64) -> StoreResult<Vec<u8>> {
        let mut tx = self.begin(scope).await?;
        sqlx::query("INSERT INTO key_canary (id, canary, created_ms) VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING")
            .bind(canary)
            .bind(now_ms)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        let c: Option<Vec<u8>> = sqlx::query_scalar("SELECT canary FROM key_canary WHERE id = 1")
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        c.ok_or(StoreError::Forbidden)
    }

    async fn keys(&self, scope: &Scope) -> StoreResult<Vec<StoredKey>> {
        let mut tx = self.begin(scope).await?;
        let rows = sqlx::query(
            "SELECT purpose, version, key_id, algorithm, wrapped, public_key, created_ms, retired \
             FROM key_ring ORDER BY purpose, version",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        rows.iter()
            .map(|r| {
                let version: i32 = r.try_get("version").map_err(db_err)?;
                Ok(StoredKey {
                    purpose: r.try_get("purpose").map_err(db_err)?,
                    version: u32::try_from(version)
                        .map_err(|_| StoreError::Corrupt("key version".into()))?,
                    key_id: r.try_get("key_id").map_err(db_err)?,
                    algorithm: r.try_get("algorithm").map_err(db_err)?,
                    wrapped: r.try_get("wrapped").map_err(db_err)?,
                    public_key: r.try_get("public_key").map_err(db_err)?,
                    created_ms: r.try_get("created_ms").map_err(db_err)?,
                    retired: r.try_get("retired").map_err(db_err)?,
                })
            })
            .collect()
    }

    async fn insert_key(&self, scope: &Scope, key: &StoredKey) -> StoreResult<()> {
        let version = i32::try_from(key.version)
            .map_err(|_| StoreError::Conflict("key version out of range"))?;
        let mut tx = self.begin(scope).await?;
        sqlx::query(
            "INSERT INTO key_ring (purpose, version, key_id, algorithm, wrapped, public_key, created_ms, retired) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&key.purpose)
        .bind(version)
        .bind(&key.key_id)
        .bind(&key.algorithm)
        .bind(&key.wrapped)
        .bind(key.public_key.as_deref())
        .bind(key.created_ms)
        .bind(key.retired)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)
    }
}

#[async_trait::async_trait]
impl LockoutStore for PgStore {
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
        let mut tx = self.begin(scope).await?;
        let row = sqlx::query(
            "INSERT INTO attempt_counters AS c (key, window_start_ms, attempts, locked_until_ms) \
             VALUES ($1, $2, 1, CASE WHEN 1 > $4 THEN $2 + $5 ELSE 0 END) \
             ON CONFLICT (key) DO UPDATE SET \
               attempts = CASE WHEN c.locked_until_ms > $2 THEN c.attempts \
                               WHEN c.window_start_ms + $3 <= $2 THEN 1 \
                               ELSE c.attempts + 1 END, \
               window_start_ms = CASE WHEN c.locked_until_ms <= $2 AND c.window_start_ms + $3 <= $2 THEN $2 \
                                      ELSE c.window_start_ms END, \
               locked_until_ms = CASE WHEN c.locked_until_ms > $2 THEN c.locked_until_ms \
                                      WHEN c.window_start_ms + $3 > $2 AND c.attempts + 1 > $4 THEN $2 + $5 \
                                      ELSE c.locked_until_ms END \
             RETURNING attempts, locked_until_ms",
        )
        .bind(key)
        .bind(now_ms)
        .bind(rule.window_ms)
        .bind(i64::from(rule.max_attempts))
        .bind(rule.lockout_ms)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
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

    /// Holds the row locks of `keys` while `rule` runs, so nodes sharing the database count one
    /// by one. Rows are locked in key order, so two transactions over the same keys cannot
    /// deadlock; the no-op upsert both creates a missing row and locks an existing one.
    #[tracing::instrument(skip_all, fields(keys = keys.len()))]
    async fn update_counters(
        &self,
        scope: &Scope,
        keys: &[&str],
        now_ms: i64,
        rule: CounterRule<'_>,
    ) -> StoreResult<()> {
        let mut tx = self.begin(scope).await?;
        let mut order: Vec<usize> = (0..keys.len()).collect();
        order.sort_by_key(|i| keys[*i]);
        let mut before = vec![CounterState::new(now_ms); keys.len()];
        for i in order {
            let row = sqlx::query(
                "INSERT INTO attempt_counters (key, window_start_ms, attempts, locked_until_ms) \
                 VALUES ($1, $2, 0, 0) \
                 ON CONFLICT (key) DO UPDATE SET key = EXCLUDED.key \
                 RETURNING window_start_ms, attempts, locked_until_ms, in_flight, in_flight_until_ms",
            )
            .bind(keys[i])
            .bind(now_ms)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err)?;
            before[i] = CounterState {
                window_start_ms: row.try_get(0).map_err(db_err)?,
                count: row.try_get(1).map_err(db_err)?,
                locked_until_ms: row.try_get(2).map_err(db_err)?,
                in_flight: row.try_get(3).map_err(db_err)?,
                in_flight_until_ms: row.try_get(4).map_err(db_err)?,
            };
        }
        let after = rule(&before);
        for ((key, old), new) in keys.iter().zip(&before).zip(after.iter().flatten()) {
            if old == new {
                continue;
            }
            sqlx::query(
                "UPDATE attempt_counters SET window_start_ms = $2, attempts = $3, \
                   locked_until_ms = $4, in_flight = $5, in_flight_until_ms = $6 \
                 WHERE key = $1",
            )
            .bind(key)
            .bind(new.window_start_ms)
            .bind(new.count)
            .bind(new.locked_until_ms)
            .bind(new.in_flight)
            .bind(new.in_flight_until_ms)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(())
    }

    async fn locked_until(
        &self,
        scope: &Scope,
        key: &str,
        now_ms: i64,
    ) -> StoreResult<Option<i64>> {
        let mut tx = self.begin(scope).await?;
        let until: Option<i64> = sqlx::query_scalar(
            "SELECT locked_until_ms FROM attempt_counters WHERE key = $1 AND locked_until_ms > $2",
        )
        .bind(key)
        .bind(now_ms)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(until)
    }

    async fn clear_attempts(&self, scope: &Scope, key: &str) -> StoreResult<()> {
        let mut tx = self.begin(scope).await?;
        sqlx::query("DELETE FROM attempt_counters WHERE key = $1")
            .bind(key)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn isolation(&self) -> Isolation {
        Isolation::RowLevelSecurity
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
