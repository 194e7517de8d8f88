//! Licensing (SPEC L1–L7): products, policies, licenses and machines. Hashes are arbitrary
//! bytes here (the store never computes one), and so are the sealed mail bodies.

use std::collections::HashSet;
use std::sync::Arc;

use super::{NOW, SYS, as_user, in_org, key_scope, org_with, permission_rows};
use crate::{
    Activation, KeyKind, LicenseRow, MachineRow, OutboundMail, PolicyRow, ProductRow, Scope, Store,
    StoreError,
};

/// A product of `org` created at `NOW`.
fn product_row(id: &str, org: &str, name: &str) -> ProductRow {
    ProductRow {
        id: id.into(),
        org_id: org.into(),
        name: name.into(),
        created_ms: NOW,
    }
}

/// A perpetual policy of `product` for `max_machines` machines.
fn policy_row(id: &str, org: &str, product: &str, name: &str, max_machines: u32) -> PolicyRow {
    PolicyRow {
        id: id.into(),
        org_id: org.into(),
        product_id: product.into(),
        name: name.into(),
        max_machines,
        duration_ms: None,
        entitlements: vec!["export".into(), "pro".into()],
        lease_ms: 7 * 86_400_000,
        created_ms: NOW,
    }
}

/// A license issued at `at` under `policy`, whose key hash is `hash` repeated.
fn license_row(id: &str, policy: &PolicyRow, hash: u8, at: i64) -> LicenseRow {
    LicenseRow {
        id: id.into(),
        org_id: policy.org_id.clone(),
        product_id: policy.product_id.clone(),
        policy_id: policy.id.clone(),
        key_hash: [hash; 32],
        email: "ada@example.com".into(),
        entitlements: policy.entitlements.clone(),
        max_machines: policy.max_machines,
        lease_ms: policy.lease_ms,
        expires_ms: Some(at + 365 * 86_400_000),
        created_ms: at,
        created_by: "usr_a".into(),
        failures: 0,
        frozen_ms: None,
        revoked_ms: None,
    }
}

/// A machine of `license` first seen at `at`, whose hash is `hash` repeated.
fn machine_row(id: &str, license: &LicenseRow, hash: u8, at: i64) -> MachineRow {
    MachineRow {
        id: id.into(),
        org_id: license.org_id.clone(),
        license_id: license.id.clone(),
        machine_hash: [hash; 32],
        name: format!("machine {id}"),
        activated_ms: at,
        last_seen_ms: at,
    }
}

/// A licensing message (`license_issued`, `license_frozen`, …) to the licensee.
fn license_mail(id: &str, template: &str) -> OutboundMail {
    OutboundMail {
        id: id.into(),
        recipient: "ada@example.com".into(),
        template: template.into(),
        sealed: format!("sealed:{id}").into_bytes(),
        sealed_key: "mail-v1".into(),
        created_ms: NOW,
    }
}

/// Org A (Super Admin `usr_a`) with product `prd_1` and its 3-machine policy `pol_1`, created
/// by its admin; returns the admin's scope and the policy.
async fn licensing_org<S: Store>(store: &S) -> (Scope, PolicyRow) {
    store
        .sync_permissions(&SYS, &permission_rows())
        .await
        .unwrap();
    org_with(store, "org_a", &[("usr_a", 100)]).await;
    let a = in_org("usr_a", "org_a");
    store
        .insert_product(&a, &product_row("prd_1", "org_a", "Editor"))
        .await
        .unwrap();
    let policy = policy_row("pol_1", "org_a", "prd_1", "Standard", 3);
    store.insert_policy(&a, &policy).await.unwrap();
    (a, policy)
}

