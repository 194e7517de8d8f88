//! SPEC C4: offline verification with the public keys the app ships.

use bastion_client::offline::{check_not_revoked, verify_all, verify_certificate, verify_offline};
use bastion_client::{Client, ClientError, Fingerprint, RevocationCache};
use bastion_crypto::jwt::JwtAlgorithm;
use bastion_crypto::license::{DEFAULT_SKEW_SECS, LicenseError};

use crate::support::*;

fn license_err(r: Result<impl std::fmt::Debug, ClientError>) -> LicenseError {
    match r {
        Err(ClientError::License(e)) => e,
        other => panic!("expected a license error, got {other:?}"),
    }
}

#[test]
fn c4_offline_verification_accepts_a_good_key_and_refuses_a_flipped_bit_an_unknown_key_and_another_email()
 {
    for alg in [JwtAlgorithm::Rs256, JwtAlgorithm::EdDsa] {
        let issuer = Issuer::new(alg);
        let key = issuer.license();

        let claims = verify_offline(&key, EMAIL, &issuer.keys, NOW).unwrap();
        assert_eq!(claims.lic, LICENSE_ID);
        assert_eq!(claims.prd, PRODUCT_ID);
        assert_eq!(claims.ent, ["export", "pro"]);
        // The email is compared canonically, as the user may type it.
        assert!(verify_offline(&key, " Ann@Example.COM ", &issuer.keys, NOW).is_ok());

        let mut flips = 0;
        for i in 0..key.len() {
            let Some(tampered) = flip(&key, i) else {
                continue;
            };
            flips += 1;
            assert!(
                verify_offline(&tampered, EMAIL, &issuer.keys, NOW).is_err(),
                "{alg:?}: bit flip at byte {i} accepted"
            );
        }
        assert!(flips > 100);

        let stranger = Issuer::new(alg);
        assert!(matches!(
            license_err(verify_offline(
                &stranger.license(),
                EMAIL,
                &issuer.keys,
                NOW
            )),
            LicenseError::UnknownKey(_)
        ));

        assert_eq!(
            license_err(verify_offline(&key, "eve@example.com", &issuer.keys, NOW)),
            LicenseError::EmailMismatch
        );

        let expiring = issuer.license_with(LICENSE_ID, EMAIL, Some(NOW));
        assert!(verify_offline(&expiring, EMAIL, &issuer.keys, NOW + DEFAULT_SKEW_SECS).is_ok());
        assert_eq!(
            license_err(verify_offline(
                &expiring,
                EMAIL,
                &issuer.keys,
                NOW + DEFAULT_SKEW_SECS + 1
            )),
            LicenseError::Expired
        );
    }
}

#[test]
fn c4_a_certificate_copied_to_another_machine_or_expired_is_refused_offline() {
    let issuer = Issuer::new(JwtAlgorithm::EdDsa);
    let lease_end = NOW + 7 * DAY;
    let cert = issuer.certificate(LICENSE_ID, &machine_a(), lease_end);

    let claims = verify_certificate(&cert, LICENSE_ID, &machine_a(), &issuer.keys, NOW).unwrap();
    assert_eq!(claims.exp, lease_end);
    // The same machine gathered in another order and case is still the same machine.
    let mut parts = machine_a().components().to_vec();
    parts.reverse();
    let reordered = Fingerprint::from_components(parts.iter().map(|p| p.to_uppercase()).collect());
    assert!(verify_certificate(&cert, LICENSE_ID, &reordered, &issuer.keys, NOW).is_ok());

    assert_eq!(
        license_err(verify_certificate(
            &cert,
            LICENSE_ID,
            &machine_b(),
            &issuer.keys,
            NOW
        )),
        LicenseError::WrongMachine
    );
    assert_eq!(
        license_err(verify_certificate(
            &cert,
            "lic_other",
            &machine_a(),
            &issuer.keys,
            NOW
        )),
        LicenseError::WrongMachine
    );
    assert!(
        verify_certificate(
            &cert,
            LICENSE_ID,
            &machine_a(),
            &issuer.keys,
            lease_end + DEFAULT_SKEW_SECS
        )
        .is_ok()
    );
    assert_eq!(
        license_err(verify_certificate(
            &cert,
            LICENSE_ID,
            &machine_a(),
            &issuer.keys,
            lease_end + DEFAULT_SKEW_SECS + 1
        )),
        LicenseError::Expired
    );

    // All checks at once: the lease ends the offline run, and the license's own expiry caps it.
    let key = issuer.license_with(LICENSE_ID, EMAIL, Some(NOW + 3 * DAY));
    let cache = RevocationCache::new(PRODUCT_ID);
    let status = verify_all(&key, EMAIL, &cert, &machine_a(), &issuer.keys, &cache, NOW).unwrap();
    assert_eq!(status.runs_until(), NOW + 3 * DAY);
    assert_eq!(status.entitlements(), ["export", "pro"]);
    assert_eq!(
        license_err(verify_all(
            &key,
            EMAIL,
            &cert,
            &machine_b(),
            &issuer.keys,
            &cache,
            NOW
        )),
        LicenseError::WrongMachine
    );
}

