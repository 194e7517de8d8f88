//! Wallets and their double-entry ledger on SQLite (SPEC P5). Each statement carries the
//! scope's reach ([`reach`]), so the check and the read or write are one step.
//!
//! SQLite keeps no permission map (`sync_permissions` stores nothing here), so the levels of
//! `wallet.read` and `wallet.manage` are those of the default map: [`READ_LEVEL`] and
//! [`MANAGE_LEVEL`]; a service key holds both, a publishable key neither. A scope that may not
//! post to a wallet gets `NotFound` from `post`, `Forbidden` from `create_wallet` (as the other
//! creates here), `false` from `set_credit_limit`.
//!
//! Every posting runs under `BEGIN IMMEDIATE`: the write lock serialises postings, so the
//! balance read, the overdraft check and the update are one step on every path.

use bastion_store::{
    LedgerEntry, Movement, MovementKind, Posted, Scope, StoreError, StoreResult, WalletRow,
    WalletStore,
};
use sqlx::Row;
use sqlx::SqliteConnection;
use sqlx::sqlite::SqliteRow;

use crate::{SqliteStore, db_err};

/// The membership level that holds `wallet.read` in the default permission map.
const READ_LEVEL: i64 = 40;
/// The membership level that holds `wallet.manage` in the default permission map.
const MANAGE_LEVEL: i64 = 80;

const WALLET_COLS: &str = "id, org_id, user_id, currency, balance, credit_limit, ledger_version, \
     created_ms, updated_ms";
const ENTRY_COLS: &str = "txn_id, wallet_id, seq, kind, amount, balance_after, reverses, \
     reference, memo, created_ms, created_by";

/// What a scope is, as the first five parameters of every statement here: its kind (`?1`:
/// `system`, `user`, `service`, `publishable`, `anonymous`), its user or key id (`?2`), the org
/// it acts in (`?3`), the level an org wallet requires (`?4`) and whether a user's own wallet
/// is reached (`?5`).
#[derive(Clone, Copy)]
struct Actor<'a> {
    kind: &'static str,
    id: &'a str,
    org: Option<&'a str>,
}

impl<'a> Actor<'a> {
    fn of(scope: &'a Scope) -> Self {
        match scope {
            Scope::System(_) => Self {
                kind: "system",
                id: "",
                org: None,
            },
            Scope::User { user_id, org_id } => Self {
                kind: "user",
                id: user_id,
                org: org_id.as_deref(),
            },
            Scope::ApiKey {
                key_id,
                org_id,
                kind,
            } => Self {
                kind: kind.as_str(),
                id: key_id,
                org: Some(org_id),
            },
            Scope::Anonymous => Self {
                kind: "anonymous",
                id: "",
                org: None,
            },
        }
    }

    /// `sql` with the five reach parameters bound: org wallets at `level`, the user's own
    /// wallets when `own` (the owner's reads and debits).
    fn query<'q>(
        self,
        sql: &'q str,
        level: i64,
        own: bool,
    ) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>
    where
        'a: 'q,
    {
        sqlx::query(sql)
            .bind(self.kind)
            .bind(self.id)
            .bind(self.org)
            .bind(level)
            .bind(own)
    }
}

/// Whether the wallet whose owner columns are `org` and `user` is within the scope's reach:
/// the system reaches every wallet; an org wallet is reached inside its org by a member of at
/// least level `?4` or a live service key; a user's wallet by that user when `?5`.
fn reach(org: &str, user: &str) -> String {
    format!(
        "(?1 = 'system' \
          OR ({org} IS NOT NULL AND {org} = ?3 AND ( \
              (?1 = 'user' AND EXISTS (SELECT 1 FROM memberships s \
                   WHERE s.org_id = {org} AND s.user_id = ?2 AND s.level >= ?4)) \
              OR (?1 = 'service' AND EXISTS (SELECT 1 FROM api_keys s \
                   WHERE s.id = ?2 AND s.org_id = {org} AND s.kind = 'service' \
                   AND s.revoked_ms IS NULL)))) \
          OR ({user} IS NOT NULL AND ?5 AND ?1 = 'user' AND {user} = ?2))"
    )
}