/// L3: a license is found by its key hash (the system's activation path, or its own org), never
/// from another org or anonymously; names are unique per org (products) and per product
/// (policies); a policy must be of a product of its own org, a license of a policy of its
/// product; a license and its delivery mail are written together or not at all.
pub async fn l3_licenses_are_found_by_key_hash_and_org_scoped<S: Store>(store: Arc<S>) {
    let (a, policy) = licensing_org(&*store).await;
    org_with(&*store, "org_b", &[("usr_b", 100)]).await;
    let b = in_org("usr_b", "org_b");
    let lic = license_row("lic_1", &policy, 1, NOW + 1);
    store
        .insert_license(&a, &lic, Some(&license_mail("mail_1", "license_issued")))
        .await
        .unwrap();
    assert_eq!(store.mail_counts(&SYS).await.unwrap().pending, 1);

    // Round trips, by id, by hash and by list.
    assert_eq!(
        store.product(&a, "prd_1").await.unwrap(),
        Some(product_row("prd_1", "org_a", "Editor"))
    );
    assert_eq!(
        store.policy(&a, "pol_1").await.unwrap(),
        Some(policy.clone())
    );
    assert_eq!(
        store.policies(&a, "prd_1").await.unwrap(),
        std::slice::from_ref(&policy)
    );
    for scope in [SYS, a.clone()] {
        assert_eq!(
            store.license_by_key_hash(&scope, &[1; 32]).await.unwrap(),
            Some(lic.clone()),
            "{scope:?}"
        );
        assert_eq!(
            store.license(&scope, "lic_1").await.unwrap(),
            Some(lic.clone()),
            "{scope:?}"
        );
        assert_eq!(
            store.licenses(&scope, "org_a", None, 10).await.unwrap(),
            std::slice::from_ref(&lic),
            "{scope:?}"
        );
    }
    assert_eq!(
        store.license_by_key_hash(&SYS, &[9; 32]).await.unwrap(),
        None
    );

    // Names: unique per org and per product, free in another org.
    assert!(matches!(
        store
            .insert_product(&a, &product_row("prd_2", "org_a", "Editor"))
            .await,
        Err(StoreError::Conflict("product_exists"))
    ));
    store
        .insert_product(&b, &product_row("prd_b", "org_b", "Editor"))
        .await
        .unwrap();
    store
        .insert_product(&a, &product_row("prd_0", "org_a", "Audio"))
        .await
        .unwrap();
    assert_eq!(
        store
            .products(&a, "org_a")
            .await
            .unwrap()
            .iter()
            .map(|p| p.id.as_str())
            .collect::<Vec<_>>(),
        ["prd_0", "prd_1"],
        "by name"
    );
    assert!(matches!(
        store
            .insert_policy(&a, &policy_row("pol_2", "org_a", "prd_1", "Standard", 1))
            .await,
        Err(StoreError::Conflict("policy_exists"))
    ));
    store
        .insert_policy(&a, &policy_row("pol_0", "org_a", "prd_0", "Standard", 1))
        .await
        .unwrap();

    // A policy for another org's product, however it is asked for.
    for (scope, org) in [(&b, "org_b"), (&SYS, "org_b"), (&a, "org_b")] {
        let r = store
            .insert_policy(scope, &policy_row("pol_x", org, "prd_1", "Stolen", 1))
            .await;
        assert!(
            matches!(r, Err(StoreError::NotFound | StoreError::Forbidden)),
            "{scope:?}: {r:?}"
        );
    }
    assert!(matches!(
        store
            .insert_policy(&SYS, &policy_row("pol_x", "org_b", "prd_1", "Stolen", 1))
            .await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        store.policies(&SYS, "prd_1").await.unwrap(),
        std::slice::from_ref(&policy)
    );

    // A license under another org's policy, or a policy of another product.
    let b_policy = policy_row("pol_b", "org_b", "prd_b", "Standard", 1);
    store.insert_policy(&b, &b_policy).await.unwrap();
    let mut stolen = license_row("lic_x", &b_policy, 2, NOW + 2);
    stolen.policy_id = "pol_1".into();
    let r = store.insert_license(&b, &stolen, None).await;
    assert!(matches!(r, Err(StoreError::NotFound)), "{r:?}");
    let mut crossed = license_row("lic_x", &policy, 2, NOW + 2);
    crossed.product_id = "prd_0".into();
    let r = store.insert_license(&SYS, &crossed, None).await;
    assert!(matches!(r, Err(StoreError::NotFound)), "{r:?}");
    let r = store
        .insert_license(&b, &license_row("lic_x", &policy, 2, NOW + 2), None)
        .await;
    assert!(
        matches!(r, Err(StoreError::Forbidden | StoreError::NotFound)),
        "{r:?}"
    );
    // A key hash is unique, and a license that is refused takes its mail along.
    let twin = license_row("lic_2", &policy, 1, NOW + 3);
    assert!(matches!(
        store
            .insert_license(&a, &twin, Some(&license_mail("mail_2", "license_issued")))
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store.mail_counts(&SYS).await.unwrap().pending,
        1,
        "no mail for a license that was not stored"
    );
    assert_eq!(
        store.licenses(&SYS, "org_a", None, 10).await.unwrap().len(),
        1
    );

    // Outside org A nothing of it is visible, and nothing of it can be changed.
    let machine = machine_row("mch_1", &lic, 7, NOW + 5);
    // Activation and refresh are the public path's (a license key proves it): even the org's
    // own Admin scope is refused, so no request can add a seat.
    assert!(matches!(
        store.activate_machine(&a, &machine, 3).await,
        Err(StoreError::Forbidden)
    ));
    assert!(matches!(
        store.activate_machine(&SYS, &machine, 3).await.unwrap(),
        Activation::Created(_)
    ));
    assert!(matches!(
        store.touch_machine(&a, "mch_1", NOW + 6).await,
        Err(StoreError::Forbidden)
    ));
    for scope in [
        b.clone(),
        in_org("usr_b", "org_a"),
        in_org("usr_a", "org_b"),
        as_user("usr_a"),
        key_scope("key_b", "org_b", KeyKind::Service),
        key_scope("key_gone", "org_a", KeyKind::Service),
        Scope::Anonymous,
    ] {
        let s = &scope;
        assert_eq!(
            store.license_by_key_hash(s, &[1; 32]).await.unwrap(),
            None,
            "{s:?}"
        );
        assert_eq!(store.license(s, "lic_1").await.unwrap(), None, "{s:?}");
        assert!(
            store
                .licenses(s, "org_a", None, 10)
                .await
                .unwrap()
                .is_empty(),
            "{s:?}"
        );
        assert_eq!(store.product(s, "prd_1").await.unwrap(), None, "{s:?}");
        assert!(
            store.products(s, "org_a").await.unwrap().is_empty(),
            "{s:?}"
        );
        assert_eq!(store.policy(s, "pol_1").await.unwrap(), None, "{s:?}");
        assert!(
            store.policies(s, "prd_1").await.unwrap().is_empty(),
            "{s:?}"
        );
        assert!(
            store.machines(s, "lic_1").await.unwrap().is_empty(),
            "{s:?}"
        );
        assert_eq!(
            store.machine_by_hash(s, "lic_1", &[7; 32]).await.unwrap(),
            None,
            "{s:?}"
        );
        assert!(
            store.revoked_licenses(s, "prd_1").await.unwrap().is_empty(),
            "{s:?}"
        );
        assert!(
            !matches!(store.touch_machine(s, "mch_1", NOW + 50).await, Ok(true)),
            "{s:?}"
        );
        assert!(
            !store
                .delete_machine(s, "lic_1", "mch_1", NOW, NOW + 1)
                .await
                .unwrap(),
            "{s:?}"
        );
        assert!(
            !store.revoke_license(s, "lic_1", NOW + 50).await.unwrap(),
            "{s:?}"
        );
        assert!(
            !store.set_frozen(s, "lic_1", Some(NOW + 50)).await.unwrap(),
            "{s:?}"
        );
        assert!(
            store
                .record_key_failure(
                    s,
                    "lic_1",
                    NOW + 50,
                    1,
                    Some(&license_mail("mail_x", "license_frozen"))
                )
                .await
                .is_err(),
            "{s:?}"
        );
        let mut intruder = machine_row("mch_x", &lic, 8, NOW + 50);
        if let Some(org) = s.org_id() {
            intruder.org_id = org.into();
        }
        assert!(
            store.activate_machine(s, &intruder, 3).await.is_err(),
            "{s:?}"
        );
        assert!(
            store
                .insert_product(s, &product_row("prd_x", "org_a", "Intruder"))
                .await
                .is_err(),
            "{s:?}"
        );
    }
    assert_eq!(
        store.license(&SYS, "lic_1").await.unwrap(),
        Some(lic.clone())
    );
    assert_eq!(
        store.machines(&SYS, "lic_1").await.unwrap(),
        [machine],
        "untouched by the other scopes"
    );
    assert_eq!(store.products(&SYS, "org_a").await.unwrap().len(), 2);
    assert_eq!(store.mail_counts(&SYS).await.unwrap().pending, 1);
}

/// L2: of 50 simultaneous activations of a 3-machine license, exactly 3 succeed; the same
/// machine again is the existing activation (refreshed, never counted twice); deactivating a
/// machine frees its seat.
pub async fn l2_concurrent_activations_never_exceed_the_machine_limit<S: Store>(store: Arc<S>) {
    let (_, policy) = licensing_org(&*store).await;
    let lic = license_row("lic_1", &policy, 1, NOW);
    store.insert_license(&SYS, &lic, None).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..50u8 {
        let s = store.clone();
        let m = machine_row(&format!("mch_{i:02}"), &lic, i, NOW + 10);
        tasks.push(tokio::spawn(async move {
            s.activate_machine(&SYS, &m, 3).await.unwrap()
        }));
    }
    let mut created = Vec::new();
    let mut limited = 0;
    for t in tasks {
        match t.await.unwrap() {
            Activation::Created(m) => created.push(m),
            Activation::LimitReached => limited += 1,
            Activation::Existing(m) => panic!("{} was never activated before", m.id),
        }
    }
    assert_eq!(created.len(), 3);
    assert_eq!(limited, 47);
    created.sort_by(|x, y| x.id.cmp(&y.id));
    let mut active = store.machines(&SYS, "lic_1").await.unwrap();
    active.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(active, created, "the machines that were told Created");

    // The same machine again: the stored activation, with its new name and last-seen time.
    let first = created[0].clone();
    let mut again = machine_row("mch_new_id", &lic, first.machine_hash[0], NOW + 20);
    again.name = "renamed".into();
    let mut refreshed = first.clone();
    refreshed.name = "renamed".into();
    refreshed.last_seen_ms = NOW + 20;
    assert_eq!(
        store.activate_machine(&SYS, &again, 3).await.unwrap(),
        Activation::Existing(refreshed.clone())
    );
    assert_eq!(store.machines(&SYS, "lic_1").await.unwrap().len(), 3);
    assert_eq!(
        store
            .machine_by_hash(&SYS, "lic_1", &first.machine_hash)
            .await
            .unwrap(),
        Some(refreshed)
    );
    assert!(
        store
            .touch_machine(&SYS, &first.id, NOW + 30)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .machine_by_hash(&SYS, "lic_1", &first.machine_hash)
            .await
            .unwrap()
            .unwrap()
            .last_seen_ms,
        NOW + 30
    );
    assert!(
        !store
            .touch_machine(&SYS, "mch_none", NOW + 30)
            .await
            .unwrap()
    );

    // A fourth machine is refused until one is deactivated.
    let fourth = machine_row("mch_50", &lic, 50, NOW + 40);
    assert_eq!(
        store.activate_machine(&SYS, &fourth, 3).await.unwrap(),
        Activation::LimitReached
    );
    assert!(
        !store
            .delete_machine(&SYS, "lic_other", &first.id, NOW, NOW + 1)
            .await
            .unwrap(),
        "a machine of another license"
    );
    assert!(
        store
            .delete_machine(&SYS, "lic_1", &first.id, NOW + 50, NOW + 1_000)
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete_machine(&SYS, "lic_1", &first.id, NOW + 50, NOW + 1_000)
            .await
            .unwrap()
    );
    // L2, L4: the deactivated machine's certificates are in its product's revocation list until
    // their longest lease has ended, and cleanup then takes the row.
    let product = policy.product_id.clone();
    assert_eq!(
        store
            .revoked_machines(&SYS, &product, NOW + 999)
            .await
            .unwrap(),
        std::slice::from_ref(&first.id)
    );
    assert!(
        store
            .revoked_machines(&SYS, "prd_other", NOW + 999)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .revoked_machines(&SYS, &product, NOW + 1_000)
            .await
            .unwrap()
            .is_empty()
    );
    let lapsed = crate::Purgeable::LapsedMachineRevocations;
    assert_eq!(store.purge(&SYS, lapsed, NOW + 999, 10).await.unwrap(), 0);
    assert_eq!(store.purge(&SYS, lapsed, NOW + 1_000, 10).await.unwrap(), 1);
    assert_eq!(store.machines(&SYS, "lic_1").await.unwrap().len(), 2);
    assert_eq!(
        store.activate_machine(&SYS, &fourth, 3).await.unwrap(),
        Activation::Created(fourth.clone())
    );
    let ids: Vec<String> = store
        .machines(&SYS, "lic_1")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(ids[2], "mch_50", "oldest first");
    // The license must exist.
    let orphan = MachineRow {
        license_id: "lic_none".into(),
        ..machine_row("mch_51", &lic, 51, NOW + 50)
    };
    assert!(matches!(
        store.activate_machine(&SYS, &orphan, 3).await,
        Err(StoreError::NotFound)
    ));
}

/// L7: of 25 simultaneous failed activations against a key that freezes at 20, exactly one
/// freezes it and queues the one notice; every failure is counted; one admin action unfreezes
/// the key and starts the count over.
pub async fn l7_key_failures_freeze_exactly_once_and_queue_one_mail<S: Store>(store: Arc<S>) {
    let (a, policy) = licensing_org(&*store).await;
    let lic = license_row("lic_1", &policy, 1, NOW);
    store.insert_license(&a, &lic, None).await.unwrap();
    let at = NOW + 100;
    let mut tasks = Vec::new();
    for i in 0..25 {
        let s = store.clone();
        // A distinct id each: a second queued notice could not hide behind the first.
        let mail = license_mail(&format!("mail_{i:02}"), "license_frozen");
        tasks.push(tokio::spawn(async move {
            s.record_key_failure(&SYS, "lic_1", at, 20, Some(&mail))
                .await
                .unwrap()
        }));
    }
    let mut counts = Vec::new();
    let mut froze = Vec::new();
    for t in tasks {
        let f = t.await.unwrap();
        counts.push(f.failures);
        if f.froze {
            froze.push(f.failures);
        }
    }
    counts.sort_unstable();
    assert_eq!(
        counts,
        (1..=25).collect::<Vec<u32>>(),
        "each failure counted once"
    );
    assert_eq!(froze, [20], "frozen once, by the 20th failure");
    let stored = store.license(&SYS, "lic_1").await.unwrap().unwrap();
    assert_eq!((stored.failures, stored.frozen_ms), (25, Some(at)));
    assert_eq!(store.mail_counts(&SYS).await.unwrap().pending, 1);
    let queued = store.claim_mail(&SYS, at, 60_000, 10).await.unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].template, "license_frozen");
    assert_eq!(queued[0].recipient, "ada@example.com");

    // One admin action unfreezes and starts over; a second changes nothing.
    assert!(store.set_frozen(&a, "lic_1", None).await.unwrap());
    assert!(!store.set_frozen(&a, "lic_1", None).await.unwrap());
    let stored = store.license(&SYS, "lic_1").await.unwrap().unwrap();
    assert_eq!((stored.failures, stored.frozen_ms), (0, None));
    let next = store
        .record_key_failure(
            &SYS,
            "lic_1",
            at + 1,
            20,
            Some(&license_mail("mail_n", "license_frozen")),
        )
        .await
        .unwrap();
    assert_eq!((next.failures, next.froze), (1, false));

    // A manual freeze is once too, and a key frozen by hand is not frozen again by failures.
    assert!(store.set_frozen(&a, "lic_1", Some(at + 2)).await.unwrap());
    assert!(!store.set_frozen(&a, "lic_1", Some(at + 3)).await.unwrap());
    let f = store
        .record_key_failure(
            &SYS,
            "lic_1",
            at + 4,
            2,
            Some(&license_mail("mail_m", "license_frozen")),
        )
        .await
        .unwrap();
    assert_eq!((f.failures, f.froze), (2, false));
    let stored = store.license(&SYS, "lic_1").await.unwrap().unwrap();
    assert_eq!((stored.failures, stored.frozen_ms), (2, Some(at + 2)));
    let counts = store.mail_counts(&SYS).await.unwrap();
    assert_eq!(counts.pending, 1, "only the first freeze queued a notice");
    assert!(!store.set_frozen(&SYS, "lic_none", Some(at)).await.unwrap());
    assert!(matches!(
        store
            .record_key_failure(
                &SYS,
                "lic_none",
                at,
                20,
                Some(&license_mail("mail_z", "license_frozen"))
            )
            .await,
        Err(StoreError::NotFound)
    ));
}

