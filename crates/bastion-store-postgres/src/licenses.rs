//! Products, policies, licenses and machines on PostgreSQL (SPEC L1–L7). The policies of
//! migration 0008 make every scope decision (licenses.read / issue / freeze / revoke in the
//! row's org, and a trigger for which columns a license update may change): a row they hide
//! reads as absent, a write they refuse is `Forbidden`. The composite keys refuse a policy,
//! license or machine filed under another org than its parent's (`NotFound`).
//!
//! The outbox is the system's alone (0004): when a request scope issues a license or its
//! failures freeze it, the same transaction switches to the system path [`MAIL_SCOPE`] for its
//! last statement, which queues the mail, so the row and its mail still commit together.

use bastion_store::{
    Activation, KeyFailure, LicenseRow, LicenseStore, MachineRow, OutboundMail, PolicyRow,
    ProductRow, Scope, StoreError, StoreResult,
};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use crate::links_mail::insert_mail;
use crate::{PgStore, db_err, hash32};

/// The system path that queues licensing mail for a request scope.
const MAIL_SCOPE: Scope = Scope::System("license_mail");

const PRODUCT_COLS: &str = "id, org_id, name, created_ms";
const POLICY_COLS: &str =
    "id, org_id, product_id, name, max_machines, duration_ms, entitlements, lease_ms, created_ms";
const LICENSE_COLS: &str = "id, org_id, product_id, policy_id, key_hash, email, entitlements, \
     max_machines, lease_ms, expires_ms, created_ms, created_by, failures, frozen_ms, revoked_ms";
const MACHINE_COLS: &str = "id, org_id, license_id, machine_hash, name, activated_ms, last_seen_ms";

/// A write's error, with the licensing tables' meanings for their constraints: a duplicate name
/// or hash is `duplicate`; a parent that is not there, or is of another org, is `NotFound`.
fn write_err(e: sqlx::Error, duplicate: &'static str) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict(duplicate),
        sqlx::Error::Database(d) if d.is_foreign_key_violation() => StoreError::NotFound,
        _ => db_err(e),
    }
}

fn to_u32(v: i64, what: &str) -> StoreResult<u32> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} out of range")))
}

fn product(r: &PgRow) -> StoreResult<ProductRow> {
    Ok(ProductRow {
        id: r.try_get("id").map_err(db_err)?,
        org_id: r.try_get("org_id").map_err(db_err)?,
        name: r.try_get("name").map_err(db_err)?,
        created_ms: r.try_get("created_ms").map_err(db_err)?,
    })
}

fn policy(r: &PgRow) -> StoreResult<PolicyRow> {
    Ok(PolicyRow {
        id: r.try_get("id").map_err(db_err)?,
        org_id: r.try_get("org_id").map_err(db_err)?,
        product_id: r.try_get("product_id").map_err(db_err)?,
        name: r.try_get("name").map_err(db_err)?,
        max_machines: to_u32(r.try_get("max_machines").map_err(db_err)?, "max_machines")?,
        duration_ms: r.try_get("duration_ms").map_err(db_err)?,
        entitlements: r.try_get("entitlements").map_err(db_err)?,
        lease_ms: r.try_get("lease_ms").map_err(db_err)?,
        created_ms: r.try_get("created_ms").map_err(db_err)?,
    })
}

fn license(r: &PgRow) -> StoreResult<LicenseRow> {
    Ok(LicenseRow {
        id: r.try_get("id").map_err(db_err)?,
        org_id: r.try_get("org_id").map_err(db_err)?,
        product_id: r.try_get("product_id").map_err(db_err)?,
        policy_id: r.try_get("policy_id").map_err(db_err)?,
        key_hash: hash32(r, "key_hash")?,
        email: r.try_get("email").map_err(db_err)?,
        entitlements: r.try_get("entitlements").map_err(db_err)?,
        max_machines: to_u32(r.try_get("max_machines").map_err(db_err)?, "max_machines")?,
        lease_ms: r.try_get("lease_ms").map_err(db_err)?,
        expires_ms: r.try_get("expires_ms").map_err(db_err)?,
        created_ms: r.try_get("created_ms").map_err(db_err)?,
        created_by: r.try_get("created_by").map_err(db_err)?,
        failures: to_u32(r.try_get("failures").map_err(db_err)?, "failures")?,
        frozen_ms: r.try_get("frozen_ms").map_err(db_err)?,
        revoked_ms: r.try_get("revoked_ms").map_err(db_err)?,
    })
}

