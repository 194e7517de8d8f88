//! SPEC C1: the license in the OS keychain (keyutils on Linux), verified and cleared on load.

use bastion_client::{ClearReason, Loaded, StoredLicense};
use bastion_crypto::jwt::JwtAlgorithm;
use bastion_crypto::license::{DEFAULT_SKEW_SECS, LicenseError};
use secrecy::{ExposeSecret, SecretString};

use crate::support::*;

fn stored(issuer: &Issuer, lease_end: i64) -> StoredLicense {
    StoredLicense {
        key: SecretString::from(issuer.license()),
        email: EMAIL.into(),
        license_id: LICENSE_ID.into(),
        certificate: issuer.certificate(LICENSE_ID, &machine_a(), lease_end),
        revocations: None,
    }
}

/// Saves `license`, checks it loads as valid (so a later refusal is the change's doing), then
/// loads with `machine` at `now_s` and returns why it was cleared, checking it is gone.
fn cleared_reason(
    tmp: &TempStorage,
    issuer: &Issuer,
    license: &StoredLicense,
    machine: &bastion_client::Fingerprint,
    now_s: i64,
) -> ClearReason {
    tmp.storage.save(license).unwrap();
    assert!(tmp.exists());
    match tmp.storage.load(&issuer.keys, machine, now_s).unwrap() {
        Loaded::Cleared(reason) => {
            assert!(!tmp.exists(), "entry kept after {reason}");
            assert!(matches!(
                tmp.storage.load(&issuer.keys, machine, now_s).unwrap(),
                Loaded::Missing
            ));
            reason
        }
        other => panic!("expected the entry to be cleared, got {other:?}"),
    }
}

#[test]
fn c1_the_keychain_stores_reads_and_clears_an_entry() {
    let issuer = Issuer::new(JwtAlgorithm::EdDsa);
    let tmp = TempStorage::new("store");
    assert!(matches!(
        tmp.storage.load(&issuer.keys, &machine_a(), NOW).unwrap(),
        Loaded::Missing
    ));

    let license = stored(&issuer, NOW + 7 * DAY);
    tmp.storage.save(&license).unwrap();
    // It really is in the OS key store, under the service and user the library names.
    let raw = tmp.raw().get_password().unwrap();
    assert!(raw.contains(LICENSE_ID));

    let (loaded, status) = tmp
        .storage
        .load(&issuer.keys, &machine_a(), NOW)
        .unwrap()
        .valid()
        .expect("a valid entry");
    assert_eq!(loaded.key.expose_secret(), license.key.expose_secret());
    assert_eq!(loaded.email, EMAIL);
    assert_eq!(loaded.license_id, LICENSE_ID);
    assert_eq!(loaded.certificate, license.certificate);
    assert_eq!(status.license.lic, LICENSE_ID);
    assert_eq!(status.runs_until(), NOW + 7 * DAY);
    // A valid entry stays.
    assert!(tmp.exists());

    // Neither the key nor the email shows in Debug output.
    let shown = format!("{loaded:?}");
    assert!(!shown.contains(license.key.expose_secret()), "{shown}");
    assert!(!shown.contains(EMAIL), "{shown}");

    // A newer revocation list is stored with the license; an older one is not taken.
    let mut with_list = loaded.clone();
    let list = issuer.revocations(PRODUCT_ID, NOW, &["lic_other"]);
    assert!(with_list.offer_revocations(&issuer.keys, &list).unwrap());
    let older = issuer.revocations(PRODUCT_ID, NOW - DAY, &[]);
    assert!(!with_list.offer_revocations(&issuer.keys, &older).unwrap());
    tmp.storage.save(&with_list).unwrap();
    let (reloaded, _) = tmp
        .storage
        .load(&issuer.keys, &machine_a(), NOW)
        .unwrap()
        .valid()
        .expect("still valid");
    assert_eq!(reloaded.revocations.as_deref(), Some(list.as_str()));

    assert!(tmp.storage.clear().unwrap());
    assert!(!tmp.exists());
    assert!(matches!(
        tmp.storage.load(&issuer.keys, &machine_a(), NOW).unwrap(),
        Loaded::Missing
    ));
    assert!(!tmp.storage.clear().unwrap());
}