fn wallet_row(r: &SqliteRow) -> StoreResult<WalletRow> {
    Ok(WalletRow {
        id: r.try_get("id").map_err(db_err)?,
        org_id: r.try_get("org_id").map_err(db_err)?,
        user_id: r.try_get("user_id").map_err(db_err)?,
        currency: r.try_get("currency").map_err(db_err)?,
        balance: r.try_get("balance").map_err(db_err)?,
        credit_limit: r.try_get("credit_limit").map_err(db_err)?,
        ledger_version: r.try_get("ledger_version").map_err(db_err)?,
        created_ms: r.try_get("created_ms").map_err(db_err)?,
        updated_ms: r.try_get("updated_ms").map_err(db_err)?,
    })
}

fn entry_row(r: &SqliteRow) -> StoreResult<LedgerEntry> {
    let kind: String = r.try_get("kind").map_err(db_err)?;
    Ok(LedgerEntry {
        txn_id: r.try_get("txn_id").map_err(db_err)?,
        wallet_id: r.try_get("wallet_id").map_err(db_err)?,
        seq: r.try_get("seq").map_err(db_err)?,
        kind: MovementKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt("unknown ledger entry kind".into()))?,
        amount: r.try_get("amount").map_err(db_err)?,
        balance_after: r.try_get("balance_after").map_err(db_err)?,
        reverses: r.try_get("reverses").map_err(db_err)?,
        reference: r.try_get("reference").map_err(db_err)?,
        memo: r.try_get("memo").map_err(db_err)?,
        created_ms: r.try_get("created_ms").map_err(db_err)?,
        created_by: r.try_get("created_by").map_err(db_err)?,
    })
}

/// A write's error: a duplicate owner and currency is `wallet_exists`; a missing org or user is
/// `NotFound`; the overdraft floor is `balance_below_limit`.
fn write_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            StoreError::Conflict("wallet_exists")
        }
        sqlx::Error::Database(d) if d.is_foreign_key_violation() => StoreError::NotFound,
        sqlx::Error::Database(d) if d.is_check_violation() => {
            StoreError::Conflict("balance_below_limit")
        }
        _ => db_err(e),
    }
}

/// The wallet-account entry of `reference` on `wallet_id`, if posted.
async fn by_reference(
    conn: &mut SqliteConnection,
    wallet_id: &str,
    reference: &str,
) -> StoreResult<Option<LedgerEntry>> {
    let sql = format!(
        "SELECT {ENTRY_COLS} FROM wallet_entries \
         WHERE wallet_id = ?1 AND account = 'wallet' AND reference = ?2"
    );
    let row = sqlx::query(&sql)
        .bind(wallet_id)
        .bind(reference)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_err)?;
    row.as_ref().map(entry_row).transpose()
}

