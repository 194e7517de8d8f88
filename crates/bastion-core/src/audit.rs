//! The tamper-evident audit trail (SPEC U2).
//!
//! Each event carries the SHA-256 of its predecessor over a canonical, length-prefixed encoding;
//! Ed25519-signed checkpoints (size, head hash, time) are written every N events or T seconds
//! and can be kept off the box. [`verify`] re-derives the whole chain and names the first event
//! that does not match: edited, deleted, inserted, reordered, or truncated behind a checkpoint.

use std::sync::Arc;

use base64::Engine;
use bastion_crypto::signing::verify_ed25519;
use bastion_store::{
    AuditRecord, ChainHead, CheckpointRecord, NewAuditEvent, Scope, Store, StoreError,
};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::Clock;
use crate::keys::SharedKeyRing;

const SCOPE: Scope = Scope::System("audit");
const EVENT_DOMAIN: &[u8] = b"bastion.audit.event.v1\0";
const CHECKPOINT_DOMAIN: &[u8] = b"bastion.audit.checkpoint.v1\0";
/// Rows read per page while verifying.
const VERIFY_PAGE: u32 = 20_000;
/// Pages read ahead concurrently while verifying.
const VERIFY_PREFETCH: usize = 3;

/// What kind of action an event records (SPEC U1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Authentication,
    Action,
    Webhook,
    LlmUsage,
    DataSync,
    Admin,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Authentication => "authentication",
            Self::Action => "action",
            Self::Webhook => "webhook",
            Self::LlmUsage => "llm_usage",
            Self::DataSync => "data_sync",
            Self::Admin => "admin",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Failure,
    Denied,
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Denied => "denied",
            Self::Error => "error",
        }
    }
}

/// An event to record. `details` must never contain a secret.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub actor: Option<String>,
    pub org_id: Option<String>,
    pub category: Category,
    pub action: String,
    pub outcome: Outcome,
    pub details: serde_json::Value,
}

impl AuditEvent {
    pub fn new(category: Category, action: impl Into<String>, outcome: Outcome) -> Self {
        Self {
            actor: None,
            org_id: None,
            category,
            action: action.into(),
            outcome,
            details: serde_json::Value::Null,
        }
    }
    pub fn actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }
    pub fn org(mut self, org: impl Into<String>) -> Self {
        self.org_id = Some(org.into());
        self
    }
    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit storage: {0}")]
    Store(#[from] StoreError),
    #[error("no audit signing key in the key ring")]
    NoSigningKey,
    #[error("checkpoint file: {0}")]
    CheckpointFile(String),
    #[error("export write failed: {0}")]
    Io(#[from] std::io::Error),
}

fn put(buf: &mut Vec<u8>, field: &[u8]) {
    buf.extend_from_slice(&(field.len() as u64).to_be_bytes());
    buf.extend_from_slice(field);
}

fn put_opt(buf: &mut Vec<u8>, field: Option<&str>) {
    match field {
        None => buf.push(0),
        Some(s) => {
            buf.push(1);
            put(buf, s.as_bytes());
        }
    }
}

/// The canonical encoding of an event at `seq` after `prev`: domain tag, then every field
/// length-prefixed, so no two different events encode alike. `buf` is reused between calls.
pub fn encode_event(buf: &mut Vec<u8>, prev: &[u8; 32], seq: i64, ev: &NewAuditEvent) {
    buf.clear();
    buf.extend_from_slice(EVENT_DOMAIN);
    buf.extend_from_slice(prev);
    buf.extend_from_slice(&seq.to_be_bytes());
    buf.extend_from_slice(&ev.ts_ms.to_be_bytes());
    put_opt(buf, ev.actor.as_deref());
    put_opt(buf, ev.org_id.as_deref());
    put(buf, ev.category.as_bytes());
    put(buf, ev.action.as_bytes());
    put(buf, ev.outcome.as_bytes());
    put(buf, ev.details.as_bytes());
}

/// The hash an event at `seq` must carry after `prev`.
pub fn event_hash(prev: &ChainHead, seq: i64, ev: &NewAuditEvent) -> [u8; 32] {
    let mut buf = Vec::with_capacity(256);
    encode_event(&mut buf, &prev.hash, seq, ev);
    bastion_crypto::sha256(&buf)
}

/// The message a checkpoint signature covers.
pub fn checkpoint_message(size: i64, head_hash: &[u8; 32], ts_ms: i64, key_id: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(128);
    m.extend_from_slice(CHECKPOINT_DOMAIN);
    m.extend_from_slice(&size.to_be_bytes());
    m.extend_from_slice(head_hash);
    m.extend_from_slice(&ts_ms.to_be_bytes());
    put(&mut m, key_id.as_bytes());
    m
}

/// A checkpoint as written to a file to keep off the box (`bastion audit checkpoint --out`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CheckpointFile {
    pub format: String,
    pub size: i64,
    pub head_hash: String,
    pub ts_ms: i64,
    pub key_id: String,
    pub signature: String,
    pub public_key: String,
}

