//! Wallets and their double-entry ledger on PostgreSQL (SPEC P5). The policies of migration
//! 0009 make every scope decision (`wallet.read` / `wallet.manage` in an org wallet's org, the
//! owner of a user's wallet, and a trigger that narrows the owner to debits): a row they hide
//! reads as absent. A write they refuse is `Forbidden` from `create_wallet`, `false` from
//! `set_credit_limit` and `NotFound` from `post`, which also reads the wallet first under the
//! same condition as the `wallet_post` policy, so that a scope that may not post learns
//! nothing about references or reversals.
//!
//! Every method runs in one transaction opened by [`PgStore::begin`] (role and signed context).

use bastion_store::{
    LedgerEntry, Movement, MovementKind, Posted, Scope, StoreError, StoreResult, WalletRow,
    WalletStore,
};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use crate::{PgStore, db_err};

const WALLET_COLS: &str = "id, org_id, user_id, currency, balance, credit_limit, ledger_version, \
     created_ms, updated_ms";
const ENTRY_COLS: &str = "txn_id, wallet_id, seq, kind, amount, balance_after, reverses, \
     reference, memo, created_ms, created_by";

/// The `wallet_post` policy's condition, for the read that precedes a posting (the policy
/// itself still decides the update).
const MAY_POST: &str = "(bastion.is_system() \
     OR ARRAY[owner] && bastion.scope_tokens('wallet.manage'))";