fn machine(r: &PgRow) -> StoreResult<MachineRow> {
    Ok(MachineRow {
        id: r.try_get("id").map_err(db_err)?,
        org_id: r.try_get("org_id").map_err(db_err)?,
        license_id: r.try_get("license_id").map_err(db_err)?,
        machine_hash: hash32(r, "machine_hash")?,
        name: r.try_get("name").map_err(db_err)?,
        activated_ms: r.try_get("activated_ms").map_err(db_err)?,
        last_seen_ms: r.try_get("last_seen_ms").map_err(db_err)?,
    })
}

/// [`LicenseStore::activate_machine`] inside its transaction.
async fn activate_in_tx(
    conn: &mut PgConnection,
    m: &MachineRow,
    max_machines: u32,
) -> StoreResult<Activation> {
    // The license's row lock serialises the activations of one license across connections and
    // nodes, so the count below is decisive. (Under a request scope the lock also needs the
    // license's UPDATE policy: whoever may freeze or revoke it.)
    let license: Option<String> =
        sqlx::query_scalar("SELECT id FROM licenses WHERE id = $1 AND org_id = $2 FOR UPDATE")
            .bind(&m.license_id)
            .bind(&m.org_id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_err)?;
    if license.is_none() {
        return Err(StoreError::NotFound);
    }
    let sql = format!(
        "UPDATE license_machines SET name = $3, last_seen_ms = $4 \
         WHERE license_id = $1 AND machine_hash = $2 RETURNING {MACHINE_COLS}"
    );
    let existing = sqlx::query(&sql)
        .bind(&m.license_id)
        .bind(&m.machine_hash[..])
        .bind(&m.name)
        .bind(m.last_seen_ms)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_err)?;
    if let Some(row) = existing {
        return Ok(Activation::Existing(machine(&row)?));
    }
    let active: i64 =
        sqlx::query_scalar("SELECT count(*) FROM license_machines WHERE license_id = $1")
            .bind(&m.license_id)
            .fetch_one(&mut *conn)
            .await
            .map_err(db_err)?;
    if active >= i64::from(max_machines) {
        return Ok(Activation::LimitReached);
    }
    let sql = format!(
        "INSERT INTO license_machines ({MACHINE_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
    );
    sqlx::query(&sql)
        .bind(&m.id)
        .bind(&m.org_id)
        .bind(&m.license_id)
        .bind(&m.machine_hash[..])
        .bind(&m.name)
        .bind(m.activated_ms)
        .bind(m.last_seen_ms)
        .execute(&mut *conn)
        .await
        .map_err(|e| write_err(e, "machine_exists"))?;
    Ok(Activation::Created(m.clone()))
}

impl PgStore {
    /// The one row of `sql` (which binds `id` as `$1`), if the scope sees it.
    async fn license_row<T>(
        &self,
        scope: &Scope,
        sql: &str,
        id: &str,
        map: fn(&PgRow) -> StoreResult<T>,
    ) -> StoreResult<Option<T>> {
        let rows = self.scoped_rows(scope, sql, &[id], map).await?;
        Ok(rows.into_iter().next())
    }

    /// Queues `mail` in the open transaction of `scope`, as its last statement: a request scope
    /// switches the transaction to the system path first (the app role has no outbox grant).
    async fn queue_license_mail(
        &self,
        conn: &mut PgConnection,
        scope: &Scope,
        mail: &OutboundMail,
    ) -> StoreResult<()> {
        if !scope.is_system() {
            let (role, ctx) = self.signed_context(&MAIL_SCOPE)?;
            sqlx::query("SELECT set_config('role', $1, true), set_config('bastion.ctx', $2, true)")
                .bind(role)
                .bind(ctx)
                .execute(&mut *conn)
                .await
                .map_err(db_err)?;
        }
        insert_mail(conn, mail).await
    }