/// [`WalletStore::post`] inside its write transaction.
async fn post_in_tx(
    conn: &mut SqliteConnection,
    actor: Actor<'_>,
    wallet_id: &str,
    expected_version: Option<i64>,
    m: &Movement,
) -> StoreResult<Posted> {
    if m.kind != MovementKind::Reversal && m.amount <= 0 {
        return Err(StoreError::Conflict("invalid_amount"));
    }
    // Credits and reversals of a user's wallet are the system's; its owner only debits.
    let own = m.kind == MovementKind::Debit;
    let sql = format!(
        "SELECT {WALLET_COLS} FROM wallets WHERE id = ?6 AND {}",
        reach("wallets.org_id", "wallets.user_id")
    );
    let row = actor
        .query(&sql, MANAGE_LEVEL, own)
        .bind(wallet_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_err)?;
    let Some(row) = row else {
        return Err(StoreError::NotFound);
    };
    let wallet = wallet_row(&row)?;
    if let Some(reference) = &m.reference
        && let Some(earlier) = by_reference(conn, wallet_id, reference).await?
    {
        return Ok(Posted::Duplicate(earlier));
    }
    let delta = match m.kind {
        MovementKind::Credit => m.amount,
        MovementKind::Debit => -m.amount,
        MovementKind::Reversal => {
            let Some(target) = &m.reverses else {
                return Ok(Posted::NotReversible);
            };
            let credit: Option<i64> = sqlx::query_scalar(
                "SELECT c.amount FROM wallet_entries c \
                 WHERE c.wallet_id = ?1 AND c.txn_id = ?2 AND c.account = 'wallet' \
                   AND c.kind = 'credit' AND NOT EXISTS (SELECT 1 FROM wallet_entries r \
                       WHERE r.wallet_id = ?1 AND r.account = 'wallet' AND r.reverses = ?2)",
            )
            .bind(wallet_id)
            .bind(target)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_err)?;
            let Some(amount) = credit else {
                return Ok(Posted::NotReversible);
            };
            -amount
        }
    };
    if let Some(v) = expected_version
        && v != wallet.ledger_version
    {
        return Ok(Posted::Conflict);
    }
    let Some(balance) = wallet.balance.checked_add(delta) else {
        return Err(StoreError::Conflict("invalid_amount"));
    };
    if balance < -wallet.credit_limit {
        return Ok(Posted::Insufficient {
            balance: wallet.balance,
            credit_limit: wallet.credit_limit,
        });
    }
    // The write lock is held: the version cannot have moved since the read above.
    let seq = wallet.ledger_version + 1;
    let done = sqlx::query(
        "UPDATE wallets SET balance = ?1, ledger_version = ?2, updated_ms = max(updated_ms, ?3) \
         WHERE id = ?4 AND ledger_version = ?5",
    )
    .bind(balance)
    .bind(seq)
    .bind(m.created_ms)
    .bind(wallet_id)
    .bind(wallet.ledger_version)
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    if done.rows_affected() != 1 {
        return Ok(Posted::Conflict);
    }
    let counter = if m.kind == MovementKind::Debit {
        "spending"
    } else {
        "funding"
    };
    let reverses = if m.kind == MovementKind::Reversal {
        m.reverses.as_deref()
    } else {
        None
    };
    let sql = "INSERT INTO wallet_entries (txn_id, wallet_id, org_id, user_id, account, seq, \
         kind, amount, balance_after, reverses, reference, memo, created_ms, created_by) \
         VALUES (?1, ?2, ?3, ?4, 'wallet', ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13), \
                (?1, ?2, ?3, ?4, ?14, ?5, ?6, -?7, NULL, NULL, NULL, ?11, ?12, ?13)";
    let inserted = sqlx::query(sql)
        .bind(&m.txn_id)
        .bind(wallet_id)
        .bind(wallet.org_id.as_deref())
        .bind(wallet.user_id.as_deref())
        .bind(seq)
        .bind(m.kind.as_str())
        .bind(delta)
        .bind(balance)
        .bind(reverses)
        .bind(m.reference.as_deref())
        .bind(&m.memo)
        .bind(m.created_ms)
        .bind(&m.created_by)
        .bind(counter)
        .execute(&mut *conn)
        .await;
    if let Err(sqlx::Error::Database(d)) = &inserted
        && d.is_unique_violation()
    {
        // Not reachable under the write lock (the checks above ran in it), but a constraint
        // is the last word: a used reference, a reversed credit or a reused transaction id.
        let msg = d.message().to_owned();
        if msg.contains("wallet_entries.reverses") {
            return Ok(Posted::NotReversible);
        }
        if msg.contains("wallet_entries.reference") {
            return Err(StoreError::Conflict("duplicate_reference"));
        }
        return Err(StoreError::Conflict("txn_exists"));
    }
    inserted.map_err(db_err)?;
    Ok(Posted::Applied(LedgerEntry {
        txn_id: m.txn_id.clone(),
        wallet_id: wallet_id.to_owned(),
        seq,
        kind: m.kind,
        amount: delta,
        balance_after: balance,
        reverses: reverses.map(str::to_owned),
        reference: m.reference.clone(),
        memo: m.memo.clone(),
        created_ms: m.created_ms,
        created_by: m.created_by.clone(),
    }))
}

