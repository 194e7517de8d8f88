//! Products, policies, licenses and machines on SQLite (SPEC L1–L7). Like the org and vault
//! tables, each statement carries the tenant boundary itself ([`IN_ORG`], plus [`OWN_ORG`] where
//! a row is looked up by its id alone), so the check and the read or write are one step; the
//! permission decision is bastion-core's.

use bastion_store::{
    Activation, KeyFailure, LicenseRow, LicenseStore, MachineRow, OutboundMail, PolicyRow,
    ProductRow, Scope, StoreError, StoreResult,
};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use crate::links_mail::insert_mail;
use crate::orgs::IN_ORG;
use crate::reach::{OWN_ORG, Reach, write_err};
use crate::{SqliteStore, db_err, hash32};

const PRODUCT_COLS: &str = "id, org_id, name, created_ms";
const POLICY_COLS: &str =
    "id, org_id, product_id, name, max_machines, duration_ms, entitlements, lease_ms, created_ms";
const LICENSE_COLS: &str = "id, org_id, product_id, policy_id, key_hash, email, entitlements, \
     max_machines, lease_ms, expires_ms, created_ms, created_by, failures, frozen_ms, revoked_ms";
const MACHINE_COLS: &str = "id, org_id, license_id, machine_hash, name, activated_ms, last_seen_ms";

fn to_u32(v: i64, what: &str) -> StoreResult<u32> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} out of range")))
}

fn entitlements_json(names: &[String]) -> StoreResult<String> {
    serde_json::to_string(names).map_err(|e| StoreError::Corrupt(format!("entitlements: {e}")))
}

fn entitlements_of(r: &SqliteRow, col: &str) -> StoreResult<Vec<String>> {
    let json: String = r.try_get(col).map_err(db_err)?;
    serde_json::from_str(&json).map_err(|e| StoreError::Corrupt(format!("entitlements: {e}")))
}

fn product(r: &SqliteRow) -> StoreResult<ProductRow> {
    Ok(ProductRow {
        id: r.try_get("id").map_err(db_err)?,
        org_id: r.try_get("org_id").map_err(db_err)?,
        name: r.try_get("name").map_err(db_err)?,
        created_ms: r.try_get("created_ms").map_err(db_err)?,
    })
}

fn policy(r: &SqliteRow) -> StoreResult<PolicyRow> {
    Ok(PolicyRow {
        id: r.try_get("id").map_err(db_err)?,
        org_id: r.try_get("org_id").map_err(db_err)?,
        product_id: r.try_get("product_id").map_err(db_err)?,
        name: r.try_get("name").map_err(db_err)?,
        max_machines: to_u32(r.try_get("max_machines").map_err(db_err)?, "max_machines")?,
        duration_ms: r.try_get("duration_ms").map_err(db_err)?,
        entitlements: entitlements_of(r, "entitlements")?,
        lease_ms: r.try_get("lease_ms").map_err(db_err)?,
        created_ms: r.try_get("created_ms").map_err(db_err)?,
    })
}