    /// One state change of a license (`sql` binds the id as `$1`, and `value`, if any, as
    /// `$2`): whether it changed.
    async fn license_update(
        &self,
        scope: &Scope,
        sql: &str,
        license_id: &str,
        value: Option<i64>,
    ) -> StoreResult<bool> {
        let mut tx = self.begin(scope).await?;
        let mut q = sqlx::query(sql).bind(license_id);
        if let Some(v) = value {
            q = q.bind(v);
        }
        let done = q.execute(&mut *tx).await.map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }
}

#[async_trait::async_trait]
impl LicenseStore for PgStore {
    async fn insert_product(&self, scope: &Scope, p: &ProductRow) -> StoreResult<()> {
        let mut tx = self.begin(scope).await?;
        // `product_create` admits licenses.issue holders in the row's org only.
        let sql = format!("INSERT INTO products ({PRODUCT_COLS}) VALUES ($1, $2, $3, $4)");
        sqlx::query(&sql)
            .bind(&p.id)
            .bind(&p.org_id)
            .bind(&p.name)
            .bind(p.created_ms)
            .execute(&mut *tx)
            .await
            .map_err(|e| write_err(e, "product_exists"))?;
        tx.commit().await.map_err(db_err)
    }

    async fn product(&self, scope: &Scope, id: &str) -> StoreResult<Option<ProductRow>> {
        let sql = format!("SELECT {PRODUCT_COLS} FROM products WHERE id = $1");
        self.license_row(scope, &sql, id, product).await
    }

    async fn products(&self, scope: &Scope, org_id: &str) -> StoreResult<Vec<ProductRow>> {
        let sql =
            format!("SELECT {PRODUCT_COLS} FROM products WHERE org_id = $1 ORDER BY name, id");
        self.scoped_rows(scope, &sql, &[org_id], product).await
    }

