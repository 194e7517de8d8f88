//! Conformance of [`crate::WebhookStore`] (SPEC P2, P3): endpoints, their sealed signing
//! secrets and the inbox of verified events. Envelopes are arbitrary bytes here (the store
//! never opens one).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use super::{NOW, SYS, as_user, in_org, key_scope, org_with, permission_rows};
use crate::{
    EndpointRow, EndpointSecretRow, EventRow, EventStatus, Finish, Isolation, KeyKind, Recorded,
    Rewrapped, Scope, SealedColumn, Store, StoreError,
};

/// The webhooks system path (ingestion and processing).
const HOOKS: Scope = Scope::System("webhooks");

/// A lease of 30 s.
const LEASE: i64 = 30_000;

/// A Stripe endpoint of `org` created at `NOW`.
fn endpoint_row(id: &str, org: &str, name: &str) -> EndpointRow {
    EndpointRow {
        id: id.into(),
        org_id: org.into(),
        provider: "stripe".into(),
        name: name.into(),
        config: "{}".into(),
        created_ms: NOW,
        created_by: "usr_a".into(),
        disabled_ms: None,
    }
}

/// A secret of `endpoint` added at `at`, sealed by `webhooks-v1`.
fn secret_row(id: &str, endpoint: &str, org: &str, at: i64) -> EndpointSecretRow {
    EndpointSecretRow {
        id: id.into(),
        endpoint_id: endpoint.into(),
        org_id: org.into(),
        secret_key: "webhooks-v1".into(),
        secret: format!("sealed:{id}").into_bytes(),
        created_ms: at,
        expires_ms: None,
    }
}

/// A verified delivery `event_id` to `endpoint`, received (and due) at `at`.
fn event_row(id: &str, endpoint: &str, org: &str, event_id: &str, at: i64) -> EventRow {
    EventRow {
        id: id.into(),
        endpoint_id: endpoint.into(),
        org_id: org.into(),
        provider: "stripe".into(),
        event_id: event_id.into(),
        event_type: "checkout.session.completed".into(),
        payload: format!("{{\"id\":\"{event_id}\",\"row\":\"{id}\"}}").into_bytes(),
        received_ms: at,
        status: EventStatus::Received,
        attempts: 0,
        next_attempt_ms: Some(at),
        last_error: None,
        processed_ms: None,
    }
}

/// Org A (Super Admin `usr_a`) with endpoint `whe_1` and its secret `whs_1`, added by its
/// admin; returns the admin's scope.
async fn webhook_org<S: Store>(store: &S) -> Scope {
    store
        .sync_permissions(&SYS, &permission_rows())
        .await
        .unwrap();
    org_with(store, "org_a", &[("usr_a", 100)]).await;
    let a = in_org("usr_a", "org_a");
    store
        .insert_endpoint(
            &a,
            &endpoint_row("whe_1", "org_a", "Payments"),
            &[secret_row("whs_1", "whe_1", "org_a", NOW)],
        )
        .await
        .unwrap();
    a
}

/// Records `ev`, which must be new.
async fn record_new<S: Store>(store: &S, ev: &EventRow) {
    assert_eq!(
        store.record_event(&HOOKS, ev, None).await.unwrap(),
        Recorded::New(ev.clone())
    );
}

fn ids(events: &[EventRow]) -> Vec<&str> {
    events.iter().map(|e| e.id.as_str()).collect()
}