#[test]
fn c1_an_expired_or_foreign_certificate_in_the_keychain_is_cleared_on_load() {
    let issuer = Issuer::new(JwtAlgorithm::Rs256);
    let tmp = TempStorage::new("expired");
    let lease_end = NOW + 7 * DAY;
    let license = stored(&issuer, lease_end);

    // Control: the entry is good on its machine within the lease.
    tmp.storage.save(&license).unwrap();
    assert!(matches!(
        tmp.storage
            .load(&issuer.keys, &machine_a(), lease_end)
            .unwrap(),
        Loaded::Valid { .. }
    ));

    // The lease ran out.
    assert_eq!(
        cleared_reason(
            &tmp,
            &issuer,
            &license,
            &machine_a(),
            lease_end + DEFAULT_SKEW_SECS + 1
        ),
        ClearReason::Certificate(LicenseError::Expired)
    );
    // The keychain was copied to another machine.
    assert_eq!(
        cleared_reason(&tmp, &issuer, &license, &machine_b(), NOW),
        ClearReason::Certificate(LicenseError::WrongMachine)
    );
    // The license itself expired.
    let mut expired_key = license.clone();
    expired_key.key = SecretString::from(issuer.license_with(LICENSE_ID, EMAIL, Some(NOW - DAY)));
    assert_eq!(
        cleared_reason(&tmp, &issuer, &expired_key, &machine_a(), NOW),
        ClearReason::License(LicenseError::Expired)
    );
    // The stored revocation list names this license.
    let mut revoked = license.clone();
    let list = issuer.revocations(PRODUCT_ID, NOW, &[LICENSE_ID]);
    assert!(revoked.offer_revocations(&issuer.keys, &list).unwrap());
    assert_eq!(
        cleared_reason(&tmp, &issuer, &revoked, &machine_a(), NOW),
        ClearReason::Revoked
    );
    // The app now trusts only a new key (the old one was retired).
    let rotated = Issuer::new(JwtAlgorithm::Rs256);
    tmp.storage.save(&license).unwrap();
    assert!(matches!(
        tmp.storage.load(&rotated.keys, &machine_a(), NOW).unwrap(),
        Loaded::Cleared(ClearReason::License(LicenseError::UnknownKey(_)))
    ));
    assert!(!tmp.exists());
}

#[test]
fn c1_a_tampered_keychain_entry_is_cleared_on_load() {
    let issuer = Issuer::new(JwtAlgorithm::EdDsa);
    let tmp = TempStorage::new("tampered");
    let license = stored(&issuer, NOW + 7 * DAY);

    // Not JSON at all, or JSON of another shape.
    for raw in [
        "not json",
        "{}",
        r#"{"v":2,"key":"k","email":"e","license_id":"l","certificate":"c"}"#,
    ] {
        tmp.raw().set_password(raw).unwrap();
        assert_eq!(
            tmp.storage
                .load(&issuer.keys, &machine_a(), NOW)
                .unwrap()
                .valid()
                .map(|_| ()),
            None
        );
        assert!(!tmp.exists(), "{raw:?} kept");
    }
    tmp.raw().set_password("not json").unwrap();
    assert!(matches!(
        tmp.storage.load(&issuer.keys, &machine_a(), NOW).unwrap(),
        Loaded::Cleared(ClearReason::Unreadable)
    ));

    // One bit of the certificate (its lease end, say) changed.
    let mut cert = license.clone();
    cert.certificate = flip(&license.certificate, 30).unwrap();
    assert!(matches!(
        cleared_reason(&tmp, &issuer, &cert, &machine_a(), NOW),
        ClearReason::Certificate(_)
    ));
    // One bit of the key changed.
    let mut key = license.clone();
    key.key = SecretString::from(flip(license.key.expose_secret(), 30).unwrap());
    assert!(matches!(
        cleared_reason(&tmp, &issuer, &key, &machine_a(), NOW),
        ClearReason::License(_)
    ));
    // Someone else's email put beside the key.
    let mut email = license.clone();
    email.email = "eve@example.com".into();
    assert_eq!(
        cleared_reason(&tmp, &issuer, &email, &machine_a(), NOW),
        ClearReason::License(LicenseError::EmailMismatch)
    );
    // Another license's certificate put beside the key.
    let mut other = license.clone();
    other.license_id = "lic_other".into();
    other.certificate = issuer.certificate("lic_other", &machine_a(), NOW + 7 * DAY);
    assert_eq!(
        cleared_reason(&tmp, &issuer, &other, &machine_a(), NOW),
        ClearReason::Certificate(LicenseError::WrongMachine)
    );
    // A forged revocation list.
    let mut list = license.clone();
    list.revocations = Some(flip(&issuer.revocations(PRODUCT_ID, NOW, &[]), 20).unwrap());
    assert_eq!(
        cleared_reason(&tmp, &issuer, &list, &machine_a(), NOW),
        ClearReason::BadRevocationList
    );
}