    async fn insert_policy(&self, scope: &Scope, p: &PolicyRow) -> StoreResult<()> {
        let mut tx = self.begin(scope).await?;
        // `policy_create` checks the org first (Forbidden); then the key (product_id, org_id)
        // refuses a product of another org (NotFound).
        let sql = format!(
            "INSERT INTO license_policies ({POLICY_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        );
        sqlx::query(&sql)
            .bind(&p.id)
            .bind(&p.org_id)
            .bind(&p.product_id)
            .bind(&p.name)
            .bind(i64::from(p.max_machines))
            .bind(p.duration_ms)
            .bind(&p.entitlements)
            .bind(p.lease_ms)
            .bind(p.created_ms)
            .execute(&mut *tx)
            .await
            .map_err(|e| write_err(e, "policy_exists"))?;
        tx.commit().await.map_err(db_err)
    }

    async fn policy(&self, scope: &Scope, id: &str) -> StoreResult<Option<PolicyRow>> {
        let sql = format!("SELECT {POLICY_COLS} FROM license_policies WHERE id = $1");
        self.license_row(scope, &sql, id, policy).await
    }

    async fn policies(&self, scope: &Scope, product_id: &str) -> StoreResult<Vec<PolicyRow>> {
        let sql = format!(
            "SELECT {POLICY_COLS} FROM license_policies WHERE product_id = $1 ORDER BY name, id"
        );
        self.scoped_rows(scope, &sql, &[product_id], policy).await
    }

    async fn insert_license(
        &self,
        scope: &Scope,
        l: &LicenseRow,
        mail: Option<&OutboundMail>,
    ) -> StoreResult<()> {
        let mut tx = self.begin(scope).await?;
        // `license_issue` checks the org (and that the license is issued live); the key
        // (policy_id, product_id, org_id) refuses a policy of another product or org.
        let sql = format!(
            "INSERT INTO licenses ({LICENSE_COLS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
        );
        sqlx::query(&sql)
            .bind(&l.id)
            .bind(&l.org_id)
            .bind(&l.product_id)
            .bind(&l.policy_id)
            .bind(&l.key_hash[..])
            .bind(&l.email)
            .bind(&l.entitlements)
            .bind(i64::from(l.max_machines))
            .bind(l.lease_ms)
            .bind(l.expires_ms)
            .bind(l.created_ms)
            .bind(&l.created_by)
            .bind(i64::from(l.failures))
            .bind(l.frozen_ms)
            .bind(l.revoked_ms)
            .execute(&mut *tx)
            .await
            .map_err(|e| write_err(e, "license_exists"))?;
        if let Some(mail) = mail {
            self.queue_license_mail(&mut tx, scope, mail).await?;
        }
        tx.commit().await.map_err(db_err)
    }

    async fn license(&self, scope: &Scope, id: &str) -> StoreResult<Option<LicenseRow>> {
        let sql = format!("SELECT {LICENSE_COLS} FROM licenses WHERE id = $1");
        self.license_row(scope, &sql, id, license).await
    }

    async fn license_by_key_hash(
        &self,
        scope: &Scope,
        key_hash: &[u8; 32],
    ) -> StoreResult<Option<LicenseRow>> {
        let mut tx = self.begin(scope).await?;
        let sql = format!("SELECT {LICENSE_COLS} FROM licenses WHERE key_hash = $1");
        let row = sqlx::query(&sql)
            .bind(&key_hash[..])
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        row.as_ref().map(license).transpose()
    }

    async fn licenses(
        &self,
        scope: &Scope,
        org_id: &str,
        product_id: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<LicenseRow>> {
        let mut tx = self.begin(scope).await?;
        let sql = format!(
            "SELECT {LICENSE_COLS} FROM licenses \
             WHERE org_id = $1 AND ($2::text IS NULL OR product_id = $2) \
             ORDER BY created_ms DESC, id DESC LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(org_id)
            .bind(product_id)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        rows.iter().map(license).collect()
    }

    async fn activate_machine(
        &self,
        scope: &Scope,
        m: &MachineRow,
        max_machines: u32,
    ) -> StoreResult<Activation> {
        // The public path's alone; the app role has no grant for it either.
        if !scope.is_system() {
            return Err(StoreError::Forbidden);
        }
        let mut tx = self.begin(scope).await?;
        let outcome = activate_in_tx(&mut tx, m, max_machines).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(outcome)
    }

    async fn machine_by_hash(
        &self,
        scope: &Scope,
        license_id: &str,
        machine_hash: &[u8; 32],
    ) -> StoreResult<Option<MachineRow>> {
        let mut tx = self.begin(scope).await?;
        let sql = format!(
            "SELECT {MACHINE_COLS} FROM license_machines WHERE license_id = $1 AND machine_hash = $2"
        );
        let row = sqlx::query(&sql)
            .bind(license_id)
            .bind(&machine_hash[..])
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        row.as_ref().map(machine).transpose()
    }

    async fn touch_machine(
        &self,
        scope: &Scope,
        machine_id: &str,
        now_ms: i64,
    ) -> StoreResult<bool> {
        if !scope.is_system() {
            return Err(StoreError::Forbidden);
        }
        let mut tx = self.begin(scope).await?;
        let done = sqlx::query("UPDATE license_machines SET last_seen_ms = $2 WHERE id = $1")
            .bind(machine_id)
            .bind(now_ms)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn machines(&self, scope: &Scope, license_id: &str) -> StoreResult<Vec<MachineRow>> {
        let sql = format!(
            "SELECT {MACHINE_COLS} FROM license_machines WHERE license_id = $1 \
             ORDER BY activated_ms, id"
        );
        self.scoped_rows(scope, &sql, &[license_id], machine).await
    }

    async fn delete_machine(
        &self,
        scope: &Scope,
        license_id: &str,
        machine_id: &str,
        now_ms: i64,
        revoked_until_ms: i64,
    ) -> StoreResult<bool> {
        // `machine_deactivate` admits licenses.revoke holders in the machine's org, and
        // `machine_revocation` lets the same record the revocation; one statement does both.
        let mut tx = self.begin(scope).await?;
        let n: i64 = sqlx::query_scalar(
            "WITH gone AS (DELETE FROM license_machines WHERE license_id = $1 AND id = $2 \
                           RETURNING id, org_id, license_id), \
                  revoked AS (INSERT INTO revoked_machines \
                                (machine_id, org_id, license_id, revoked_ms, until_ms) \
                              SELECT id, org_id, license_id, $3, $4 FROM gone) \
             SELECT count(*) FROM gone",
        )
        .bind(license_id)
        .bind(machine_id)
        .bind(now_ms)
        .bind(revoked_until_ms)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(n == 1)
    }

    async fn record_key_failure(
        &self,
        scope: &Scope,
        license_id: &str,
        now_ms: i64,
        freeze_at: u32,
        mail: Option<&OutboundMail>,
    ) -> StoreResult<KeyFailure> {
        let mut tx = self.begin(scope).await?;
        // One statement. `prior` locks the row first and, under READ COMMITTED, reads its
        // newest committed version (after waiting out a concurrent failure); the UPDATE then
        // applies to that same version. So each call sees the previous call's count and
        // freeze, and `froze` is true for exactly the one call that set `frozen_ms`.
        let row: Option<(i64, bool)> = sqlx::query_as(
            "WITH prior AS MATERIALIZED (SELECT id, frozen_ms FROM licenses WHERE id = $1 FOR UPDATE) \
             UPDATE licenses l SET failures = l.failures + 1, \
                    frozen_ms = CASE WHEN l.frozen_ms IS NULL AND l.failures + 1 >= $3 \
                                     THEN $2 ELSE l.frozen_ms END \
             FROM prior WHERE l.id = prior.id \
             RETURNING l.failures, (prior.frozen_ms IS NULL AND l.frozen_ms IS NOT NULL)",
        )
        .bind(license_id)
        .bind(now_ms)
        .bind(i64::from(freeze_at))
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
        let Some((failures, froze)) = row else {
            return Err(StoreError::NotFound);
        };
        if froze && let Some(mail) = mail {
            self.queue_license_mail(&mut tx, scope, mail).await?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(KeyFailure {
            failures: to_u32(failures, "failures")?,
            froze,
        })
    }

    async fn set_frozen(
        &self,
        scope: &Scope,
        license_id: &str,
        frozen_ms: Option<i64>,
    ) -> StoreResult<bool> {
        // `license_change` picks the rows (freeze or revoke held in their org); the trigger
        // requires licenses.freeze for these columns.
        let sql = match frozen_ms {
            Some(_) => "UPDATE licenses SET frozen_ms = $2 WHERE id = $1 AND frozen_ms IS NULL",
            None => {
                "UPDATE licenses SET frozen_ms = NULL, failures = 0 \
                 WHERE id = $1 AND frozen_ms IS NOT NULL"
            }
        };
        self.license_update(scope, sql, license_id, frozen_ms).await
    }

    async fn revoke_license(
        &self,
        scope: &Scope,
        license_id: &str,
        now_ms: i64,
    ) -> StoreResult<bool> {
        self.license_update(
            scope,
            "UPDATE licenses SET revoked_ms = $2 WHERE id = $1 AND revoked_ms IS NULL",
            license_id,
            Some(now_ms),
        )
        .await
    }

    async fn revoked_licenses(&self, scope: &Scope, product_id: &str) -> StoreResult<Vec<String>> {
        let mut tx = self.begin(scope).await?;
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM licenses WHERE product_id = $1 AND revoked_ms IS NOT NULL ORDER BY id",
        )
        .bind(product_id)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(ids)
    }

    async fn revoked_machines(
        &self,
        scope: &Scope,
        product_id: &str,
        now_ms: i64,
    ) -> StoreResult<Vec<String>> {
        let mut tx = self.begin(scope).await?;
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT r.machine_id FROM revoked_machines r JOIN licenses l ON l.id = r.license_id \
             WHERE l.product_id = $1 AND r.until_ms > $2 ORDER BY r.machine_id",
        )
        .bind(product_id)
        .bind(now_ms)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(ids)
    }
}