#[tokio::test]
async fn c4_a_revoked_license_is_refused_after_the_new_list_is_fetched_and_an_older_list_cannot_undo_it()
 {
    let issuer = Issuer::new(JwtAlgorithm::Rs256);
    let key = issuer.license();
    let cert = issuer.certificate(LICENSE_ID, &machine_a(), NOW + 7 * DAY);
    let claims = verify_offline(&key, EMAIL, &issuer.keys, NOW).unwrap();

    let old_list = issuer.revocations(PRODUCT_ID, NOW - DAY, &["lic_someone_else"]);
    let mut cache = RevocationCache::new(PRODUCT_ID);
    assert!(cache.offer(&issuer.keys, &old_list).unwrap());
    assert!(cache.check(&claims).is_ok());
    assert!(verify_all(&key, EMAIL, &cert, &machine_a(), &issuer.keys, &cache, NOW).is_ok());

    // The app fetches the new list from the server.
    let new_list = issuer.revocations(PRODUCT_ID, NOW, &[LICENSE_ID, "lic_someone_else"]);
    let body = serde_json::json!({ "list": new_list }).to_string();
    let (url, request) = serve_once(response("200 OK", "application/json", "", &body)).await;
    let fetched = Client::new(&url)
        .unwrap()
        .revocations(PRODUCT_ID)
        .await
        .unwrap();
    let raw = request.await.unwrap();
    let (head, _) = split_request(&raw);
    assert!(
        head.starts_with(&format!(
            "GET /v1/licenses/revocations/{PRODUCT_ID} HTTP/1.1"
        )),
        "{head}"
    );
    assert_eq!(fetched, new_list);

    assert!(cache.offer(&issuer.keys, &fetched).unwrap());
    assert_eq!(license_err(cache.check(&claims)), LicenseError::Revoked);
    assert_eq!(
        license_err(check_not_revoked(&claims, cache.claims())),
        LicenseError::Revoked
    );
    assert_eq!(
        license_err(verify_all(
            &key,
            EMAIL,
            &cert,
            &machine_a(),
            &issuer.keys,
            &cache,
            NOW
        )),
        LicenseError::Revoked
    );

    // Replaying the older list (or one as old) is ignored: the license stays revoked.
    assert!(!cache.offer(&issuer.keys, &old_list).unwrap());
    assert!(!cache.offer(&issuer.keys, &fetched).unwrap());
    assert_eq!(cache.document(), Some(new_list.as_str()));
    assert_eq!(license_err(cache.check(&claims)), LicenseError::Revoked);
    // Same second (iat has one-second resolution): a shorter list is the older one and is
    // ignored; a strictly longer one was signed later and is taken.
    let same_second_shorter = issuer.revocations(PRODUCT_ID, NOW, &["lic_someone_else"]);
    assert!(!cache.offer(&issuer.keys, &same_second_shorter).unwrap());
    assert_eq!(license_err(cache.check(&claims)), LicenseError::Revoked);
    let same_second_longer = issuer.revocations(
        PRODUCT_ID,
        NOW,
        &[LICENSE_ID, "lic_someone_else", "lic_third"],
    );
    assert!(cache.offer(&issuer.keys, &same_second_longer).unwrap());
    assert_eq!(license_err(cache.check(&claims)), LicenseError::Revoked);

    // A forged "newer" list, another product's list or a stranger's list change nothing.
    let forged = flip(&issuer.revocations(PRODUCT_ID, NOW + DAY, &[]), 20).unwrap();
    assert!(cache.offer(&issuer.keys, &forged).is_err());
    let other_product = issuer.revocations("prd_other", NOW + DAY, &[]);
    assert!(matches!(
        cache.offer(&issuer.keys, &other_product),
        Err(ClientError::WrongProduct)
    ));
    let stranger = Issuer::new(JwtAlgorithm::Rs256).revocations(PRODUCT_ID, NOW + DAY, &[]);
    assert!(cache.offer(&issuer.keys, &stranger).is_err());
    assert_eq!(license_err(cache.check(&claims)), LicenseError::Revoked);

    // Without any list nothing is known to be revoked.
    assert!(check_not_revoked(&claims, None).is_ok());
}

/// L2, L4, C4: a deactivated machine's certificate, still within its lease, is refused offline
/// once the app holds a list that names the machine; the license itself stays good (another
/// machine's certificate verifies), and a same-second list that drops the machine is not taken.
#[test]
fn l4_c4_a_deactivated_machines_certificate_is_refused_once_the_list_names_it() {
    let issuer = Issuer::new(JwtAlgorithm::Rs256);
    let key = issuer.license();
    // support::Issuer::certificate names the machine `mch_01test`.
    let cert = issuer.certificate(LICENSE_ID, &machine_a(), NOW + 7 * DAY);
    let mut cache = RevocationCache::new(PRODUCT_ID);
    let before = issuer.revocations(PRODUCT_ID, NOW - DAY, &[]);
    assert!(cache.offer(&issuer.keys, &before).unwrap());
    assert!(verify_all(&key, EMAIL, &cert, &machine_a(), &issuer.keys, &cache, NOW).is_ok());
    let after = issuer.revocations_with_machines(PRODUCT_ID, NOW, &[], &["mch_01test"]);
    assert!(cache.offer(&issuer.keys, &after).unwrap());
    assert_eq!(
        license_err(verify_all(
            &key,
            EMAIL,
            &cert,
            &machine_a(),
            &issuer.keys,
            &cache,
            NOW
        )),
        LicenseError::Revoked
    );
    let claims = verify_offline(&key, EMAIL, &issuer.keys, NOW).unwrap();
    assert!(
        cache.check(&claims).is_ok(),
        "the license is not revoked, one machine is"
    );
    let dropped = issuer.revocations(PRODUCT_ID, NOW, &[]);
    assert!(
        !cache.offer(&issuer.keys, &dropped).unwrap(),
        "same second, fewer: older"
    );
    assert_eq!(
        license_err(verify_all(
            &key,
            EMAIL,
            &cert,
            &machine_a(),
            &issuer.keys,
            &cache,
            NOW
        )),
        LicenseError::Revoked
    );
}