const CHECKPOINT_FORMAT: &str = "bastion-audit-checkpoint-v1";

impl CheckpointFile {
    pub fn from_record(cp: &CheckpointRecord, public_key: &[u8]) -> Self {
        let b64 = base64::engine::general_purpose::STANDARD;
        Self {
            format: CHECKPOINT_FORMAT.into(),
            size: cp.size,
            head_hash: hex::encode(cp.head_hash),
            ts_ms: cp.ts_ms,
            key_id: cp.key_id.clone(),
            signature: b64.encode(&cp.signature),
            public_key: b64.encode(public_key),
        }
    }

    pub fn to_record(&self) -> Result<CheckpointRecord, AuditError> {
        if self.format != CHECKPOINT_FORMAT {
            return Err(AuditError::CheckpointFile(format!(
                "unknown format {:?}",
                self.format
            )));
        }
        let head = hex::decode(&self.head_hash)
            .map_err(|_| AuditError::CheckpointFile("head_hash is not hex".into()))?;
        let head_hash = <[u8; 32]>::try_from(head.as_slice())
            .map_err(|_| AuditError::CheckpointFile("head_hash is not 32 bytes".into()))?;
        let signature = base64::engine::general_purpose::STANDARD
            .decode(&self.signature)
            .map_err(|_| AuditError::CheckpointFile("signature is not base64".into()))?;
        Ok(CheckpointRecord {
            size: self.size,
            head_hash,
            ts_ms: self.ts_ms,
            key_id: self.key_id.clone(),
            signature,
        })
    }
}

/// Appends events to the chain and writes signed checkpoints.
pub struct AuditLog {
    store: Arc<dyn Store>,
    keys: Arc<SharedKeyRing>,
    clock: Arc<dyn Clock>,
    checkpoint_every: i64,
    /// Size of the last checkpoint this process wrote (avoids re-signing an unchanged head).
    last_checkpoint: Mutex<i64>,
}

impl AuditLog {
    pub fn new(
        store: Arc<dyn Store>,
        keys: Arc<SharedKeyRing>,
        clock: Arc<dyn Clock>,
        checkpoint_every: u64,
    ) -> Self {
        Self {
            store,
            keys,
            clock,
            checkpoint_every: i64::try_from(checkpoint_every.max(1)).unwrap_or(i64::MAX),
            last_checkpoint: Mutex::new(0),
        }
    }

    fn to_row(&self, ev: &AuditEvent) -> NewAuditEvent {
        NewAuditEvent {
            ts_ms: self.clock.now_ms(),
            actor: ev.actor.clone(),
            org_id: ev.org_id.clone(),
            category: ev.category.as_str().to_owned(),
            action: ev.action.clone(),
            outcome: ev.outcome.as_str().to_owned(),
            // serde_json's default map is ordered by key, so this is canonical for our own values.
            details: ev.details.to_string(),
        }
    }

    /// Records one event.
    pub async fn record(&self, ev: AuditEvent) -> Result<ChainHead, AuditError> {
        self.record_batch(std::slice::from_ref(&ev)).await
    }

