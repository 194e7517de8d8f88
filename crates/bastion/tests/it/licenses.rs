//! Licensing through the real binary (SPEC L1, L3, L5, L7): the operator's CLI, the offline
//! verifier that needs no server and no database, and the canary search showing that neither
//! a license key nor a raw machine identifier reaches a log line or the database.

use std::path::Path;

use serde_json::{Value, json};

use crate::accounts::{Server, call, command, count, database_bytes, http};
use crate::vault::owner_with_project;

/// `bastion …` at trace level: (success, stdout, stderr).
fn cli(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = command(dir)
        .args(args)
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn l3_l1_keys_and_machine_identifiers_never_reach_logs_or_the_database_and_verify_runs_offline()
 {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let srv = Server::start(&dir).await;
    let mut t = Vec::new();
    let (auth, secrets) = owner_with_project(&srv, &mut t, "licenses@example.com").await;
    let org = secrets.split('/').nth(3).unwrap().to_owned();
    let http = http();
    let url = |p: &str| format!("{}{p}", srv.base);
    let (s, product) = call(
        &mut t,
        http.post(url(&format!("/v1/orgs/{org}/products")))
            .bearer_auth(&auth)
            .json(&json!({ "name": "Desk" })),
    )
    .await;
    assert_eq!(s, 201);
    let product = product["id"].as_str().unwrap().to_owned();
    let (s, policy) = call(
        &mut t,
        http.post(url(&format!("/v1/orgs/{org}/products/{product}/policies")))
            .bearer_auth(&auth)
            .json(&json!({ "name": "Pro", "max_machines": 2 })),
    )
    .await;
    assert_eq!(s, 201);
    let policy = policy["id"].as_str().unwrap().to_owned();
    let (s, issued) = call(
        &mut t,
        http.post(url(&format!("/v1/orgs/{org}/licenses")))
            .bearer_auth(&auth)
            .json(&json!({ "policy_id": policy, "email": "buyer@example.com" })),
    )
    .await;
    assert_eq!(s, 201);
    let key = issued["key"].as_str().unwrap().to_owned();
    let machine = "CANARY-MACHINE-9c2e4b71";
    let activate = |k: &str, email: &str| {
        http.post(url("/v1/licenses/activate")).json(&json!({
            "key": k, "email": email,
            "machine": { "components": [machine, "linux"], "name": "desk" },
        }))
    };
    let (s, cert) = call(&mut t, activate(&key, "buyer@example.com")).await;
    assert_eq!(s, 200, "{cert}");
    // Refused attempts carry the key and the identifier too; their errors must not echo them.
    let (s, err) = call(&mut t, activate(&key, "thief@example.com")).await;
    assert_eq!((s, err["code"].as_str()), (403, Some("license_invalid")));
    let mut log = srv.stop();

    // The operator's CLI: issue (the key alone on stdout), public keys, show, freeze, revoke.
    let (ok, key2, err) = cli(
        &dir,
        &[
            "license",
            "issue",
            "--org",
            &org,
            "--policy",
            &policy,
            "--email",
            "second@example.com",
        ],
    );
    assert!(ok, "{err}");
    let key2 = key2.trim().to_owned();
    assert!(key2.starts_with("BSTL1."), "{key2}");
    log.push_str(&err);
    let (ok, keys_json, err) = cli(&dir, &["license", "public-keys"]);
    assert!(ok, "{err}");
    log.push_str(&err);
    let lic = issued["license"]["id"].as_str().unwrap();
    for (args, expect) in [
        (vec!["license", "freeze", lic], "frozen"),
        (vec!["license", "show", lic], "frozen"),
        (vec!["license", "unfreeze", lic], "unfrozen"),
        (vec!["license", "revoke", lic], "revoked"),
        (vec!["license", "show", lic], "revoked"),
        (vec!["license", "list", "--org", &org], "second@example.com"),
    ] {
        let (ok, out, err) = cli(&dir, &args);
        assert!(ok && out.contains(expect), "{args:?}: {out}{err}");
        log.push_str(&err);
        log.push_str(&out);
    }
    let db = database_bytes(&dir);

    // Offline: no server, no database, not even a data directory.
    let keys_file = tmp.path().join("license-keys.json");
    std::fs::write(&keys_file, &keys_json).unwrap();
    let nowhere = tmp.path().join("no-such-dir");
    let verify = |k: &str, email: &str| {
        cli(
            &nowhere,
            &[
                "license",
                "verify",
                "--public-key",
                keys_file.to_str().unwrap(),
                "--email",
                email,
                k,
            ],
        )
    };
    let (ok, out, err) = verify(&key2, "second@example.com");
    assert!(ok, "{out}{err}");
    assert!(out.contains("valid"), "{out}");
    let (ok, _, err) = verify(&key2, "buyer@example.com");
    assert!(!ok && err.contains("another email"), "{err}");
    let mut flipped = key2.clone().into_bytes();
    let i = flipped.len() - 5;
    flipped[i] = if flipped[i] == b'A' { b'B' } else { b'A' };
    let (ok, _, err) = verify(std::str::from_utf8(&flipped).unwrap(), "second@example.com");
    assert!(!ok && err.contains("invalid"), "{err}");
    assert!(!nowhere.exists(), "verify touched no data directory");

    // The search: trace logs of every process, the database files, and every response.
    assert!(
        log.contains("TRACE") || log.contains("trace"),
        "the log ran at trace level"
    );
    for needle in [key.as_str(), key2.as_str(), key.rsplit('.').next().unwrap()] {
        assert_eq!(count(log.as_bytes(), needle), 0, "a license key in the log");
        assert_eq!(count(&db, needle), 0, "a license key in the database");
    }
    for needle in [machine.to_owned(), machine.to_lowercase()] {
        assert_eq!(count(log.as_bytes(), &needle), 0, "{needle} in the log");
        assert_eq!(count(&db, &needle), 0, "{needle} in the database");
        assert!(
            t.iter().all(|r| !r.contains(&needle)),
            "{needle} in a response"
        );
    }
    // The key appears in exactly one response: the one that issued it.
    assert_eq!(t.iter().filter(|r| r.contains(&key)).count(), 1);
    let _: Value = serde_json::from_str(&keys_json).unwrap();
}