fn license(r: &SqliteRow) -> StoreResult<LicenseRow> {
    Ok(LicenseRow {
        id: r.try_get("id").map_err(db_err)?,
        org_id: r.try_get("org_id").map_err(db_err)?,
        product_id: r.try_get("product_id").map_err(db_err)?,
        policy_id: r.try_get("policy_id").map_err(db_err)?,
        key_hash: hash32(r, "key_hash")?,
        email: r.try_get("email").map_err(db_err)?,
        entitlements: entitlements_of(r, "entitlements")?,
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

fn machine(r: &SqliteRow) -> StoreResult<MachineRow> {
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

/// [`LicenseStore::activate_machine`] inside its write transaction.
async fn activate_in_tx(
    conn: &mut sqlx::SqliteConnection,
    reach: Reach<'_>,
    m: &MachineRow,
    max_machines: u32,
) -> StoreResult<Activation> {
    let sql = format!("SELECT 1 FROM licenses WHERE id = ?4 AND {OWN_ORG} AND {IN_ORG}");
    let license: Option<i64> = sqlx::query_scalar(&sql)
        .bind(reach.kind)
        .bind(reach.id)
        .bind(reach.org)
        .bind(&m.license_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_err)?;
    if license.is_none() {
        return Err(StoreError::NotFound);
    }
    let sql = format!(
        "UPDATE license_machines SET name = ?3, last_seen_ms = ?4 \
         WHERE license_id = ?1 AND machine_hash = ?2 RETURNING {MACHINE_COLS}"
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
    // Decisive: the write lock is held, so no other activation can insert in between.
    let active: i64 =
        sqlx::query_scalar("SELECT count(*) FROM license_machines WHERE license_id = ?")
            .bind(&m.license_id)
            .fetch_one(&mut *conn)
            .await
            .map_err(db_err)?;
    if active >= i64::from(max_machines) {
        return Ok(Activation::LimitReached);
    }
    let sql = format!("INSERT INTO license_machines ({MACHINE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?)");
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

/// [`LicenseStore::record_key_failure`] inside its write transaction.
async fn key_failure_in_tx(
    conn: &mut sqlx::SqliteConnection,
    reach: Reach<'_>,
    license_id: &str,
    now_ms: i64,
    freeze_at: u32,
    mail: Option<&OutboundMail>,
) -> StoreResult<KeyFailure> {
    // SQLite's RETURNING sees only the new row, so the count and the freeze are two statements;
    // the write lock taken by BEGIN IMMEDIATE makes them one step, and the freeze's own
    // `frozen_ms IS NULL` guard lets only one caller freeze the key in any case.
    let sql = format!(
        "UPDATE licenses SET failures = failures + 1 WHERE id = ?4 AND {OWN_ORG} AND {IN_ORG} \
         RETURNING failures, frozen_ms IS NULL"
    );
    let counted: Option<(i64, bool)> = sqlx::query_as(&sql)
        .bind(reach.kind)
        .bind(reach.id)
        .bind(reach.org)
        .bind(license_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_err)?;
    let Some((failures, unfrozen)) = counted else {
        return Err(StoreError::NotFound);
    };
    let failures = to_u32(failures, "failures")?;
    let mut froze = false;
    if unfrozen && failures >= freeze_at {
        let done =
            sqlx::query("UPDATE licenses SET frozen_ms = ?1 WHERE id = ?2 AND frozen_ms IS NULL")
                .bind(now_ms)
                .bind(license_id)
                .execute(&mut *conn)
                .await
                .map_err(db_err)?;
        froze = done.rows_affected() == 1;
    }
    if froze && let Some(mail) = mail {
        insert_mail(conn, mail).await?;
    }
    Ok(KeyFailure { failures, froze })
}

impl SqliteStore {
    /// The rows of `sql` (which binds the reach's three parameters, then `extra` as text).
    async fn license_rows<T>(
        &self,
        reach: Reach<'_>,
        sql: &str,
        extra: &[&str],
        map: fn(&SqliteRow) -> StoreResult<T>,
    ) -> StoreResult<Vec<T>> {
        let mut q = reach.query(sql);
        for v in extra {
            q = q.bind(*v);
        }
        let rows = q.fetch_all(&self.pool).await.map_err(db_err)?;
        rows.iter().map(map).collect()
    }

    /// The one row of `sql` by id (`?4`), if the scope reaches it.
    async fn license_row<T>(
        &self,
        scope: &Scope,
        sql: &str,
        id: &str,
        map: fn(&SqliteRow) -> StoreResult<T>,
    ) -> StoreResult<Option<T>> {
        let Some(reach) = Reach::of(scope) else {
            return Ok(None);
        };
        let rows = self.license_rows(reach, sql, &[id], map).await?;
        Ok(rows.into_iter().next())
    }
}

#[async_trait::async_trait]
impl LicenseStore for SqliteStore {
    async fn insert_product(&self, scope: &Scope, p: &ProductRow) -> StoreResult<()> {
        let Some(reach) = Reach::within(scope, &p.org_id) else {
            return Err(StoreError::Forbidden);
        };
        let sql =
            format!("INSERT INTO products ({PRODUCT_COLS}) SELECT ?4, ?3, ?5, ?6 WHERE {IN_ORG}");
        let done = reach
            .query(&sql)
            .bind(&p.id)
            .bind(&p.name)
            .bind(p.created_ms)
            .execute(&self.pool)
            .await
            .map_err(|e| write_err(e, "product_exists"))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Forbidden);
        }
        Ok(())
    }

    async fn product(&self, scope: &Scope, id: &str) -> StoreResult<Option<ProductRow>> {
        let sql =
            format!("SELECT {PRODUCT_COLS} FROM products WHERE id = ?4 AND {OWN_ORG} AND {IN_ORG}");
        self.license_row(scope, &sql, id, product).await
    }

    async fn products(&self, scope: &Scope, org_id: &str) -> StoreResult<Vec<ProductRow>> {
        let Some(reach) = Reach::within(scope, org_id) else {
            return Ok(Vec::new());
        };
        let sql = format!(
            "SELECT {PRODUCT_COLS} FROM products WHERE {OWN_ORG} AND {IN_ORG} ORDER BY name, id"
        );
        self.license_rows(reach, &sql, &[], product).await
    }

    async fn insert_policy(&self, scope: &Scope, p: &PolicyRow) -> StoreResult<()> {
        let Some(reach) = Reach::within(scope, &p.org_id) else {
            return Err(StoreError::Forbidden);
        };
        // The key (product_id, org_id) refuses a product of another org: NotFound.
        let sql = format!(
            "INSERT INTO license_policies ({POLICY_COLS}) \
             SELECT ?4, ?3, ?5, ?6, ?7, ?8, ?9, ?10, ?11 WHERE {IN_ORG}"
        );
        let done = reach
            .query(&sql)
            .bind(&p.id)
            .bind(&p.product_id)
            .bind(&p.name)
            .bind(i64::from(p.max_machines))
            .bind(p.duration_ms)
            .bind(entitlements_json(&p.entitlements)?)
            .bind(p.lease_ms)
            .bind(p.created_ms)
            .execute(&self.pool)
            .await
            .map_err(|e| write_err(e, "policy_exists"))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Forbidden);
        }
        Ok(())
    }

    async fn policy(&self, scope: &Scope, id: &str) -> StoreResult<Option<PolicyRow>> {
        let sql = format!(
            "SELECT {POLICY_COLS} FROM license_policies WHERE id = ?4 AND {OWN_ORG} AND {IN_ORG}"
        );
        self.license_row(scope, &sql, id, policy).await
    }

    async fn policies(&self, scope: &Scope, product_id: &str) -> StoreResult<Vec<PolicyRow>> {
        let Some(reach) = Reach::of(scope) else {
            return Ok(Vec::new());
        };
        let sql = format!(
            "SELECT {POLICY_COLS} FROM license_policies \
             WHERE product_id = ?4 AND {OWN_ORG} AND {IN_ORG} ORDER BY name, id"
        );
        self.license_rows(reach, &sql, &[product_id], policy).await
    }

    async fn insert_license(
        &self,
        scope: &Scope,
        l: &LicenseRow,
        mail: Option<&OutboundMail>,
    ) -> StoreResult<()> {
        let Some(reach) = Reach::within(scope, &l.org_id) else {
            return Err(StoreError::Forbidden);
        };
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        // The key (policy_id, product_id, org_id) refuses a policy of another product or org.
        let sql = format!(
            "INSERT INTO licenses ({LICENSE_COLS}) \
             SELECT ?4, ?3, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17 WHERE {IN_ORG}"
        );
        let done = reach
            .query(&sql)
            .bind(&l.id)
            .bind(&l.product_id)
            .bind(&l.policy_id)
            .bind(&l.key_hash[..])
            .bind(&l.email)
            .bind(entitlements_json(&l.entitlements)?)
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
        if done.rows_affected() == 0 {
            return Err(StoreError::Forbidden);
        }
        if let Some(mail) = mail {
            insert_mail(&mut tx, mail).await?;
        }
        tx.commit().await.map_err(db_err)
    }

    async fn license(&self, scope: &Scope, id: &str) -> StoreResult<Option<LicenseRow>> {
        let sql =
            format!("SELECT {LICENSE_COLS} FROM licenses WHERE id = ?4 AND {OWN_ORG} AND {IN_ORG}");
        self.license_row(scope, &sql, id, license).await
    }

    async fn license_by_key_hash(
        &self,
        scope: &Scope,
        key_hash: &[u8; 32],
    ) -> StoreResult<Option<LicenseRow>> {
        let Some(reach) = Reach::of(scope) else {
            return Ok(None);
        };
        let sql = format!(
            "SELECT {LICENSE_COLS} FROM licenses WHERE key_hash = ?4 AND {OWN_ORG} AND {IN_ORG}"
        );
        let row = reach
            .query(&sql)
            .bind(&key_hash[..])
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(license).transpose()
    }

    async fn licenses(
        &self,
        scope: &Scope,
        org_id: &str,
        product_id: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<LicenseRow>> {
        let Some(reach) = Reach::within(scope, org_id) else {
            return Ok(Vec::new());
        };
        let sql = format!(
            "SELECT {LICENSE_COLS} FROM licenses \
             WHERE {OWN_ORG} AND (?4 IS NULL OR product_id = ?4) AND {IN_ORG} \
             ORDER BY created_ms DESC, id DESC LIMIT ?5"
        );
        let rows = reach
            .query(&sql)
            .bind(product_id)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter().map(license).collect()
    }

    async fn activate_machine(
        &self,
        scope: &Scope,
        m: &MachineRow,
        max_machines: u32,
    ) -> StoreResult<Activation> {
        // Activation is the public path's (a key proves it), never a request scope's.
        if !scope.is_system() {
            return Err(StoreError::Forbidden);
        }
        let Some(reach) = Reach::within(scope, &m.org_id) else {
            return Err(StoreError::Forbidden);
        };
        // IMMEDIATE: concurrent activations queue here, so the count below is decisive.
        let mut conn = self.begin_immediate().await?;
        let result = activate_in_tx(&mut conn, reach, m, max_machines).await;
        SqliteStore::end_immediate(conn, result).await
    }

    async fn machine_by_hash(
        &self,
        scope: &Scope,
        license_id: &str,
        machine_hash: &[u8; 32],
    ) -> StoreResult<Option<MachineRow>> {
        let Some(reach) = Reach::of(scope) else {
            return Ok(None);
        };
        let sql = format!(
            "SELECT {MACHINE_COLS} FROM license_machines \
             WHERE license_id = ?4 AND machine_hash = ?5 AND {OWN_ORG} AND {IN_ORG}"
        );
        let row = reach
            .query(&sql)
            .bind(license_id)
            .bind(&machine_hash[..])
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
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
        let Some(reach) = Reach::of(scope) else {
            return Ok(false);
        };
        let sql = format!(
            "UPDATE license_machines SET last_seen_ms = ?5 WHERE id = ?4 AND {OWN_ORG} AND {IN_ORG}"
        );
        let done = reach
            .query(&sql)
            .bind(machine_id)
            .bind(now_ms)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn machines(&self, scope: &Scope, license_id: &str) -> StoreResult<Vec<MachineRow>> {
        let Some(reach) = Reach::of(scope) else {
            return Ok(Vec::new());
        };
        let sql = format!(
            "SELECT {MACHINE_COLS} FROM license_machines \
             WHERE license_id = ?4 AND {OWN_ORG} AND {IN_ORG} ORDER BY activated_ms, id"
        );
        self.license_rows(reach, &sql, &[license_id], machine).await
    }

    async fn delete_machine(
        &self,
        scope: &Scope,
        license_id: &str,
        machine_id: &str,
        now_ms: i64,
        revoked_until_ms: i64,
    ) -> StoreResult<bool> {
        let Some(reach) = Reach::of(scope) else {
            return Ok(false);
        };
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let sql = format!(
            "DELETE FROM license_machines \
             WHERE license_id = ?4 AND id = ?5 AND {OWN_ORG} AND {IN_ORG} RETURNING org_id"
        );
        let org: Option<String> = sqlx::query_scalar(&sql)
            .bind(reach.kind)
            .bind(reach.id)
            .bind(reach.org)
            .bind(license_id)
            .bind(machine_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        let Some(org) = org else {
            return Ok(false);
        };
        sqlx::query(
            "INSERT INTO revoked_machines (machine_id, org_id, license_id, revoked_ms, until_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(machine_id)
        .bind(&org)
        .bind(license_id)
        .bind(now_ms)
        .bind(revoked_until_ms)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(true)
    }

    async fn record_key_failure(
        &self,
        scope: &Scope,
        license_id: &str,
        now_ms: i64,
        freeze_at: u32,
        mail: Option<&OutboundMail>,
    ) -> StoreResult<KeyFailure> {
        let Some(reach) = Reach::of(scope) else {
            return Err(StoreError::Forbidden);
        };
        let mut conn = self.begin_immediate().await?;
        let result = key_failure_in_tx(&mut conn, reach, license_id, now_ms, freeze_at, mail).await;
        SqliteStore::end_immediate(conn, result).await
    }

    async fn set_frozen(
        &self,
        scope: &Scope,
        license_id: &str,
        frozen_ms: Option<i64>,
    ) -> StoreResult<bool> {
        let Some(reach) = Reach::of(scope) else {
            return Ok(false);
        };
        let done = match frozen_ms {
            Some(at) => {
                let sql = format!(
                    "UPDATE licenses SET frozen_ms = ?5 \
                     WHERE id = ?4 AND frozen_ms IS NULL AND {OWN_ORG} AND {IN_ORG}"
                );
                reach
                    .query(&sql)
                    .bind(license_id)
                    .bind(at)
                    .execute(&self.pool)
                    .await
            }
            None => {
                let sql = format!(
                    "UPDATE licenses SET frozen_ms = NULL, failures = 0 \
                     WHERE id = ?4 AND frozen_ms IS NOT NULL AND {OWN_ORG} AND {IN_ORG}"
                );
                reach.query(&sql).bind(license_id).execute(&self.pool).await
            }
        }
        .map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn revoke_license(
        &self,
        scope: &Scope,
        license_id: &str,
        now_ms: i64,
    ) -> StoreResult<bool> {
        let Some(reach) = Reach::of(scope) else {
            return Ok(false);
        };
        let sql = format!(
            "UPDATE licenses SET revoked_ms = ?5 \
             WHERE id = ?4 AND revoked_ms IS NULL AND {OWN_ORG} AND {IN_ORG}"
        );
        let done = reach
            .query(&sql)
            .bind(license_id)
            .bind(now_ms)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn revoked_licenses(&self, scope: &Scope, product_id: &str) -> StoreResult<Vec<String>> {
        let Some(reach) = Reach::of(scope) else {
            return Ok(Vec::new());
        };
        let sql = format!(
            "SELECT id FROM licenses \
             WHERE product_id = ?4 AND revoked_ms IS NOT NULL AND {OWN_ORG} AND {IN_ORG} ORDER BY id"
        );
        let ids: Vec<String> = sqlx::query_scalar(&sql)
            .bind(reach.kind)
            .bind(reach.id)
            .bind(reach.org)
            .bind(product_id)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(ids)
    }

    async fn revoked_machines(
        &self,
        scope: &Scope,
        product_id: &str,
        now_ms: i64,
    ) -> StoreResult<Vec<String>> {
        let Some(reach) = Reach::of(scope) else {
            return Ok(Vec::new());
        };
        let sql = format!(
            "SELECT machine_id FROM revoked_machines r \
             WHERE r.until_ms > ?5 AND EXISTS (SELECT 1 FROM licenses l \
               WHERE l.id = r.license_id AND l.product_id = ?4 AND {OWN_ORG} AND {IN_ORG}) \
             ORDER BY machine_id"
        );
        let ids: Vec<String> = sqlx::query_scalar(&sql)
            .bind(reach.kind)
            .bind(reach.id)
            .bind(reach.org)
            .bind(product_id)
            .bind(now_ms)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(ids)
    }
}
