//! Conformance of [`crate::IdempotencyStore`] (SPEC P4). Hashes and sealed bodies are arbitrary
//! bytes here: the store never computes or opens one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use super::{NOW, in_org, key_scope};
use crate::{Begin, KeyKind, Scope, SealedColumn, Store, StoreError, StoredResponse};

/// The middleware's system path.
const IDM: Scope = Scope::System("idempotency");
/// A day, the replay window.
const TTL: i64 = 86_400_000;

/// A response sealed under `idempotency-v1`, its body naming `tag`.
fn response(status: u16, tag: &str) -> StoredResponse {
    StoredResponse {
        status,
        // Spacing kept as written: a replay is byte for byte.
        headers: r#"{"content-type":"application/json",  "location": "/v1/things/1"}"#.into(),
        body_key: "idempotency-v1".into(),
        body: format!("sealed:{tag}").into_bytes(),
    }
}

/// `begin` at `now` with a day's expiry.
async fn begin_at<S: Store>(
    store: &S,
    owner: &str,
    key: &str,
    hash: u8,
    row_id: &str,
    now: i64,
) -> Begin {
    store
        .begin(&IDM, owner, key, &[hash; 32], row_id, now, now + TTL)
        .await
        .unwrap()
}

fn started(row_id: &str) -> Begin {
    Begin::Started {
        row_id: row_id.into(),
    }
}

/// P4: the first request with a key runs; once it completed, a retry of the same request gets
/// the identical stored response (status, headers byte for byte, key id, sealed body), as often
/// as it asks. A row completes once; a completed row cannot be released.
pub async fn p4_the_first_request_with_a_key_runs_and_the_same_request_replays<S: Store>(
    store: Arc<S>,
) {
    assert_eq!(
        begin_at(&*store, "usr_a", "k-1", 1, "idm_1", NOW).await,
        started("idm_1")
    );
    let resp = response(201, "first");
    assert!(store.complete(&IDM, "idm_1", &resp).await.unwrap());
    for i in 0..3 {
        assert_eq!(
            begin_at(
                &*store,
                "usr_a",
                "k-1",
                1,
                &format!("idm_r{i}"),
                NOW + 1 + i
            )
            .await,
            Begin::Completed {
                row_id: "idm_1".into(),
                response: resp.clone(),
            }
        );
    }
    // Completed once: a second response never overwrites the first, and it stays.
    assert!(
        !store
            .complete(&IDM, "idm_1", &response(500, "second"))
            .await
            .unwrap()
    );
    assert!(!store.release(&IDM, "idm_1").await.unwrap());
    assert!(
        !store
            .complete(&IDM, "idm_unknown", &response(200, "x"))
            .await
            .unwrap()
    );
    assert!(matches!(
        begin_at(&*store, "usr_a", "k-1", 1, "idm_2", NOW + 10).await,
        Begin::Completed { row_id, response } if row_id == "idm_1" && response == resp
    ));
    // Still just before expiry; the replay's retries never took a row.
    assert!(matches!(
        begin_at(&*store, "usr_a", "k-1", 1, "idm_3", NOW + TTL - 1).await,
        Begin::Completed { .. }
    ));
    assert_eq!(
        store
            .purge_idempotency(&IDM, NOW + TTL - 1, 100)
            .await
            .unwrap(),
        0
    );
    // Key length: 1 to 255.
    assert_eq!(
        begin_at(&*store, "usr_a", &"k".repeat(255), 1, "idm_4", NOW).await,
        started("idm_4")
    );
    for bad in [String::new(), "k".repeat(256)] {
        assert!(
            store
                .begin(&IDM, "usr_a", &bad, &[1; 32], "idm_5", NOW, NOW + TTL)
                .await
                .is_err(),
            "a key of {} characters",
            bad.len()
        );
    }
}