fn wallet_row(r: &PgRow) -> StoreResult<WalletRow> {
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

fn entry_row(r: &PgRow) -> StoreResult<LedgerEntry> {
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

/// A wallet write's error: a duplicate owner and currency is `wallet_exists`; a missing org or
/// user is `NotFound`; the overdraft floor is `balance_below_limit`; a policy's refusal is
/// `Forbidden` (from [`db_err`]).
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

/// A posting that lost a race to a unique index; decided again in a fresh transaction.
enum Race {
    Reference,
    Reversal,
}

/// What a posting transaction ended with.
enum Outcome {
    Done(Posted),
    Lost(Race),
}

/// The wallet-account entry of `reference` on `wallet_id`, if posted (and readable).
async fn by_reference(
    conn: &mut PgConnection,
    wallet_id: &str,
    reference: &str,
) -> StoreResult<Option<LedgerEntry>> {
    let sql = format!(
        "SELECT {ENTRY_COLS} FROM wallet_entries \
         WHERE wallet_id = $1 AND account = 'wallet' AND reference = $2"
    );
    let row = sqlx::query(&sql)
        .bind(wallet_id)
        .bind(reference)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_err)?;
    row.as_ref().map(entry_row).transpose()
}

/// The wallet, if the scope may post `kind` to it: the `wallet_post` policy's condition, and
/// on a user's wallet debits only unless the system posts.
async fn postable(
    conn: &mut PgConnection,
    scope: &Scope,
    wallet_id: &str,
    kind: MovementKind,
    lock: bool,
) -> StoreResult<Option<WalletRow>> {
    let sql = format!(
        "SELECT {WALLET_COLS} FROM wallets WHERE id = $1 AND {MAY_POST}{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let row = sqlx::query(&sql)
        .bind(wallet_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_err)?;
    let Some(row) = row else {
        return Ok(None);
    };
    let wallet = wallet_row(&row)?;
    if wallet.user_id.is_some() && kind != MovementKind::Debit && !scope.is_system() {
        return Ok(None);
    }
    Ok(Some(wallet))
}

/// [`WalletStore::post`] in its transaction.
async fn post_in_tx(
    conn: &mut PgConnection,
    scope: &Scope,
    wallet_id: &str,
    expected_version: Option<i64>,
    m: &Movement,
) -> StoreResult<Outcome> {
    if m.kind != MovementKind::Reversal && m.amount <= 0 {
        return Err(StoreError::Conflict("invalid_amount"));
    }
    // Without an expected version the row lock serialises the postings of this wallet, so the
    // checks below see every earlier posting; with one, the conditional update decides.
    let locked = expected_version.is_none();
    let Some(wallet) = postable(conn, scope, wallet_id, m.kind, locked).await? else {
        return Err(StoreError::NotFound);
    };
    if let Some(reference) = &m.reference
        && let Some(earlier) = by_reference(conn, wallet_id, reference).await?
    {
        return Ok(Outcome::Done(Posted::Duplicate(earlier)));
    }
    let delta = match m.kind {
        MovementKind::Credit => m.amount,
        MovementKind::Debit => -m.amount,
        MovementKind::Reversal => {
            let Some(target) = &m.reverses else {
                return Ok(Outcome::Done(Posted::NotReversible));
            };
            let credit: Option<i64> = sqlx::query_scalar(
                "SELECT c.amount FROM wallet_entries c \
                 WHERE c.wallet_id = $1 AND c.txn_id = $2 AND c.account = 'wallet' \
                   AND c.kind = 'credit' AND NOT EXISTS (SELECT 1 FROM wallet_entries r \
                       WHERE r.wallet_id = $1 AND r.account = 'wallet' AND r.reverses = $2)",
            )
            .bind(wallet_id)
            .bind(target)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_err)?;
            let Some(amount) = credit else {
                return Ok(Outcome::Done(Posted::NotReversible));
            };
            -amount
        }
    };
    let expected = expected_version.unwrap_or(wallet.ledger_version);
    let updated: Option<(i64, i64)> = sqlx::query_as(
        "UPDATE wallets SET balance = balance + $2, ledger_version = ledger_version + 1, \
                updated_ms = greatest(updated_ms, $3) \
         WHERE id = $1 AND ledger_version = $4 AND balance + $2 >= -credit_limit \
         RETURNING balance, ledger_version",
    )
    .bind(wallet_id)
    .bind(delta)
    .bind(m.created_ms)
    .bind(expected)
    .fetch_optional(&mut *conn)
    .await
    .map_err(write_err)?;
    let Some((balance, seq)) = updated else {
        // Tell why: the row as it is now (a fresh snapshot: what won the race is visible).
        let Some(now) = postable(conn, scope, wallet_id, m.kind, false).await? else {
            return Err(StoreError::NotFound);
        };
        if let Some(reference) = &m.reference
            && let Some(earlier) = by_reference(conn, wallet_id, reference).await?
        {
            return Ok(Outcome::Done(Posted::Duplicate(earlier)));
        }
        if now.ledger_version != expected {
            return Ok(Outcome::Done(Posted::Conflict));
        }
        return Ok(Outcome::Done(Posted::Insufficient {
            balance: now.balance,
            credit_limit: now.credit_limit,
        }));
    };
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
    // The owner columns are the wallet's; the (wallet_id, owner) key holds them to it.
    let inserted = sqlx::query(
        "INSERT INTO wallet_entries (txn_id, wallet_id, org_id, user_id, account, seq, kind, \
             amount, balance_after, reverses, reference, memo, created_ms, created_by) \
         VALUES ($1, $2, $3, $4, 'wallet', $5, $6, $7, $8, $9, $10, $11, $12, $13), \
                ($1, $2, $3, $4, $14, $5, $6, -$7::bigint, NULL, NULL, NULL, $11, $12, $13)",
    )
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
        match d.constraint() {
            Some("wallet_entries_reference") => return Ok(Outcome::Lost(Race::Reference)),
            Some("wallet_entries_reverses") => return Ok(Outcome::Lost(Race::Reversal)),
            _ => return Err(StoreError::Conflict("txn_exists")),
        }
    }
    inserted.map_err(db_err)?;
    Ok(Outcome::Done(Posted::Applied(LedgerEntry {
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
    })))
}

#[async_trait::async_trait]
impl WalletStore for PgStore {
    async fn create_wallet(&self, scope: &Scope, wallet: &WalletRow) -> StoreResult<()> {
        if wallet.org_id.is_some() == wallet.user_id.is_some() {
            return Err(StoreError::Conflict("wallet_owner"));
        }
        let mut tx = self.begin(scope).await?;
        // `wallet_create` admits wallet.manage holders for org wallets; user wallets are the
        // system's. A wallet starts empty: its balance comes from the ledger.
        let sql = format!(
            "INSERT INTO wallets ({WALLET_COLS}) VALUES ($1, $2, $3, $4, 0, $5, 0, $6, $7)"
        );
        sqlx::query(&sql)
            .bind(&wallet.id)
            .bind(wallet.org_id.as_deref())
            .bind(wallet.user_id.as_deref())
            .bind(&wallet.currency)
            .bind(wallet.credit_limit)
            .bind(wallet.created_ms)
            .bind(wallet.updated_ms)
            .execute(&mut *tx)
            .await
            .map_err(write_err)?;
        tx.commit().await.map_err(db_err)
    }