    /// Records events in order, in one transaction; checkpoints when a multiple of N is crossed.
    #[tracing::instrument(skip_all, fields(events = events.len()))]
    pub async fn record_batch(&self, events: &[AuditEvent]) -> Result<ChainHead, AuditError> {
        let rows: Vec<_> = events.iter().map(|e| self.to_row(e)).collect();
        let head = self.store.append(&SCOPE, &rows, &event_hash).await?;
        let before = head.seq - rows.len() as i64;
        if head.seq / self.checkpoint_every > before / self.checkpoint_every {
            self.checkpoint().await?;
        }
        Ok(head)
    }

    /// Signs and stores a checkpoint of the current head (none for an empty or unchanged log).
    pub async fn checkpoint(&self) -> Result<Option<CheckpointRecord>, AuditError> {
        let ring = self.keys.current();
        let signer = ring.audit_signer().ok_or(AuditError::NoSigningKey)?;
        let mut last = self.last_checkpoint.lock().await;
        let head = self.store.head(&SCOPE).await?;
        if head.seq == 0 || head.seq == *last {
            return Ok(None);
        }
        let ts_ms = self.clock.now_ms();
        let msg = checkpoint_message(head.seq, &head.hash, ts_ms, signer.key_id());
        let cp = CheckpointRecord {
            size: head.seq,
            head_hash: head.hash,
            ts_ms,
            key_id: signer.key_id().to_owned(),
            signature: signer.sign(&msg),
        };
        self.store.insert_checkpoint(&SCOPE, &cp).await?;
        *last = head.seq;
        Ok(Some(cp))
    }

    /// The newest checkpoint as a file to keep elsewhere (writes one first if the head moved).
    pub async fn export_checkpoint(&self) -> Result<Option<CheckpointFile>, AuditError> {
        self.checkpoint().await?;
        let Some(cp) = self.store.checkpoints(&SCOPE).await?.pop() else {
            return Ok(None);
        };
        let pk = self
            .keys
            .current()
            .audit_public_keys()
            .into_iter()
            .find(|(id, _)| *id == cp.key_id)
            .map(|(_, pk)| pk)
            .ok_or(AuditError::NoSigningKey)?;
        Ok(Some(CheckpointFile::from_record(&cp, &pk)))
    }
}

/// Why verification failed, naming the event or checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum Finding {
    /// The event's contents do not hash to its stored hash (edited, or moved from elsewhere).
    EventAltered { seq: i64 },
    /// The event does not point at its predecessor's hash (inserted, reordered or re-linked).
    BrokenLink { seq: i64 },
    /// A sequence number is missing or out of place (deleted or inserted events).
    SequenceGap { expected: i64, found: i64 },
    /// The log is shorter than a checkpoint says it was (tail truncated).
    Truncated { checkpoint_size: i64, log_size: i64 },
    /// A checkpoint's head hash is not the chain's hash at that size.
    CheckpointMismatch { size: i64 },
    /// A checkpoint's signature does not verify.
    BadCheckpointSignature { size: i64 },
    /// A checkpoint is signed by a key that is not in the key ring.
    UnknownCheckpointKey { size: i64, key_id: String },
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::EventAltered { seq } => write!(
                f,
                "event #{seq} was altered: its contents do not match its hash"
            ),
            Self::BrokenLink { seq } => write!(
                f,
                "event #{seq} does not follow its predecessor (inserted, reordered or removed before it)"
            ),
            Self::SequenceGap { expected, found } => write!(
                f,
                "expected event #{expected}, found #{found}: events deleted or inserted"
            ),
            Self::Truncated {
                checkpoint_size,
                log_size,
            } => {
                write!(
                    f,
                    "the log has {log_size} events but a checkpoint certifies {checkpoint_size}: the tail was truncated"
                )
            }
            Self::CheckpointMismatch { size } => {
                write!(f, "checkpoint at size {size} does not match the chain")
            }
            Self::BadCheckpointSignature { size } => write!(
                f,
                "checkpoint at size {size} has an invalid signature (forged)"
            ),
            Self::UnknownCheckpointKey { size, key_id } => write!(
                f,
                "checkpoint at size {size} is signed by unknown key {key_id}"
            ),
        }
    }
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub events: i64,
    pub head_hash: String,
    pub checkpoints_checked: usize,
    pub findings: Vec<Finding>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.findings.is_empty()
    }
}