/// P4: the same key with a different request (another hash) is a mismatch, whether the first
/// is still running or completed, and changes nothing for the first.
pub async fn p4_a_different_request_with_the_same_key_is_a_mismatch<S: Store>(store: Arc<S>) {
    assert_eq!(
        begin_at(&*store, "usr_a", "k-1", 1, "idm_1", NOW).await,
        started("idm_1")
    );
    assert_eq!(
        begin_at(&*store, "usr_a", "k-1", 2, "idm_2", NOW + 1).await,
        Begin::Mismatch
    );
    // Hashes differing in the last byte only.
    let mut almost = [1u8; 32];
    almost[31] = 0;
    assert_eq!(
        store
            .begin(&IDM, "usr_a", "k-1", &almost, "idm_3", NOW + 1, NOW + TTL)
            .await
            .unwrap(),
        Begin::Mismatch
    );
    let resp = response(200, "one");
    assert!(store.complete(&IDM, "idm_1", &resp).await.unwrap());
    assert_eq!(
        begin_at(&*store, "usr_a", "k-1", 2, "idm_4", NOW + 2).await,
        Begin::Mismatch
    );
    // The mismatches took nothing: the first request still replays.
    assert_eq!(
        begin_at(&*store, "usr_a", "k-1", 1, "idm_5", NOW + 3).await,
        Begin::Completed {
            row_id: "idm_1".into(),
            response: resp,
        }
    );
}

/// P4: while the first request runs, a retry is told it is in flight; a released key (the
/// request failed before it changed anything) runs again, under the new row's id, and a stale
/// completion of the released row stores nothing.
pub async fn p4_a_key_in_flight_is_busy_and_released_keys_run_again<S: Store>(store: Arc<S>) {
    assert_eq!(
        begin_at(&*store, "usr_a", "k-1", 1, "idm_1", NOW).await,
        started("idm_1")
    );
    assert_eq!(
        begin_at(&*store, "usr_a", "k-1", 1, "idm_2", NOW + 1).await,
        Begin::InFlight
    );
    assert!(store.release(&IDM, "idm_1").await.unwrap());
    assert!(
        !store.release(&IDM, "idm_1").await.unwrap(),
        "released once"
    );
    assert!(
        !store
            .complete(&IDM, "idm_1", &response(200, "stale"))
            .await
            .unwrap()
    );
    // Free again, for any request with the key.
    assert_eq!(
        begin_at(&*store, "usr_a", "k-1", 2, "idm_3", NOW + 2).await,
        started("idm_3")
    );
    assert_eq!(
        begin_at(&*store, "usr_a", "k-1", 2, "idm_4", NOW + 3).await,
        Begin::InFlight
    );
    let resp = response(202, "third");
    assert!(store.complete(&IDM, "idm_3", &resp).await.unwrap());
    assert_eq!(
        begin_at(&*store, "usr_a", "k-1", 2, "idm_5", NOW + 4).await,
        Begin::Completed {
            row_id: "idm_3".into(),
            response: resp,
        }
    );
}

