//! U2: every kind of tampering with the audit trail is caught, on SQLite and PostgreSQL. The
//! attacker here has direct write access to the database (even as its owner) and may know the
//! hash scheme; only the checkpoint signing key, derived from the master key, is out of reach.

use bastion_core::audit::{
    self, AuditEvent, Category, CheckpointFile, Finding, Outcome, VerifyReport,
};
use bastion_server::Bastion;
use bastion_store::{ChainHead, NewAuditEvent, Scope};
use bastion_testkit::pg::PgTestDb;

const N: i64 = 50;

/// A Bastion with N events and a checkpoint file, plus an attacker connection to its database.
struct Fixture {
    bastion: Bastion,
    checkpoint: CheckpointFile,
    attacker: Attacker,
    dir: tempfile::TempDir,
    _pg: Option<PgTestDb>,
}

enum Attacker {
    Sqlite(sqlx::SqlitePool),
    Pg(sqlx::PgPool),
}

impl Attacker {
    fn table(&self, t: &str) -> String {
        match self {
            Self::Sqlite(_) => t.to_owned(),
            Self::Pg(_) => format!("bastion.{t}"),
        }
    }

    async fn exec(&self, sql: &str) {
        match self {
            Self::Sqlite(p) => sqlx::query(sql).execute(p).await.map(|_| ()),
            Self::Pg(p) => sqlx::query(sql).execute(p).await.map(|_| ()),
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Removes the append-only guards, as an owner or superuser could.
    async fn disable_guards(&self) {
        match self {
            Self::Sqlite(_) => {
                self.exec("DROP TRIGGER audit_events_no_update").await;
                self.exec("DROP TRIGGER audit_events_no_delete").await;
            }
            Self::Pg(_) => {
                self.exec("ALTER TABLE bastion.audit_events DISABLE TRIGGER USER")
                    .await
            }
        }
    }

    async fn set_hashes(&self, seq: i64, prev: &[u8; 32], hash: &[u8; 32]) {
        let t = self.table("audit_events");
        match self {
            Self::Sqlite(p) => sqlx::query(&format!(
                "UPDATE {t} SET prev_hash = ?, hash = ? WHERE seq = ?"
            ))
            .bind(&prev[..])
            .bind(&hash[..])
            .bind(seq)
            .execute(p)
            .await
            .map(|_| ()),
            Self::Pg(p) => sqlx::query(&format!(
                "UPDATE {t} SET prev_hash = $1, hash = $2 WHERE seq = $3"
            ))
            .bind(&prev[..])
            .bind(&hash[..])
            .bind(seq)
            .execute(p)
            .await
            .map(|_| ()),
        }
        .unwrap();
    }

    async fn insert(&self, seq: i64, ev: &NewAuditEvent, prev: &[u8; 32], hash: &[u8; 32]) {
        let t = self.table("audit_events");
        let cols =
            "(seq, ts_ms, actor, org_id, category, action, outcome, details, prev_hash, hash)";
        macro_rules! run {
            ($pool:expr, $sql:expr) => {
                sqlx::query($sql)
                    .bind(seq)
                    .bind(ev.ts_ms)
                    .bind(ev.actor.as_deref())
                    .bind(ev.org_id.as_deref())
                    .bind(&ev.category)
                    .bind(&ev.action)
                    .bind(&ev.outcome)
                    .bind(&ev.details)
                    .bind(&prev[..])
                    .bind(&hash[..])
                    .execute($pool)
                    .await
                    .map(|_| ())
            };
        }
        match self {
            Self::Sqlite(p) => run!(
                p,
                &format!("INSERT INTO {t} {cols} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
            ),
            Self::Pg(p) => run!(
                p,
                &format!("INSERT INTO {t} {cols} VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
            ),
        }
        .unwrap();
    }
}

async fn fixture(postgres: bool) -> Option<Fixture> {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = bastion_testkit::test_config(&dir.path().join("data"));
    let pg = if postgres {
        let db = PgTestDb::create().await?;
        cfg.database_url = db.url.clone();
        Some(db)
    } else {
        None
    };
    let bastion = Bastion::open(&cfg).await.unwrap();
    let batch: Vec<_> = (1..=N)
        .map(|i| {
            AuditEvent::new(
                Category::Authentication,
                "login",
                if i % 3 == 0 {
                    Outcome::Failure
                } else {
                    Outcome::Success
                },
            )
            .actor(format!("usr_{i}"))
            .org("org_a")
            .details(serde_json::json!({ "i": i, "ip": "203.0.113.7" }))
        })
        .collect();
    bastion.audit.record_batch(&batch).await.unwrap();
    let checkpoint = bastion.audit.export_checkpoint().await.unwrap().unwrap();
    assert_eq!(checkpoint.size, N);
    let attacker = match &pg {
        None => Attacker::Sqlite(
            sqlx::SqlitePool::connect(&format!(
                "sqlite://{}",
                dir.path().join("data/bastion.db").display()
            ))
            .await
            .unwrap(),
        ),
        Some(db) => Attacker::Pg(sqlx::PgPool::connect(&db.url).await.unwrap()),
    };
    Some(Fixture {
        bastion,
        checkpoint,
        attacker,
        dir,
        _pg: pg,
    })
}

impl Fixture {
    async fn verify(&self, extra: &[CheckpointFile]) -> VerifyReport {
        let extra: Vec<_> = extra.iter().map(|c| c.to_record().unwrap()).collect();
        audit::verify(
            self.bastion.store.as_ref(),
            &self.bastion.keys.current().audit_public_keys(),
            &extra,
            &mut |_| {},
        )
        .await
        .unwrap()
    }

    async fn events(&self) -> Vec<bastion_store::AuditRecord> {
        self.bastion
            .store
            .events_after(&Scope::System("test"), 0, 10_000)
            .await
            .unwrap()
    }
}

/// Runs `$body` with a fixture on SQLite and on PostgreSQL (when configured).
macro_rules! both_backends {
    ($name:ident, |$f:ident| $body:block) => {
        mod $name {
            use super::*;
            #[tokio::test]
            async fn sqlite() {
                let $f = fixture(false).await.unwrap();
                $body
            }
            #[tokio::test]
            async fn postgres() {
                let Some($f) = fixture(true).await else {
                    return;
                };
                $body
            }
        }
    };
}

both_backends!(u2_an_untouched_log_verifies_with_its_checkpoints, |f| {
    let r = f.verify(std::slice::from_ref(&f.checkpoint)).await;
    assert!(r.ok(), "{:?}", r.findings);
    assert_eq!(r.events, N);
    assert_eq!(r.checkpoints_checked, 2);
});

both_backends!(u2_an_edited_event_is_named, |f| {
    f.attacker.disable_guards().await;
    let t = f.attacker.table("audit_events");
    f.attacker
        .exec(&format!(
            "UPDATE {t} SET outcome = 'success' WHERE seq = 12"
        ))
        .await;
    assert_eq!(
        f.verify(&[]).await.findings,
        vec![Finding::EventAltered { seq: 12 }]
    );
});

both_backends!(u2_a_deleted_event_is_named, |f| {
    f.attacker.disable_guards().await;
    let t = f.attacker.table("audit_events");
    f.attacker
        .exec(&format!("DELETE FROM {t} WHERE seq = 10"))
        .await;
    assert_eq!(
        f.verify(&[]).await.findings,
        vec![Finding::SequenceGap {
            expected: 10,
            found: 11
        }]
    );
});

both_backends!(
    u2_an_inserted_event_is_caught_even_with_a_valid_hash_of_its_own,
    |f| {
        f.attacker.disable_guards().await;
        let t = f.attacker.table("audit_events");
        let rows = f.events().await;
        // Make room at seq 10, then insert a forged event correctly hashed after event 9.
        f.attacker
            .exec(&format!(
                "UPDATE {t} SET seq = seq + 1000000 WHERE seq >= 10"
            ))
            .await;
        f.attacker
            .exec(&format!(
                "UPDATE {t} SET seq = seq - 999999 WHERE seq > 1000000"
            ))
            .await;
        let prev = ChainHead {
            seq: 9,
            hash: rows[8].hash,
        };
        let mut forged = rows[9].event.clone();
        forged.action = "grant_admin".into();
        let hash = audit::event_hash(&prev, 10, &forged);
        f.attacker.insert(10, &forged, &prev.hash, &hash).await;
        assert_eq!(
            f.verify(&[]).await.findings,
            vec![Finding::BrokenLink { seq: 11 }]
        );
    }
);

both_backends!(u2_reordered_events_are_caught, |f| {
    f.attacker.disable_guards().await;
    let t = f.attacker.table("audit_events");
    f.attacker
        .exec(&format!("UPDATE {t} SET seq = 1000020 WHERE seq = 20"))
        .await;
    f.attacker
        .exec(&format!("UPDATE {t} SET seq = 20 WHERE seq = 21"))
        .await;
    f.attacker
        .exec(&format!("UPDATE {t} SET seq = 21 WHERE seq = 1000020"))
        .await;
    assert_eq!(
        f.verify(&[]).await.findings,
        vec![Finding::BrokenLink { seq: 20 }]
    );
});

both_backends!(
    u2_a_truncated_tail_is_caught_by_the_checkpoint_kept_off_the_box,
    |f| {
        f.attacker.disable_guards().await;
        let (t, cp) = (
            f.attacker.table("audit_events"),
            f.attacker.table("audit_checkpoints"),
        );
        f.attacker
            .exec(&format!("DELETE FROM {t} WHERE seq > 40"))
            .await;
        // With the database's own checkpoint still there, it alone catches the truncation.
        let expected = vec![Finding::Truncated {
            checkpoint_size: N,
            log_size: 40,
        }];
        assert_eq!(f.verify(&[]).await.findings, expected);
        // An attacker who also deletes the stored checkpoints is caught by the saved file.
        f.attacker.exec(&format!("DELETE FROM {cp}")).await;
        assert_eq!(
            f.verify(std::slice::from_ref(&f.checkpoint)).await.findings,
            expected
        );
    }
);

both_backends!(
    u2_a_rewritten_and_rehashed_chain_fails_the_signed_checkpoint,
    |f| {
        f.attacker.disable_guards().await;
        let t = f.attacker.table("audit_events");
        f.attacker
            .exec(&format!(
                "UPDATE {t} SET actor = 'usr_innocent' WHERE seq = 30"
            ))
            .await;
        // The attacker knows the scheme and re-links everything after the edit.
        let rows = f.events().await;
        let mut prev = ChainHead {
            seq: 29,
            hash: rows[28].hash,
        };
        for r in &rows[29..] {
            let h = audit::event_hash(&prev, r.seq, &r.event);
            f.attacker.set_hashes(r.seq, &prev.hash, &h).await;
            prev = ChainHead {
                seq: r.seq,
                hash: h,
            };
        }
        assert_eq!(
            f.verify(&[]).await.findings,
            vec![Finding::CheckpointMismatch { size: N }]
        );
        let cp = f.attacker.table("audit_checkpoints");
        f.attacker.exec(&format!("DELETE FROM {cp}")).await;
        assert_eq!(
            f.verify(std::slice::from_ref(&f.checkpoint)).await.findings,
            vec![Finding::CheckpointMismatch { size: N }]
        );
    }
);

both_backends!(u2_a_forged_checkpoint_signature_is_caught, |f| {
    let mut forged = f.checkpoint.clone();
    let mut sig = base64_decode(&forged.signature);
    sig[0] ^= 1;
    forged.signature = base64_encode(&sig);
    assert_eq!(
        f.verify(&[forged]).await.findings,
        vec![Finding::BadCheckpointSignature { size: N }]
    );
    // A checkpoint that claims a longer log, signed by a key that is not ours.
    let mut foreign = f.checkpoint.clone();
    foreign.size = N + 5;
    foreign.key_id = "audit-v1-deadbeef".into();
    let found = f.verify(&[foreign]).await.findings;
    assert!(
        found.contains(&Finding::UnknownCheckpointKey {
            size: N + 5,
            key_id: "audit-v1-deadbeef".into()
        }),
        "{found:?}"
    );
});

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[tokio::test]
async fn u2_cli_verify_exits_nonzero_and_names_the_event() {
    let f = fixture(false).await.unwrap();
    let cp_path = f.dir.path().join("cp.json");
    std::fs::write(&cp_path, serde_json::to_vec(&f.checkpoint).unwrap()).unwrap();
    let run = |extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_bastion"))
            .args(["audit", "verify", "--data-dir"])
            .arg(f.dir.path().join("data"))
            .args(extra)
            .env_remove("BASTION_MASTER_KEY")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, out) = run(&["--checkpoint", cp_path.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(out.contains("audit log OK: 50 events"), "{out}");
    f.attacker.disable_guards().await;
    f.attacker
        .exec("UPDATE audit_events SET details = '{}' WHERE seq = 7")
        .await;
    let (ok, out) = run(&[]);
    assert!(!ok);
    assert!(out.contains("event #7 was altered"), "{out}");
}