/// P3: of 100 concurrent deliveries of one event to one endpoint exactly one is new, the
/// others find it; the same event id at another endpoint is another event.
pub async fn p3_an_event_is_recorded_once_per_endpoint_even_concurrently<S: Store>(store: Arc<S>) {
    let a = webhook_org(&*store).await;
    store
        .insert_endpoint(&a, &endpoint_row("whe_2", "org_a", "Other"), &[])
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..100 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            let ev = event_row(&format!("wev_{i:03}"), "whe_1", "org_a", "evt_1", NOW + i);
            s.record_event(&HOOKS, &ev, None).await.unwrap()
        }));
    }
    let mut new = Vec::new();
    let mut duplicates = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Recorded::New(row) => new.push(row),
            Recorded::Duplicate(row) => duplicates.push(row),
        }
    }
    assert_eq!(new.len(), 1, "exactly one delivery is new");
    assert_eq!(duplicates.len(), 99);
    let first = new.pop().unwrap();
    assert!(
        duplicates.iter().all(|d| *d == first),
        "every replay finds the stored row, untouched"
    );
    assert_eq!(
        store.event(&HOOKS, &first.id).await.unwrap(),
        Some(first.clone())
    );
    let listed = store
        .events(&SYS, "org_a", None, None, None, 200)
        .await
        .unwrap();
    assert_eq!(listed, std::slice::from_ref(&first), "one row");

    // A later replay changes nothing either, whatever it carries.
    let mut replay = event_row("wev_replay", "whe_1", "org_a", "evt_1", NOW + 500);
    replay.payload = b"tampered".to_vec();
    assert_eq!(
        store.record_event(&HOOKS, &replay, None).await.unwrap(),
        Recorded::Duplicate(first.clone())
    );
    assert_eq!(store.event(&SYS, "wev_replay").await.unwrap(), None);

    // A captured delivery re-sent under a new, unsigned id: the same signed digest finds the
    // first row; a new digest with a new id is a new event.
    let digest = [7u8; 32];
    let signed = event_row("wev_signed", "whe_1", "org_a", "evt_signed", NOW + 100);
    assert_eq!(
        store
            .record_event(&HOOKS, &signed, Some(&digest))
            .await
            .unwrap(),
        Recorded::New(signed.clone())
    );
    let resent = event_row("wev_resent", "whe_1", "org_a", "evt_fresh_id", NOW + 101);
    assert_eq!(
        store
            .record_event(&HOOKS, &resent, Some(&digest))
            .await
            .unwrap(),
        Recorded::Duplicate(signed.clone())
    );
    assert_eq!(store.event(&SYS, "wev_resent").await.unwrap(), None);
    let fresh = event_row("wev_fresh", "whe_1", "org_a", "evt_fresh_id", NOW + 102);
    assert_eq!(
        store
            .record_event(&HOOKS, &fresh, Some(&[8u8; 32]))
            .await
            .unwrap(),
        Recorded::New(fresh.clone())
    );
    // The same provider id at another endpoint is a separate event.
    let other = event_row("wev_other", "whe_2", "org_a", "evt_1", NOW + 600);
    record_new(&*store, &other).await;
    assert_eq!(
        store
            .events(&SYS, "org_a", None, None, None, 200)
            .await
            .unwrap()
            .len(),
        4
    );
    // An endpoint that is not there, or an event filed under another org than its endpoint's.
    let r = store
        .record_event(
            &HOOKS,
            &event_row("wev_x", "whe_gone", "org_a", "evt_1", NOW),
            None,
        )
        .await;
    assert!(matches!(r, Err(StoreError::NotFound)), "{r:?}");
    org_with(&*store, "org_b", &[("usr_b", 100)]).await;
    let r = store
        .record_event(
            &HOOKS,
            &event_row("wev_x", "whe_1", "org_b", "evt_9", NOW),
            None,
        )
        .await;
    assert!(matches!(r, Err(StoreError::NotFound)), "{r:?}");
}

/// P3: of 20 concurrent claims exactly one gets the event; nobody else can claim it until its
/// lease runs out, then it can be claimed again; each claim counts an attempt.
pub async fn p3_claims_are_exclusive_and_leases_expire<S: Store>(store: Arc<S>) {
    webhook_org(&*store).await;
    let ev = event_row("wev_1", "whe_1", "org_a", "evt_1", NOW);
    record_new(&*store, &ev).await;
    // Not due before its time.
    let mut later = event_row("wev_2", "whe_1", "org_a", "evt_2", NOW);
    later.next_attempt_ms = Some(NOW + 5_000);
    record_new(&*store, &later).await;
    assert_eq!(
        store
            .claim_event(&HOOKS, "wev_2", NOW, LEASE)
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.due_events(&HOOKS, NOW, 10).await.unwrap(), ["wev_1"]);
    assert_eq!(
        store.due_events(&HOOKS, NOW + 5_000, 10).await.unwrap(),
        ["wev_1", "wev_2"],
        "oldest due first"
    );
    assert_eq!(
        store.due_events(&HOOKS, NOW + 5_000, 1).await.unwrap(),
        ["wev_1"]
    );

    let mut tasks = Vec::new();
    for _ in 0..20 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.claim_event(&HOOKS, "wev_1", NOW, LEASE).await.unwrap()
        }));
    }
    let mut claimed = Vec::new();
    for t in tasks {
        if let Some(row) = t.await.unwrap() {
            claimed.push(row);
        }
    }
    assert_eq!(claimed.len(), 1, "exactly one worker has it");
    let c = &claimed[0];
    assert_eq!(c.status, EventStatus::Processing);
    assert_eq!(c.attempts, 1);
    assert_eq!(c.next_attempt_ms, Some(NOW + LEASE), "the lease's end");
    assert_eq!(c.payload, ev.payload);
    assert_eq!(store.event(&SYS, "wev_1").await.unwrap().as_ref(), Some(c));

    // Held until the lease runs out.
    assert_eq!(
        store
            .claim_event(&HOOKS, "wev_1", NOW + LEASE - 1, LEASE)
            .await
            .unwrap(),
        None
    );
    assert!(
        !store
            .due_events(&HOOKS, NOW + LEASE - 1, 10)
            .await
            .unwrap()
            .contains(&"wev_1".to_owned())
    );
    assert!(
        store
            .due_events(&HOOKS, NOW + LEASE, 10)
            .await
            .unwrap()
            .contains(&"wev_1".to_owned()),
        "a lapsed lease is due"
    );
    let again = store
        .claim_event(&HOOKS, "wev_1", NOW + LEASE, LEASE)
        .await
        .unwrap()
        .expect("claimable after the lease");
    assert_eq!(again.attempts, 2);
    assert_eq!(again.next_attempt_ms, Some(NOW + 2 * LEASE));

    // Finished once, and then never due or claimable again.
    assert!(
        store
            .finish_event(&HOOKS, "wev_1", NOW + LEASE + 1, &Finish::Processed)
            .await
            .unwrap()
    );
    assert!(
        !store
            .finish_event(&HOOKS, "wev_1", NOW + LEASE + 2, &Finish::Processed)
            .await
            .unwrap(),
        "only while processing"
    );
    let done = store.event(&SYS, "wev_1").await.unwrap().unwrap();
    assert_eq!(done.status, EventStatus::Processed);
    assert_eq!(done.processed_ms, Some(NOW + LEASE + 1));
    assert_eq!(done.attempts, 2);
    let far = NOW + 100 * LEASE;
    assert_eq!(
        store
            .claim_event(&HOOKS, "wev_1", far, LEASE)
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.due_events(&HOOKS, far, 10).await.unwrap(), ["wev_2"]);
    assert_eq!(
        store
            .claim_event(&HOOKS, "wev_none", far, LEASE)
            .await
            .unwrap(),
        None
    );
    assert!(
        !store
            .finish_event(&HOOKS, "wev_2", far, &Finish::Processed)
            .await
            .unwrap(),
        "a received event was never claimed"
    );
}