/// P4: of 50 simultaneous requests with one key, exactly one runs and the others are told it
/// is in flight; the same holds when the key's previous row has just expired.
pub async fn p4_concurrent_begins_have_one_winner<S: Store>(store: Arc<S>) {
    for (round, now) in [(0, NOW), (1, NOW + TTL)] {
        let mut tasks = Vec::new();
        for i in 0..50 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                let id = format!("idm_{round}_{i}");
                let out = begin_at(&*s, "usr_a", "k-race", 1, &id, now).await;
                (id, out)
            }));
        }
        let mut winners = Vec::new();
        let mut busy = 0;
        for t in tasks {
            match t.await.unwrap() {
                (id, Begin::Started { row_id }) => {
                    assert_eq!(row_id, id);
                    winners.push(row_id);
                }
                (_, Begin::InFlight) => busy += 1,
                (_, other) => panic!("round {round}: {other:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        assert_eq!(busy, 49);
        assert!(
            store
                .complete(&IDM, &winners[0], &response(200, "won"))
                .await
                .unwrap()
        );
    }
}

/// P4: keys are per principal: the same key of two owners (a user, an API key) is two
/// independent requests, and neither sees the other's response.
pub async fn p4_keys_are_per_owner<S: Store>(store: Arc<S>) {
    assert_eq!(
        begin_at(&*store, "usr_a", "k-1", 1, "idm_a", NOW).await,
        started("idm_a")
    );
    assert_eq!(
        begin_at(&*store, "key_b", "k-1", 1, "idm_b", NOW).await,
        started("idm_b")
    );
    let (ra, rb) = (response(201, "a"), response(201, "b"));
    assert!(store.complete(&IDM, "idm_a", &ra).await.unwrap());
    assert!(store.complete(&IDM, "idm_b", &rb).await.unwrap());
    assert_eq!(
        begin_at(&*store, "usr_a", "k-1", 1, "idm_x", NOW + 1).await,
        Begin::Completed {
            row_id: "idm_a".into(),
            response: ra,
        }
    );
    assert_eq!(
        begin_at(&*store, "key_b", "k-1", 1, "idm_y", NOW + 1).await,
        Begin::Completed {
            row_id: "idm_b".into(),
            response: rb,
        }
    );
    // A third owner with a different request: its own key, no mismatch.
    assert_eq!(
        begin_at(&*store, "usr_c", "k-1", 9, "idm_c", NOW + 1).await,
        started("idm_c")
    );
}

/// P4: a row counts as gone at its `expires_ms`, completed or still in flight: the key runs
/// again under a new row id (a late completion of the old row stores nothing), and the purge
/// deletes exactly what expired, at most `limit` at a time.
pub async fn p4_expired_keys_are_free_and_purged<S: Store>(store: Arc<S>) {
    // A completed row and an abandoned in-flight row, both expiring at NOW + TTL.
    assert_eq!(
        begin_at(&*store, "usr_a", "k-done", 1, "idm_1", NOW).await,
        started("idm_1")
    );
    assert!(
        store
            .complete(&IDM, "idm_1", &response(200, "old"))
            .await
            .unwrap()
    );
    assert_eq!(
        begin_at(&*store, "usr_a", "k-stuck", 1, "idm_2", NOW).await,
        started("idm_2")
    );
    let later = NOW + TTL;
    // Replaced at expiry, even by a different request (the old one is forgotten).
    assert_eq!(
        begin_at(&*store, "usr_a", "k-done", 2, "idm_3", later).await,
        started("idm_3")
    );
    assert_eq!(
        begin_at(&*store, "usr_a", "k-done", 1, "idm_4", later).await,
        Begin::Mismatch,
        "the new row's request is the one that counts"
    );
    assert_eq!(
        begin_at(&*store, "usr_a", "k-stuck", 1, "idm_5", later).await,
        started("idm_5")
    );
    assert!(
        !store
            .complete(&IDM, "idm_2", &response(200, "late"))
            .await
            .unwrap(),
        "the replaced row is gone"
    );
    assert!(!store.release(&IDM, "idm_2").await.unwrap());
    assert!(
        store
            .complete(&IDM, "idm_5", &response(200, "new"))
            .await
            .unwrap()
    );

    // Purge: three more rows expiring at NOW + TTL, and one that lives longer.
    for i in 0..3 {
        assert_eq!(
            begin_at(
                &*store,
                "usr_b",
                &format!("k-{i}"),
                1,
                &format!("idm_p{i}"),
                NOW
            )
            .await,
            started(&format!("idm_p{i}"))
        );
    }
    assert!(
        store
            .complete(&IDM, "idm_p0", &response(200, "p0"))
            .await
            .unwrap()
    );
    assert_eq!(
        begin_at(&*store, "usr_b", "k-long", 1, "idm_long", NOW + 5).await,
        started("idm_long")
    );
    assert_eq!(
        store.purge_idempotency(&IDM, later - 1, 100).await.unwrap(),
        0
    );
    assert_eq!(store.purge_idempotency(&IDM, later, 2).await.unwrap(), 2);
    assert_eq!(store.purge_idempotency(&IDM, later, 100).await.unwrap(), 1);
    assert_eq!(store.purge_idempotency(&IDM, later, 100).await.unwrap(), 0);
    // The live rows survived: the replacements and the longer-lived one.
    assert!(matches!(
        begin_at(&*store, "usr_a", "k-stuck", 1, "idm_6", later + 1).await,
        Begin::Completed { row_id, .. } if row_id == "idm_5"
    ));
    assert_eq!(
        begin_at(&*store, "usr_a", "k-done", 2, "idm_7", later + 1).await,
        Begin::InFlight
    );
    assert_eq!(
        begin_at(&*store, "usr_b", "k-long", 1, "idm_8", later + 1).await,
        Begin::InFlight
    );
    // The purged keys are free.
    assert_eq!(
        begin_at(&*store, "usr_b", "k-0", 1, "idm_9", later + 1).await,
        started("idm_9")
    );
}

/// P4: idempotency rows are reached through the system path only: a request scope, whoever it
/// is, is refused by every method (the owner column, not the scope, isolates principals).
pub async fn p4_request_scopes_cannot_touch_idempotency_keys<S: Store>(store: Arc<S>) {
    assert_eq!(
        begin_at(&*store, "usr_a", "k-1", 1, "idm_1", NOW).await,
        started("idm_1")
    );
    assert_eq!(
        begin_at(&*store, "usr_a", "k-2", 1, "idm_2", NOW).await,
        started("idm_2")
    );
    for scope in [
        Scope::Anonymous,
        Scope::User {
            user_id: "usr_a".into(),
            org_id: None,
        },
        in_org("usr_a", "org_a"),
        key_scope("key_a", "org_a", KeyKind::Service),
        key_scope("key_a", "org_a", KeyKind::Publishable),
    ] {
        let r = store
            .begin(&scope, "usr_a", "k-3", &[1; 32], "idm_3", NOW, NOW + TTL)
            .await;
        assert!(matches!(r, Err(StoreError::Forbidden)), "{scope:?}: {r:?}");
        let r = store
            .begin(&scope, "usr_a", "k-1", &[1; 32], "idm_3", NOW, NOW + TTL)
            .await;
        assert!(matches!(r, Err(StoreError::Forbidden)), "{scope:?}: {r:?}");
        let r = store.complete(&scope, "idm_1", &response(200, "x")).await;
        assert!(matches!(r, Err(StoreError::Forbidden)), "{scope:?}: {r:?}");
        let r = store.release(&scope, "idm_2").await;
        assert!(matches!(r, Err(StoreError::Forbidden)), "{scope:?}: {r:?}");
        let r = store.purge_idempotency(&scope, NOW + 2 * TTL, 100).await;
        assert!(matches!(r, Err(StoreError::Forbidden)), "{scope:?}: {r:?}");
    }
    // Nothing changed: the first row is still in flight, the second still there.
    assert!(
        store
            .complete(&IDM, "idm_1", &response(200, "one"))
            .await
            .unwrap()
    );
    assert!(store.release(&IDM, "idm_2").await.unwrap());
    assert_eq!(
        begin_at(&*store, "usr_a", "k-3", 1, "idm_4", NOW).await,
        started("idm_4")
    );
}

/// P4 with S3: completed responses are sealed columns rewrap walks (row id `idm_…`, key id
/// `body_key`); rows in flight hold no envelope and are not counted.
pub async fn p4_rewrap_sees_completed_responses_only<S: Store>(store: Arc<S>) {
    for (i, id) in ["idm_1", "idm_2", "idm_3"].iter().enumerate() {
        assert_eq!(
            begin_at(&*store, "usr_a", &format!("k-{i}"), 1, id, NOW).await,
            started(id)
        );
    }
    let r1 = response(200, "one");
    assert!(store.complete(&IDM, "idm_1", &r1).await.unwrap());
    assert!(
        store
            .complete(&IDM, "idm_2", &response(200, "two"))
            .await
            .unwrap()
    );
    let counts: Vec<_> = store
        .sealed_counts(&IDM)
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.column == SealedColumn::IdempotentResponse)
        .map(|c| (c.key_id, c.rows))
        .collect();
    assert_eq!(counts, vec![("idempotency-v1".to_string(), 2)]);
    let batch = store
        .sealed_batch(
            &IDM,
            SealedColumn::IdempotentResponse,
            "idempotency-v2",
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(
        batch.iter().map(|r| r.row_id.as_str()).collect::<Vec<_>>(),
        ["idm_1", "idm_2"]
    );
    assert_eq!(batch[0].envelope, r1.body);
    assert_eq!(batch[0].key_id, "idempotency-v1");
}

/// The tests of this area, listed for [`crate::conformance_tests!`].
#[macro_export]
macro_rules! conformance_idempotency {
    ($make:expr) => {
        $crate::conformance_tests!(@each $make;
            p4_the_first_request_with_a_key_runs_and_the_same_request_replays,
            p4_a_different_request_with_the_same_key_is_a_mismatch,
            p4_a_key_in_flight_is_busy_and_released_keys_run_again,
            p4_concurrent_begins_have_one_winner,
            p4_keys_are_per_owner,
            p4_expired_keys_are_free_and_purged,
            p4_request_scopes_cannot_touch_idempotency_keys,
            p4_rewrap_sees_completed_responses_only
        );
    };
}