fn check_checkpoint_sig(
    cp: &CheckpointRecord,
    public_keys: &[(String, Vec<u8>)],
) -> Option<Finding> {
    let Some((_, pk)) = public_keys.iter().find(|(id, _)| *id == cp.key_id) else {
        return Some(Finding::UnknownCheckpointKey {
            size: cp.size,
            key_id: cp.key_id.clone(),
        });
    };
    let msg = checkpoint_message(cp.size, &cp.head_hash, cp.ts_ms, &cp.key_id);
    verify_ed25519(pk, &msg, &cp.signature)
        .err()
        .map(|_| Finding::BadCheckpointSignature { size: cp.size })
}

/// Re-derives the whole chain from the store and checks every stored checkpoint plus `extra`
/// ones (files kept off the box) against `public_keys`. `progress(done)` is called per page.
pub async fn verify(
    store: &dyn Store,
    public_keys: &[(String, Vec<u8>)],
    extra: &[CheckpointRecord],
    progress: &mut (dyn FnMut(i64) + Send),
) -> Result<VerifyReport, AuditError> {
    let mut checkpoints = store.checkpoints(&SCOPE).await?;
    checkpoints.extend_from_slice(extra);
    checkpoints.sort_by_key(|c| c.size);
    let mut findings: Vec<Finding> = checkpoints
        .iter()
        .filter_map(|c| check_checkpoint_sig(c, public_keys))
        .collect();

    let mut prev = ChainHead::GENESIS;
    let mut expected_seq = 1;
    let mut cp_idx = 0;
    let mut buf = Vec::with_capacity(512);
    // Pages are fetched a few at a time on separate connections while earlier ones are checked;
    // each still has to start exactly where the previous ended, so a gap is caught as before.
    let page_size = i64::from(VERIFY_PAGE);
    let mut pages = futures_util::stream::iter(0i64..)
        .map(|k| store.events_after(&SCOPE, k * page_size, VERIFY_PAGE))
        .buffered(VERIFY_PREFETCH);
    'pages: while let Some(page) = pages.next().await {
        let page = page?;
        if page.is_empty() {
            break;
        }
        for AuditRecord {
            seq,
            event,
            prev_hash,
            hash,
        } in &page
        {
            if *seq != expected_seq {
                findings.push(Finding::SequenceGap {
                    expected: expected_seq,
                    found: *seq,
                });
                break 'pages;
            }
            if prev_hash != &prev.hash {
                findings.push(Finding::BrokenLink { seq: *seq });
                break 'pages;
            }
            encode_event(&mut buf, &prev.hash, *seq, event);
            if &bastion_crypto::sha256(&buf) != hash {
                findings.push(Finding::EventAltered { seq: *seq });
                break 'pages;
            }
            prev = ChainHead {
                seq: *seq,
                hash: *hash,
            };
            expected_seq += 1;
            while cp_idx < checkpoints.len() && checkpoints[cp_idx].size == prev.seq {
                if checkpoints[cp_idx].head_hash != prev.hash {
                    findings.push(Finding::CheckpointMismatch { size: prev.seq });
                }
                cp_idx += 1;
            }
        }
        progress(prev.seq);
    }
    // Truncation is only meaningful when the chain itself read clean to its end.
    let chain_clean = findings.iter().all(|f| {
        matches!(
            f,
            Finding::BadCheckpointSignature { .. } | Finding::UnknownCheckpointKey { .. }
        )
    });
    if chain_clean && let Some(cp) = checkpoints.iter().rev().find(|c| c.size > prev.seq) {
        findings.push(Finding::Truncated {
            checkpoint_size: cp.size,
            log_size: prev.seq,
        });
    }
    Ok(VerifyReport {
        events: prev.seq,
        head_hash: hex::encode(prev.hash),
        checkpoints_checked: checkpoints.len(),
        findings,
    })
}

/// One exported event (`bastion audit export --format jsonl`), with its chain fields.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportedEvent {
    pub seq: i64,
    pub ts_ms: i64,
    pub actor: Option<String>,
    pub org_id: Option<String>,
    pub category: String,
    pub action: String,
    pub outcome: String,
    /// Canonical JSON exactly as hashed.
    pub details: String,
    pub prev_hash: String,
    pub hash: String,
}