/// P3: a failed attempt is retried when due; the last one makes the event dead, which only an
/// admin retry brings back; a processed event is never retried.
pub async fn p3_failed_events_retry_when_due_then_die<S: Store>(store: Arc<S>) {
    let a = webhook_org(&*store).await;
    record_new(&*store, &event_row("wev_1", "whe_1", "org_a", "evt_1", NOW)).await;
    store
        .claim_event(&HOOKS, "wev_1", NOW, LEASE)
        .await
        .unwrap()
        .unwrap();
    let retry_at = NOW + 60_000;
    let failed = Finish::Failed {
        error: "handler answered 500".into(),
        retry_at_ms: Some(retry_at),
    };
    assert!(
        store
            .finish_event(&HOOKS, "wev_1", NOW + 1, &failed)
            .await
            .unwrap()
    );
    let ev = store.event(&SYS, "wev_1").await.unwrap().unwrap();
    assert_eq!(ev.status, EventStatus::Failed);
    assert_eq!(ev.next_attempt_ms, Some(retry_at));
    assert_eq!(ev.last_error.as_deref(), Some("handler answered 500"));
    assert_eq!(ev.processed_ms, None);

    // Not due before its retry time (even though the lease would have run out), due after.
    assert!(
        store
            .due_events(&HOOKS, retry_at - 1, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .claim_event(&HOOKS, "wev_1", retry_at - 1, LEASE)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.due_events(&HOOKS, retry_at, 10).await.unwrap(),
        ["wev_1"]
    );
    let second = store
        .claim_event(&HOOKS, "wev_1", retry_at, LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.attempts, 2);

    // The last attempt: dead, never due again.
    let last = Finish::Failed {
        error: "still 500".into(),
        retry_at_ms: None,
    };
    assert!(
        store
            .finish_event(&HOOKS, "wev_1", retry_at + 1, &last)
            .await
            .unwrap()
    );
    let dead = store.event(&SYS, "wev_1").await.unwrap().unwrap();
    assert_eq!(dead.status, EventStatus::Dead);
    assert_eq!(dead.next_attempt_ms, None);
    assert_eq!(dead.last_error.as_deref(), Some("still 500"));
    let far = NOW + 1_000 * LEASE;
    assert!(store.due_events(&HOOKS, far, 10).await.unwrap().is_empty());
    assert_eq!(
        store
            .claim_event(&HOOKS, "wev_1", far, LEASE)
            .await
            .unwrap(),
        None
    );

    // An admin retry: received again, due at once; once only.
    let at = retry_at + 10;
    assert!(store.retry_event(&a, "wev_1", at).await.unwrap());
    let back = store.event(&SYS, "wev_1").await.unwrap().unwrap();
    assert_eq!(back.status, EventStatus::Received);
    assert_eq!(back.next_attempt_ms, Some(at));
    assert_eq!(back.attempts, 2, "attempts so far are kept");
    assert!(
        !store.retry_event(&a, "wev_1", at).await.unwrap(),
        "not failed"
    );
    assert_eq!(store.due_events(&HOOKS, at, 10).await.unwrap(), ["wev_1"]);

    // A failed (not yet dead) event can be retried too, and the system path may retry.
    store
        .claim_event(&HOOKS, "wev_1", at, LEASE)
        .await
        .unwrap()
        .unwrap();
    assert!(
        !store.retry_event(&a, "wev_1", at).await.unwrap(),
        "processing"
    );
    assert!(
        store
            .finish_event(&HOOKS, "wev_1", at + 1, &failed)
            .await
            .unwrap()
    );
    assert!(store.retry_event(&SYS, "wev_1", at + 2).await.unwrap());
    assert_eq!(
        store
            .event(&SYS, "wev_1")
            .await
            .unwrap()
            .unwrap()
            .next_attempt_ms,
        Some(at + 2),
        "due at once rather than at the backoff"
    );

    // Processed events stay processed.
    let c = store
        .claim_event(&HOOKS, "wev_1", at + 2, LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.attempts, 4);
    assert!(
        store
            .finish_event(&HOOKS, "wev_1", at + 3, &Finish::Processed)
            .await
            .unwrap()
    );
    assert!(!store.retry_event(&a, "wev_1", at + 4).await.unwrap());
    assert!(!store.retry_event(&SYS, "wev_1", at + 4).await.unwrap());
    assert!(!store.retry_event(&a, "wev_none", at + 4).await.unwrap());
    let done = store.event(&SYS, "wev_1").await.unwrap().unwrap();
    assert_eq!(done.status, EventStatus::Processed);
    assert_eq!(done.processed_ms, Some(at + 3));
}

/// P3: an org's inbox lists newest first (ties by id), by endpoint, by status and by page,
/// and never another org's events.
pub async fn p3_events_list_newest_first_by_org_endpoint_and_status<S: Store>(store: Arc<S>) {
    let a = webhook_org(&*store).await;
    store
        .insert_endpoint(&a, &endpoint_row("whe_2", "org_a", "Other"), &[])
        .await
        .unwrap();
    org_with(&*store, "org_b", &[("usr_b", 100)]).await;
    let b = in_org("usr_b", "org_b");
    store
        .insert_endpoint(&b, &endpoint_row("whe_b", "org_b", "Payments"), &[])
        .await
        .unwrap();
    for ev in [
        event_row("wev_1", "whe_1", "org_a", "evt_1", NOW + 1),
        event_row("wev_2", "whe_2", "org_a", "evt_2", NOW + 2),
        event_row("wev_3", "whe_1", "org_a", "evt_3", NOW + 3),
        event_row("wev_4", "whe_2", "org_a", "evt_4", NOW + 3),
        event_row("wev_b", "whe_b", "org_b", "evt_1", NOW + 4),
    ] {
        record_new(&*store, &ev).await;
    }
    store
        .claim_event(&HOOKS, "wev_1", NOW + 10, LEASE)
        .await
        .unwrap()
        .unwrap();
    assert!(
        store
            .finish_event(&HOOKS, "wev_1", NOW + 11, &Finish::Processed)
            .await
            .unwrap()
    );

    for scope in [a.clone(), SYS] {
        let all = store
            .events(&scope, "org_a", None, None, None, 10)
            .await
            .unwrap();
        assert_eq!(ids(&all), ["wev_4", "wev_3", "wev_2", "wev_1"], "{scope:?}");
        let of_one = store
            .events(&scope, "org_a", Some("whe_1"), None, None, 10)
            .await
            .unwrap();
        assert_eq!(ids(&of_one), ["wev_3", "wev_1"]);
        let processed = store
            .events(
                &scope,
                "org_a",
                None,
                Some(EventStatus::Processed),
                None,
                10,
            )
            .await
            .unwrap();
        assert_eq!(ids(&processed), ["wev_1"]);
        assert_eq!(processed[0].processed_ms, Some(NOW + 11));
        let received = store
            .events(&scope, "org_a", None, Some(EventStatus::Received), None, 10)
            .await
            .unwrap();
        assert_eq!(ids(&received), ["wev_4", "wev_3", "wev_2"]);
        let both = store
            .events(
                &scope,
                "org_a",
                Some("whe_2"),
                Some(EventStatus::Received),
                None,
                10,
            )
            .await
            .unwrap();
        assert_eq!(ids(&both), ["wev_4", "wev_2"]);
        assert!(
            store
                .events(&scope, "org_a", None, Some(EventStatus::Dead), None, 10)
                .await
                .unwrap()
                .is_empty()
        );
        // Pages: the first two, then those received before the last one seen.
        let page = store
            .events(&scope, "org_a", None, None, None, 2)
            .await
            .unwrap();
        assert_eq!(ids(&page), ["wev_4", "wev_3"]);
        let next = store
            .events(&scope, "org_a", None, None, Some(NOW + 3), 2)
            .await
            .unwrap();
        assert_eq!(ids(&next), ["wev_2", "wev_1"]);
        assert!(
            store
                .events(&scope, "org_a", Some("whe_b"), None, None, 10)
                .await
                .unwrap()
                .is_empty(),
            "another org's endpoint named under org A"
        );
    }
    assert!(
        store
            .events(&a, "org_b", None, None, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        ids(&store
            .events(&b, "org_b", None, None, None, 10)
            .await
            .unwrap()),
        ["wev_b"]
    );
}

/// P2: a rotation adds a secret and gives the older ones an end; both verify until then, only
/// the new one after. Secrets reach only the system path, and rewrap walks them.
pub async fn p2_secrets_rotate_with_an_overlap<S: Store>(store: Arc<S>) {
    let a = webhook_org(&*store).await;
    // An endpoint may start with several secrets (already rotating at the provider).
    let mut pre = secret_row("whs_0", "whe_2", "org_a", NOW - 5);
    pre.expires_ms = Some(NOW + 100);
    store
        .insert_endpoint(
            &a,
            &endpoint_row("whe_2", "org_a", "Other"),
            &[pre.clone(), secret_row("whs_9", "whe_2", "org_a", NOW)],
        )
        .await
        .unwrap();
    assert_eq!(
        store.live_secrets(&HOOKS, "whe_2", NOW + 99).await.unwrap(),
        [secret_row("whs_9", "whe_2", "org_a", NOW), pre.clone()],
        "newest first"
    );
    assert_eq!(
        store
            .live_secrets(&HOOKS, "whe_2", NOW + 100)
            .await
            .unwrap(),
        [secret_row("whs_9", "whe_2", "org_a", NOW)]
    );

    let s1 = secret_row("whs_1", "whe_1", "org_a", NOW);
    assert_eq!(
        store.live_secrets(&HOOKS, "whe_1", NOW).await.unwrap(),
        std::slice::from_ref(&s1)
    );
    let until = NOW + 1_000;
    let s2 = secret_row("whs_2", "whe_1", "org_a", NOW + 10);
    store.rotate_secret(&a, &s2, until).await.unwrap();
    let mut s1_ending = s1.clone();
    s1_ending.expires_ms = Some(until);
    assert_eq!(
        store
            .live_secrets(&HOOKS, "whe_1", until - 1)
            .await
            .unwrap(),
        [s2.clone(), s1_ending.clone()],
        "both verify during the overlap"
    );
    assert_eq!(
        store.live_secrets(&HOOKS, "whe_1", until).await.unwrap(),
        std::slice::from_ref(&s2),
        "only the new one after it"
    );

    // A second rotation ends the second secret and leaves the first one's end as it was.
    let until2 = NOW + 2_000;
    let s3 = secret_row("whs_3", "whe_1", "org_a", NOW + 20);
    store.rotate_secret(&SYS, &s3, until2).await.unwrap();
    let mut s2_ending = s2.clone();
    s2_ending.expires_ms = Some(until2);
    assert_eq!(
        store
            .live_secrets(&HOOKS, "whe_1", NOW + 500)
            .await
            .unwrap(),
        [s3.clone(), s2_ending.clone(), s1_ending.clone()]
    );
    assert_eq!(
        store.live_secrets(&HOOKS, "whe_1", until2).await.unwrap(),
        std::slice::from_ref(&s3)
    );

    // A refused rotation changes nothing: a duplicate id, a missing endpoint, another org's.
    let dup = secret_row("whs_1", "whe_1", "org_a", NOW + 30);
    assert!(matches!(
        store.rotate_secret(&a, &dup, NOW + 3_000).await,
        Err(StoreError::Conflict(_))
    ));
    let r = store
        .rotate_secret(&a, &secret_row("whs_x", "whe_gone", "org_a", NOW), until)
        .await;
    assert!(matches!(r, Err(StoreError::NotFound)), "{r:?}");
    org_with(&*store, "org_b", &[("usr_b", 100)]).await;
    let b = in_org("usr_b", "org_b");
    for (scope, org) in [(&b, "org_a"), (&b, "org_b"), (&SYS, "org_b"), (&a, "org_b")] {
        let r = store
            .rotate_secret(scope, &secret_row("whs_x", "whe_1", org, NOW + 40), until)
            .await;
        assert!(
            matches!(r, Err(StoreError::NotFound | StoreError::Forbidden)),
            "{scope:?} {org}: {r:?}"
        );
    }
    assert_eq!(
        store
            .live_secrets(&HOOKS, "whe_1", NOW + 500)
            .await
            .unwrap(),
        [s3.clone(), s2_ending, s1_ending],
        "unchanged"
    );
    // Secrets given with a new endpoint must be of that endpoint.
    let r = store
        .insert_endpoint(
            &a,
            &endpoint_row("whe_3", "org_a", "Third"),
            &[secret_row("whs_y", "whe_1", "org_a", NOW)],
        )
        .await;
    assert!(matches!(r, Err(StoreError::NotFound)), "{r:?}");
    assert_eq!(store.endpoint(&SYS, "whe_3").await.unwrap(), None);

    // No request scope reads a secret, not even the org's Super Admin.
    for scope in [a.clone(), b, as_user("usr_a"), Scope::Anonymous] {
        let r = store.live_secrets(&scope, "whe_1", NOW).await;
        assert!(matches!(r, Err(StoreError::Forbidden)), "{scope:?}: {r:?}");
    }

    // Rewrap walks the sealed secrets like any other sealed column.
    let batch = store
        .sealed_batch(&SYS, SealedColumn::WebhookSecret, "webhooks-v2", None, 100)
        .await
        .unwrap();
    let mut seen: Vec<&str> = batch.iter().map(|r| r.row_id.as_str()).collect();
    seen.sort_unstable();
    assert_eq!(seen, ["whs_0", "whs_1", "whs_2", "whs_3", "whs_9"]);
    let rewrapped: Vec<Rewrapped> = batch
        .iter()
        .map(|r| Rewrapped {
            row_id: r.row_id.clone(),
            old: r.envelope.clone(),
            key_id: "webhooks-v2".into(),
            new: [b"v2:".as_slice(), &r.envelope].concat(),
        })
        .collect();
    assert_eq!(
        store
            .replace_sealed(&SYS, SealedColumn::WebhookSecret, &rewrapped)
            .await
            .unwrap(),
        5
    );
    let now_live = store.live_secrets(&HOOKS, "whe_1", until2).await.unwrap();
    assert_eq!(now_live.len(), 1);
    assert_eq!(now_live[0].secret_key, "webhooks-v2");
    assert_eq!(now_live[0].secret, b"v2:sealed:whs_3");
}

/// P2: endpoints and events reach only their org (by the permission map where the database
/// enforces it: webhooks.read to see, webhooks.manage to change); ingestion and processing are
/// the system's alone, and so are the secrets.
pub async fn p2_endpoints_and_events_are_org_scoped<S: Store>(store: Arc<S>) {
    store
        .sync_permissions(&SYS, &permission_rows())
        .await
        .unwrap();
    org_with(
        &*store,
        "org_a",
        &[("usr_a", 100), ("usr_m", 80), ("usr_r", 60), ("usr_v", 40)],
    )
    .await;
    org_with(&*store, "org_b", &[("usr_b", 100)]).await;
    let a = in_org("usr_a", "org_a");
    let b = in_org("usr_b", "org_b");
    let e1 = endpoint_row("whe_1", "org_a", "Payments");
    store
        .insert_endpoint(&a, &e1, &[secret_row("whs_1", "whe_1", "org_a", NOW)])
        .await
        .unwrap();
    let ev = event_row("wev_1", "whe_1", "org_a", "evt_1", NOW);
    record_new(&*store, &ev).await;

    // Names are unique per org, not across orgs.
    assert!(matches!(
        store
            .insert_endpoint(&a, &endpoint_row("whe_dup", "org_a", "Payments"), &[])
            .await,
        Err(StoreError::Conflict(_))
    ));
    store
        .insert_endpoint(&b, &endpoint_row("whe_b", "org_b", "Payments"), &[])
        .await
        .unwrap();

    // The system path (ingestion) finds an endpoint by its id alone.
    assert_eq!(
        store.endpoint(&HOOKS, "whe_1").await.unwrap(),
        Some(e1.clone())
    );
    assert_eq!(store.endpoint(&HOOKS, "whe_none").await.unwrap(), None);
    assert_eq!(store.endpoint(&a, "whe_1").await.unwrap(), Some(e1.clone()));
    assert_eq!(
        store.endpoints(&a, "org_a").await.unwrap(),
        std::slice::from_ref(&e1)
    );
    assert_eq!(store.event(&a, "wev_1").await.unwrap(), Some(ev.clone()));

    // Outside org A nothing of it is visible, and nothing of it can be changed.
    for scope in [
        b.clone(),
        in_org("usr_b", "org_a"),
        in_org("usr_a", "org_b"),
        as_user("usr_a"),
        key_scope("key_b", "org_b", KeyKind::Service),
        key_scope("key_gone", "org_a", KeyKind::Service),
        Scope::Anonymous,
    ] {
        assert_eq!(
            store.endpoint(&scope, "whe_1").await.unwrap(),
            None,
            "{scope:?}"
        );
        assert!(
            store.endpoints(&scope, "org_a").await.unwrap().is_empty(),
            "{scope:?}"
        );
        assert_eq!(
            store.event(&scope, "wev_1").await.unwrap(),
            None,
            "{scope:?}"
        );
        assert!(
            store
                .events(&scope, "org_a", None, None, None, 10)
                .await
                .unwrap()
                .is_empty(),
            "{scope:?}"
        );
        assert!(
            !store.delete_endpoint(&scope, "whe_1").await.unwrap(),
            "{scope:?}"
        );
        assert!(
            !store.retry_event(&scope, "wev_1", NOW).await.unwrap(),
            "{scope:?}"
        );
        let r = store
            .insert_endpoint(&scope, &endpoint_row("whe_x", "org_a", "Stolen"), &[])
            .await;
        assert!(
            matches!(r, Err(StoreError::Forbidden | StoreError::NotFound)),
            "{scope:?}: {r:?}"
        );
        let r = store
            .rotate_secret(&scope, &secret_row("whs_x", "whe_1", "org_a", NOW), NOW)
            .await;
        assert!(
            matches!(r, Err(StoreError::Forbidden | StoreError::NotFound)),
            "{scope:?}: {r:?}"
        );
    }

    // Ingestion and processing are system paths: every request scope is refused, even the
    // org's Super Admin.
    for scope in [
        a.clone(),
        in_org("usr_m", "org_a"),
        b.clone(),
        Scope::Anonymous,
    ] {
        let r = store
            .record_event(
                &scope,
                &event_row("wev_x", "whe_1", "org_a", "evt_x", NOW),
                None,
            )
            .await;
        assert!(matches!(r, Err(StoreError::Forbidden)), "{scope:?}: {r:?}");
        let r = store.claim_event(&scope, "wev_1", NOW, LEASE).await;
        assert!(matches!(r, Err(StoreError::Forbidden)), "{scope:?}: {r:?}");
        let r = store
            .finish_event(&scope, "wev_1", NOW, &Finish::Processed)
            .await;
        assert!(matches!(r, Err(StoreError::Forbidden)), "{scope:?}: {r:?}");
        let r = store.due_events(&scope, NOW, 10).await;
        assert!(matches!(r, Err(StoreError::Forbidden)), "{scope:?}: {r:?}");
        let r = store.live_secrets(&scope, "whe_1", NOW).await;
        assert!(matches!(r, Err(StoreError::Forbidden)), "{scope:?}: {r:?}");
    }
    assert_eq!(store.event(&SYS, "wev_x").await.unwrap(), None);
    assert_eq!(store.event(&SYS, "wev_1").await.unwrap(), Some(ev.clone()));

    // The permission map, where the database holds it (SQLite leaves it to bastion-core).
    if store.isolation() == Isolation::RowLevelSecurity {
        let reader = in_org("usr_r", "org_a");
        assert_eq!(
            store.endpoint(&reader, "whe_1").await.unwrap(),
            Some(e1.clone())
        );
        assert_eq!(store.endpoints(&reader, "org_a").await.unwrap().len(), 1);
        assert_eq!(
            store.event(&reader, "wev_1").await.unwrap(),
            Some(ev.clone())
        );
        let r = store
            .insert_endpoint(&reader, &endpoint_row("whe_r", "org_a", "Reader's"), &[])
            .await;
        assert!(matches!(r, Err(StoreError::Forbidden)), "{r:?}");
        let r = store
            .rotate_secret(&reader, &secret_row("whs_r", "whe_1", "org_a", NOW), NOW)
            .await;
        assert!(matches!(r, Err(StoreError::Forbidden)), "{r:?}");
        assert!(!store.delete_endpoint(&reader, "whe_1").await.unwrap());
        let viewer = in_org("usr_v", "org_a");
        assert_eq!(store.endpoint(&viewer, "whe_1").await.unwrap(), None);
        assert_eq!(store.event(&viewer, "wev_1").await.unwrap(), None);
        assert!(
            store
                .events(&viewer, "org_a", None, None, None, 10)
                .await
                .unwrap()
                .is_empty()
        );
        // A failed event: a reader cannot send it back, a manager can.
        store
            .claim_event(&HOOKS, "wev_1", NOW, LEASE)
            .await
            .unwrap()
            .unwrap();
        let dead = Finish::Failed {
            error: "gone".into(),
            retry_at_ms: None,
        };
        assert!(
            store
                .finish_event(&HOOKS, "wev_1", NOW, &dead)
                .await
                .unwrap()
        );
        assert!(!store.retry_event(&reader, "wev_1", NOW + 1).await.unwrap());
        assert!(
            store
                .retry_event(&in_org("usr_m", "org_a"), "wev_1", NOW + 1)
                .await
                .unwrap()
        );
    }
    // A manager (level 80) adds, rotates and deletes.
    let m = in_org("usr_m", "org_a");
    store
        .insert_endpoint(
            &m,
            &endpoint_row("whe_m", "org_a", "Manager's"),
            &[secret_row("whs_m", "whe_m", "org_a", NOW)],
        )
        .await
        .unwrap();
    store
        .rotate_secret(
            &m,
            &secret_row("whs_m2", "whe_m", "org_a", NOW + 1),
            NOW + 10,
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .live_secrets(&HOOKS, "whe_m", NOW + 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(store.delete_endpoint(&m, "whe_m").await.unwrap());
    assert_eq!(
        store.endpoints(&SYS, "org_a").await.unwrap(),
        std::slice::from_ref(&e1)
    );
    assert_eq!(store.endpoints(&b, "org_b").await.unwrap().len(), 1);
}

/// P3: deleting an endpoint takes its secrets and events along; deleting an org takes its
/// endpoints, and theirs; nothing of another endpoint or org goes with them.
pub async fn p3_deleting_an_endpoint_or_org_takes_secrets_and_events_along<S: Store>(
    store: Arc<S>,
) {
    let a = webhook_org(&*store).await;
    store
        .insert_endpoint(
            &a,
            &endpoint_row("whe_2", "org_a", "Other"),
            &[secret_row("whs_2", "whe_2", "org_a", NOW)],
        )
        .await
        .unwrap();
    org_with(&*store, "org_b", &[("usr_b", 100)]).await;
    let b = in_org("usr_b", "org_b");
    store
        .insert_endpoint(
            &b,
            &endpoint_row("whe_b", "org_b", "Payments"),
            &[secret_row("whs_b", "whe_b", "org_b", NOW)],
        )
        .await
        .unwrap();
    for ev in [
        event_row("wev_1", "whe_1", "org_a", "evt_1", NOW),
        event_row("wev_2", "whe_2", "org_a", "evt_1", NOW),
        event_row("wev_b", "whe_b", "org_b", "evt_1", NOW),
    ] {
        record_new(&*store, &ev).await;
    }

    assert!(store.delete_endpoint(&a, "whe_1").await.unwrap());
    assert!(!store.delete_endpoint(&a, "whe_1").await.unwrap(), "once");
    assert_eq!(store.endpoint(&SYS, "whe_1").await.unwrap(), None);
    assert!(
        store
            .live_secrets(&HOOKS, "whe_1", NOW)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.event(&SYS, "wev_1").await.unwrap(), None);
    assert_eq!(
        ids(&store
            .events(&SYS, "org_a", None, None, None, 10)
            .await
            .unwrap()),
        ["wev_2"]
    );
    assert_eq!(
        store
            .live_secrets(&HOOKS, "whe_2", NOW)
            .await
            .unwrap()
            .len(),
        1
    );
    // A delivery to the deleted endpoint finds nothing to file under.
    let r = store
        .record_event(
            &HOOKS,
            &event_row("wev_9", "whe_1", "org_a", "evt_9", NOW),
            None,
        )
        .await;
    assert!(matches!(r, Err(StoreError::NotFound)), "{r:?}");

    assert!(store.delete_org(&a, "org_a").await.unwrap());
    assert!(store.endpoints(&SYS, "org_a").await.unwrap().is_empty());
    assert_eq!(store.endpoint(&SYS, "whe_2").await.unwrap(), None);
    assert!(
        store
            .live_secrets(&HOOKS, "whe_2", NOW)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.event(&SYS, "wev_2").await.unwrap(), None);
    assert!(store.due_events(&HOOKS, NOW, 10).await.unwrap() == ["wev_b"]);
    let left = store
        .sealed_batch(&SYS, SealedColumn::WebhookSecret, "webhooks-v2", None, 10)
        .await
        .unwrap();
    assert_eq!(left.len(), 1, "only org B's secret is left to rewrap");
    assert_eq!(left[0].row_id, "whs_b");

    // Org B is untouched.
    assert_eq!(store.endpoints(&b, "org_b").await.unwrap().len(), 1);
    assert_eq!(
        store
            .live_secrets(&HOOKS, "whe_b", NOW)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(store.event(&b, "wev_b").await.unwrap().is_some());
}

/// The tests of this area, listed for [`crate::conformance_tests!`].
#[macro_export]
macro_rules! conformance_webhooks {
    ($make:expr) => {
        $crate::conformance_tests!(@each $make;
            p3_an_event_is_recorded_once_per_endpoint_even_concurrently,
            p3_claims_are_exclusive_and_leases_expire,
            p3_failed_events_retry_when_due_then_die,
            p3_events_list_newest_first_by_org_endpoint_and_status,
            p2_secrets_rotate_with_an_overlap,
            p2_endpoints_and_events_are_org_scoped,
            p3_deleting_an_endpoint_or_org_takes_secrets_and_events_along
        );
    };
}