/// L5: a license is revoked once for good; each product's revocation list names its own
/// revoked licenses, sorted; an org's license list is newest first, by product, up to a limit.
pub async fn l5_revocation_is_once_and_lists_are_per_product<S: Store>(store: Arc<S>) {
    let (a, policy) = licensing_org(&*store).await;
    store
        .insert_product(&a, &product_row("prd_2", "org_a", "Viewer"))
        .await
        .unwrap();
    let other = policy_row("pol_2", "org_a", "prd_2", "Standard", 1);
    store.insert_policy(&a, &other).await.unwrap();
    let l1 = license_row("lic_1", &policy, 1, NOW + 1);
    let l2 = license_row("lic_2", &policy, 2, NOW + 2);
    let l3 = license_row("lic_3", &policy, 3, NOW + 3);
    let l4 = license_row("lic_4", &other, 4, NOW + 4);
    for l in [&l1, &l2, &l3, &l4] {
        store.insert_license(&a, l, None).await.unwrap();
    }
    let ids = |v: Vec<LicenseRow>| v.into_iter().map(|l| l.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.licenses(&a, "org_a", None, 10).await.unwrap()),
        ["lic_4", "lic_3", "lic_2", "lic_1"],
        "newest first"
    );
    assert_eq!(
        ids(store.licenses(&a, "org_a", Some("prd_1"), 2).await.unwrap()),
        ["lic_3", "lic_2"]
    );
    assert_eq!(
        ids(store
            .licenses(&a, "org_a", Some("prd_2"), 10)
            .await
            .unwrap()),
        ["lic_4"]
    );

    assert!(
        store
            .revoked_licenses(&a, "prd_1")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.revoke_license(&a, "lic_3", NOW + 10).await.unwrap());
    assert!(store.revoke_license(&SYS, "lic_1", NOW + 11).await.unwrap());
    assert!(
        !store.revoke_license(&a, "lic_1", NOW + 12).await.unwrap(),
        "once"
    );
    assert!(
        !store
            .revoke_license(&a, "lic_none", NOW + 12)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .license(&SYS, "lic_1")
            .await
            .unwrap()
            .unwrap()
            .revoked_ms,
        Some(NOW + 11),
        "the first revocation's time stays"
    );
    assert_eq!(store.license(&SYS, "lic_2").await.unwrap(), Some(l2));
    for scope in [SYS, a.clone()] {
        assert_eq!(
            store.revoked_licenses(&scope, "prd_1").await.unwrap(),
            ["lic_1", "lic_3"],
            "{scope:?}"
        );
        assert!(
            store
                .revoked_licenses(&scope, "prd_2")
                .await
                .unwrap()
                .is_empty(),
            "{scope:?}"
        );
    }
    assert!(store.revoke_license(&a, "lic_4", NOW + 13).await.unwrap());
    assert_eq!(
        store.revoked_licenses(&a, "prd_2").await.unwrap(),
        ["lic_4"]
    );
    assert_eq!(
        store.revoked_licenses(&a, "prd_1").await.unwrap(),
        ["lic_1", "lic_3"]
    );
}