    async fn wallet(&self, scope: &Scope, wallet_id: &str) -> StoreResult<Option<WalletRow>> {
        let sql = format!("SELECT {WALLET_COLS} FROM wallets WHERE id = $1");
        let rows = self
            .scoped_rows(scope, &sql, &[wallet_id], wallet_row)
            .await?;
        Ok(rows.into_iter().next())
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
        let mut tx = self.begin(scope).await?;
        let sql = format!(
            "SELECT {WALLET_COLS} FROM wallets \
             WHERE ($1::text IS NULL OR org_id = $1) AND ($2::text IS NULL OR user_id = $2) \
             ORDER BY currency, id"
        );
        let rows = sqlx::query(&sql)
            .bind(org_id)
            .bind(user_id)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
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
        let mut tx = self.begin(scope).await?;
        // `wallet_post` decides the row; a user's own credit line is the system's to set (the
        // trigger would refuse it: not matched here, so `false` as for any unreachable wallet).
        let done = sqlx::query(
            "UPDATE wallets SET credit_limit = $2, updated_ms = $3 \
             WHERE id = $1 AND (user_id IS NULL OR bastion.is_system())",
        )
        .bind(wallet_id)
        .bind(credit_limit)
        .bind(now_ms)
        .execute(&mut *tx)
        .await
        .map_err(write_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn post(
        &self,
        scope: &Scope,
        wallet_id: &str,
        expected_version: Option<i64>,
        movement: &Movement,
    ) -> StoreResult<Posted> {
        let mut tx = self.begin(scope).await?;
        let outcome = post_in_tx(&mut tx, scope, wallet_id, expected_version, movement).await;
        let race = match outcome {
            // Only `Applied` wrote anything; committing the others commits nothing.
            Ok(Outcome::Done(posted)) => {
                tx.commit().await.map_err(db_err)?;
                return Ok(posted);
            }
            Ok(Outcome::Lost(race)) => race,
            // A policy or trigger refusing the write: the scope may not post this.
            Err(StoreError::Forbidden) => return Err(StoreError::NotFound),
            Err(e) => return Err(e),
        };
        tx.rollback().await.map_err(db_err)?;
        match race {
            Race::Reversal => Ok(Posted::NotReversible),
            Race::Reference => {
                // The winner has committed: its entry is the answer.
                let reference = movement.reference.as_deref().unwrap_or_default();
                let mut tx = self.begin(scope).await?;
                let earlier = by_reference(&mut tx, wallet_id, reference).await?;
                tx.commit().await.map_err(db_err)?;
                Ok(earlier.map_or(Posted::Conflict, Posted::Duplicate))
            }
        }
    }

    async fn entries(
        &self,
        scope: &Scope,
        wallet_id: &str,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<LedgerEntry>> {
        let mut tx = self.begin(scope).await?;
        let sql = format!(
            "SELECT {ENTRY_COLS} FROM wallet_entries \
             WHERE wallet_id = $1 AND account = 'wallet' AND seq < $2 \
             ORDER BY seq DESC LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(wallet_id)
            .bind(before.unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        rows.iter().map(entry_row).collect()
    }

    async fn ledger_sums(&self, scope: &Scope, wallet_id: &str) -> StoreResult<(i64, i64)> {
        let mut tx = self.begin(scope).await?;
        let seen: Option<i64> = sqlx::query_scalar("SELECT 1::bigint FROM wallets WHERE id = $1")
            .bind(wallet_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        if seen.is_none() {
            return Err(StoreError::NotFound);
        }
        // Both entries of a posting are filed under its wallet: its transactions' entries are
        // the wallet's entries.
        let sums: (i64, i64) = sqlx::query_as(
            "SELECT coalesce(sum(amount) FILTER (WHERE account = 'wallet'), 0)::bigint, \
                    coalesce(sum(amount), 0)::bigint \
             FROM wallet_entries WHERE wallet_id = $1",
        )
        .bind(wallet_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(sums)
    }
}