impl SqliteStore {
    /// Whether the scope may read wallet `wallet_id`.
    async fn wallet_readable(&self, actor: Actor<'_>, wallet_id: &str) -> StoreResult<bool> {
        let sql = format!(
            "SELECT 1 FROM wallets WHERE id = ?6 AND {}",
            reach("wallets.org_id", "wallets.user_id")
        );
        let seen = actor
            .query(&sql, READ_LEVEL, true)
            .bind(wallet_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(seen.is_some())
    }
}

#[async_trait::async_trait]
impl WalletStore for SqliteStore {
    async fn create_wallet(&self, scope: &Scope, wallet: &WalletRow) -> StoreResult<()> {
        if wallet.org_id.is_some() == wallet.user_id.is_some() {
            return Err(StoreError::Conflict("wallet_owner"));
        }
        // Org wallets by wallet.manage; user wallets by the system alone (`own` is false). A
        // wallet starts empty: its balance comes from the ledger.
        let sql = format!(
            "INSERT INTO wallets ({WALLET_COLS}) SELECT ?6, ?7, ?8, ?9, 0, ?10, 0, ?11, ?12 \
             WHERE {}",
            reach("?7", "?8")
        );
        let done = Actor::of(scope)
            .query(&sql, MANAGE_LEVEL, false)
            .bind(&wallet.id)
            .bind(wallet.org_id.as_deref())
            .bind(wallet.user_id.as_deref())
            .bind(&wallet.currency)
            .bind(wallet.credit_limit)
            .bind(wallet.created_ms)
            .bind(wallet.updated_ms)
            .execute(&self.pool)
            .await
            .map_err(write_err)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Forbidden);
        }
        Ok(())
    }

    async fn wallet(&self, scope: &Scope, wallet_id: &str) -> StoreResult<Option<WalletRow>> {
        let sql = format!(
            "SELECT {WALLET_COLS} FROM wallets WHERE id = ?6 AND {}",
            reach("wallets.org_id", "wallets.user_id")
        );
        let row = Actor::of(scope)
            .query(&sql, READ_LEVEL, true)
            .bind(wallet_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(wallet_row).transpose()
    }

    async fn wallets_of(
        &self,
        scope: &Scope,
        org_id: Option<&str>,
        user_id: Option<&str>,
    ) -> StoreResult<Vec<WalletRow>> {
        if org_id.is_none() && user_id.is_none() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {WALLET_COLS} FROM wallets \
             WHERE (?6 IS NULL OR org_id = ?6) AND (?7 IS NULL OR user_id = ?7) AND {} \
             ORDER BY currency, id",
            reach("wallets.org_id", "wallets.user_id")
        );
        let rows = Actor::of(scope)
            .query(&sql, READ_LEVEL, true)
            .bind(org_id)
            .bind(user_id)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter().map(wallet_row).collect()
    }

    async fn set_credit_limit(
        &self,
        scope: &Scope,
        wallet_id: &str,
        credit_limit: i64,
        now_ms: i64,
    ) -> StoreResult<bool> {
        if credit_limit < 0 {
            return Err(StoreError::Conflict("invalid_credit_limit"));
        }
        // A user's credit line is the system's to set (`own` is false).
        let sql = format!(
            "UPDATE wallets SET credit_limit = ?7, updated_ms = ?8 WHERE id = ?6 AND {}",
            reach("wallets.org_id", "wallets.user_id")
        );
        let done = Actor::of(scope)
            .query(&sql, MANAGE_LEVEL, false)
            .bind(wallet_id)
            .bind(credit_limit)
            .bind(now_ms)
            .execute(&self.pool)
            .await
            .map_err(write_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn post(
        &self,
        scope: &Scope,
        wallet_id: &str,
        expected_version: Option<i64>,
        movement: &Movement,
    ) -> StoreResult<Posted> {
        let actor = Actor::of(scope);
        // IMMEDIATE: postings queue here, so each one's read-check-write is decisive.
        let mut conn = self.begin_immediate().await?;
        let result = post_in_tx(&mut conn, actor, wallet_id, expected_version, movement).await;
        // Only `Applied` wrote anything; the rest commit nothing either way.
        SqliteStore::end_immediate(conn, result).await
    }

    async fn entries(
        &self,
        scope: &Scope,
        wallet_id: &str,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<LedgerEntry>> {
        let sql = format!(
            "SELECT {ENTRY_COLS} FROM wallet_entries \
             WHERE wallet_id = ?6 AND account = 'wallet' AND seq < ?7 \
               AND EXISTS (SELECT 1 FROM wallets WHERE id = ?6 AND {}) \
             ORDER BY seq DESC LIMIT ?8",
            reach("wallets.org_id", "wallets.user_id")
        );
        let rows = Actor::of(scope)
            .query(&sql, READ_LEVEL, true)
            .bind(wallet_id)
            .bind(before.unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter().map(entry_row).collect()
    }

    async fn ledger_sums(&self, scope: &Scope, wallet_id: &str) -> StoreResult<(i64, i64)> {
        let actor = Actor::of(scope);
        if !self.wallet_readable(actor, wallet_id).await? {
            return Err(StoreError::NotFound);
        }
        // Both entries of a posting are filed under its wallet: its transactions' entries are
        // the wallet's entries.
        let sums: (i64, i64) = sqlx::query_as(
            "SELECT coalesce(sum(CASE WHEN account = 'wallet' THEN amount END), 0), \
                    coalesce(sum(amount), 0) \
             FROM wallet_entries WHERE wallet_id = ?1",
        )
        .bind(wallet_id)
        .fetch_one(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(sums)
    }
}