impl From<&AuditRecord> for ExportedEvent {
    fn from(r: &AuditRecord) -> Self {
        Self {
            seq: r.seq,
            ts_ms: r.event.ts_ms,
            actor: r.event.actor.clone(),
            org_id: r.event.org_id.clone(),
            category: r.event.category.clone(),
            action: r.event.action.clone(),
            outcome: r.event.outcome.clone(),
            details: r.event.details.clone(),
            prev_hash: hex::encode(r.prev_hash),
            hash: hex::encode(r.hash),
        }
    }
}

/// Streams every event in order to `sink`, page by page.
pub async fn export(
    store: &dyn Store,
    sink: &mut (dyn FnMut(&ExportedEvent) -> std::io::Result<()> + Send),
) -> Result<i64, AuditError> {
    let mut after = 0;
    loop {
        let page = store.events_after(&SCOPE, after, VERIFY_PAGE).await?;
        let Some(last) = page.last() else {
            return Ok(after);
        };
        after = last.seq;
        for r in &page {
            sink(&ExportedEvent::from(r))?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(actor: Option<&str>, org: Option<&str>, action: &str, details: &str) -> NewAuditEvent {
        NewAuditEvent {
            ts_ms: 1,
            actor: actor.map(str::to_owned),
            org_id: org.map(str::to_owned),
            category: "admin".into(),
            action: action.into(),
            outcome: "success".into(),
            details: details.into(),
        }
    }

    #[test]
    fn u2_encoding_separates_fields_so_no_two_events_collide() {
        let h = |e: &NewAuditEvent| event_hash(&ChainHead::GENESIS, 1, e);
        // Moving bytes between adjacent fields, or None vs. empty, changes the hash.
        assert_ne!(
            h(&ev(Some("ab"), None, "c", "{}")),
            h(&ev(Some("a"), None, "bc", "{}"))
        );
        assert_ne!(
            h(&ev(None, None, "a", "{}")),
            h(&ev(Some(""), None, "a", "{}"))
        );
        assert_ne!(
            h(&ev(Some("x"), None, "a", "{}")),
            h(&ev(None, Some("x"), "a", "{}"))
        );
        // Position and predecessor are bound too.
        let e = ev(None, None, "a", "{}");
        assert_ne!(
            event_hash(&ChainHead::GENESIS, 1, &e),
            event_hash(&ChainHead::GENESIS, 2, &e)
        );
        assert_ne!(
            event_hash(&ChainHead::GENESIS, 1, &e),
            event_hash(
                &ChainHead {
                    seq: 0,
                    hash: [1; 32]
                },
                1,
                &e
            )
        );
    }

    #[test]
    fn u2_checkpoint_file_round_trips_and_rejects_foreign_formats() {
        let cp = CheckpointRecord {
            size: 9,
            head_hash: [3; 32],
            ts_ms: 5,
            key_id: "audit-v1-x".into(),
            signature: vec![1, 2, 3],
        };
        let file = CheckpointFile::from_record(&cp, &[9; 32]);
        assert_eq!(file.to_record().unwrap(), cp);
        let json = serde_json::to_string(&file).unwrap();
        assert_eq!(serde_json::from_str::<CheckpointFile>(&json).unwrap(), file);
        let mut other = file.clone();
        other.format = "something-else".into();
        assert!(other.to_record().is_err());
        let mut short = file;
        short.head_hash = "00".into();
        assert!(short.to_record().is_err());
    }

    #[test]
    fn u2_checkpoint_message_binds_every_field() {
        let base = checkpoint_message(5, &[1; 32], 7, "k");
        assert_ne!(base, checkpoint_message(6, &[1; 32], 7, "k"));
        assert_ne!(base, checkpoint_message(5, &[2; 32], 7, "k"));
        assert_ne!(base, checkpoint_message(5, &[1; 32], 8, "k"));
        assert_ne!(base, checkpoint_message(5, &[1; 32], 7, "k2"));
    }
}
