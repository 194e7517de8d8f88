//! Rotation of data keys (SPEC S3): after `bastion keys rotate` adds a version, [`Vault::rewrap`]
//! re-seals older rows under it, online and in batches; [`Vault::retire`] then retires the old
//! versions, refusing while any row still uses one; [`Vault::status`] shows rows per key.
//!
//! Rewrap is resumable by construction: it only picks rows whose key column is not the newest
//! key, and each batch commits on its own, so a killed run loses at most its open batch and the
//! next run starts where it stopped. Each row is written only if it still holds the envelope
//! that was read (compare-and-swap), so a value the API wrote meanwhile is never overwritten.

use bastion_crypto::keyring::Purpose;
use bastion_store::{Rewrapped, Scope, SealedColumn, SealedCount, StoreError};

use super::{Field, Vault, VaultError, purpose_of};
use crate::keys::KeyError;

const SCOPE: Scope = Scope::System("vault");

/// Where a rewrap stands, reported after every batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewrapProgress {
    pub column: SealedColumn,
    /// Rows not under the newest key when this column started.
    pub total: u64,
    /// Rows looked at so far (rewrapped, changed meanwhile, or failed).
    pub done: u64,
}

/// What a rewrap did to one column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnReport {
    pub column: SealedColumn,
    /// The newest key, which now seals every row it rewrapped.
    pub key_id: String,
    pub rewrapped: u64,
    /// Rows written by someone else between read and write: already current, left alone.
    pub changed_meanwhile: u64,
    /// Rows that did not open (row id and the reason; never a value).
    pub failed: Vec<(String, String)>,
}

/// Rows per key, and the encryption budget each key has used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultStatus {
    pub rows: Vec<SealedCount>,
    pub encryptions: Vec<(String, u64)>,
}

/// The sealed columns of `purpose` (all of them when `None`).
pub fn columns_of(purpose: Option<Purpose>) -> Vec<SealedColumn> {
    SealedColumn::ALL
        .iter()
        .copied()
        .filter(|c| purpose.is_none_or(|p| purpose_of(*c) == p))
        .collect()
}

impl Vault {
    /// Re-seals every row of `purpose`'s columns (every column when `None`) that an older key
    /// sealed, `batch` rows per transaction, calling `progress` after each batch. Rows that do
    /// not open are reported and left as they are; the rest continue.
    pub async fn rewrap(
        &self,
        purpose: Option<Purpose>,
        batch: u32,
        pause: std::time::Duration,
        progress: &mut (dyn FnMut(&RewrapProgress) + Send),
    ) -> Result<Vec<ColumnReport>, VaultError> {
        let batch = batch.clamp(1, 10_000);
        let counts = self.store.sealed_counts(&SCOPE).await?;
        let mut reports = Vec::new();
        for column in columns_of(purpose) {
            let current = self
                .ring
                .current()
                .data_key(purpose_of(column))?
                .key_id()
                .to_owned();
            let total = counts
                .iter()
                .filter(|c| c.column == column && c.key_id != current)
                .map(|c| c.rows)
                .sum();
            let mut report = ColumnReport {
                column,
                key_id: current.clone(),
                rewrapped: 0,
                changed_meanwhile: 0,
                failed: Vec::new(),
            };
            let mut state = RewrapProgress {
                column,
                total,
                done: 0,
            };
            progress(&state);
            let mut after: Option<String> = None;
            loop {
                let rows = self
                    .store
                    .sealed_batch(&SCOPE, column, &current, after.as_deref(), batch)
                    .await?;
                let Some(last) = rows.last() else { break };
                after = Some(last.row_id.clone());
                let failed_before = report.failed.len();
                let mut out = Vec::with_capacity(rows.len());
                for row in rows {
                    let field = Field::of(column, &row.row_id);
                    match self.open(&field, &row.envelope) {
                        Ok(plain) => {
                            let sealed = self.seal(&field, &plain).await?;
                            out.push(Rewrapped {
                                row_id: row.row_id,
                                old: row.envelope,
                                key_id: sealed.key_id,
                                new: sealed.envelope,
                            });
                        }
                        Err(e) => report.failed.push((row.row_id, e.to_string())),
                    }
                }
                let attempted = out.len() as u64;
                let changed = self.store.replace_sealed(&SCOPE, column, &out).await?;
                report.rewrapped += changed;
                report.changed_meanwhile += attempted - changed.min(attempted);
                state.done += attempted + (report.failed.len() - failed_before) as u64;
                progress(&state);
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
            }
            reports.push(report);
        }
        Ok(reports)
    }

    /// Retires every version of `purpose`'s key below `below_version`: afterwards nothing opens
    /// under them. Refused while a row is still sealed by one (run rewrap first), and for the
    /// newest version. Returns how many keys were retired.
    pub async fn retire(&self, purpose: Purpose, below_version: u32) -> Result<u64, VaultError> {
        if !purpose.seals_data() {
            return Err(VaultError::Key(KeyError::NotRetirable(purpose.as_str())));
        }
        let ring = self.ring.current();
        let newest = ring.data_key(purpose)?.version();
        if below_version > newest {
            return Err(VaultError::Key(KeyError::RetireNewest {
                purpose: purpose.as_str(),
                newest,
            }));
        }
        let ids: Vec<String> = ring
            .records()
            .filter(|r| r.purpose == purpose.as_str() && r.version < below_version && !r.retired)
            .map(|r| format!("{}-v{}", purpose.as_str(), r.version))
            .collect();
        if ids.is_empty() {
            return Ok(0);
        }
        match self
            .store
            .retire_keys(&SCOPE, &columns_of(Some(purpose)), &ids)
            .await
        {
            Err(StoreError::Conflict(_)) => Err(VaultError::StillSealed {
                purpose: purpose.as_str(),
                below_version,
            }),
            other => Ok(other?),
        }
    }

    /// Rows per key in every sealed column, and encryptions reserved per key.
    pub async fn status(&self) -> Result<VaultStatus, VaultError> {
        Ok(VaultStatus {
            rows: self.store.sealed_counts(&SCOPE).await?,
            encryptions: self.store.encryptions(&SCOPE).await?,
        })
    }
}