/// L1: deleting an org deletes its products, policies, licenses and machines, and nothing of
/// another org's.
pub async fn l1_deleting_an_org_takes_its_licenses_along<S: Store>(store: Arc<S>) {
    let (a, policy) = licensing_org(&*store).await;
    org_with(&*store, "org_b", &[("usr_b", 100)]).await;
    let b = in_org("usr_b", "org_b");
    store
        .insert_product(&b, &product_row("prd_b", "org_b", "Editor"))
        .await
        .unwrap();
    let b_policy = policy_row("pol_b", "org_b", "prd_b", "Standard", 3);
    store.insert_policy(&b, &b_policy).await.unwrap();
    let la = license_row("lic_a", &policy, 1, NOW);
    let lb = license_row("lic_b", &b_policy, 2, NOW);
    store.insert_license(&a, &la, None).await.unwrap();
    store.insert_license(&b, &lb, None).await.unwrap();
    for (l, hash) in [(&la, 10), (&lb, 20)] {
        let m = machine_row(&format!("mch_{hash}"), l, hash, NOW);
        assert!(matches!(
            store.activate_machine(&SYS, &m, 3).await.unwrap(),
            Activation::Created(_)
        ));
    }
    assert!(store.revoke_license(&a, "lic_a", NOW + 1).await.unwrap());
    assert!(store.delete_org(&a, "org_a").await.unwrap());

    assert_eq!(store.license(&SYS, "lic_a").await.unwrap(), None);
    assert_eq!(
        store.license_by_key_hash(&SYS, &[1; 32]).await.unwrap(),
        None
    );
    assert!(
        store
            .licenses(&SYS, "org_a", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.products(&SYS, "org_a").await.unwrap().is_empty());
    assert_eq!(store.product(&SYS, "prd_1").await.unwrap(), None);
    assert_eq!(store.policy(&SYS, "pol_1").await.unwrap(), None);
    assert!(store.machines(&SYS, "lic_a").await.unwrap().is_empty());
    assert_eq!(
        store
            .machine_by_hash(&SYS, "lic_a", &[10; 32])
            .await
            .unwrap(),
        None
    );
    assert!(
        store
            .revoked_licenses(&SYS, "prd_1")
            .await
            .unwrap()
            .is_empty()
    );

    assert_eq!(store.license(&SYS, "lic_b").await.unwrap(), Some(lb));
    assert_eq!(store.machines(&b, "lic_b").await.unwrap().len(), 1);
    assert_eq!(store.policies(&b, "prd_b").await.unwrap(), [b_policy]);
    let seen: HashSet<String> = store
        .products(&SYS, "org_b")
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(seen, HashSet::from(["prd_b".to_owned()]));
}
