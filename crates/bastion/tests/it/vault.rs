//! The vault through the real binary (SPEC S1–S4): the canary search for secret values, a
//! rewrap killed midway and resumed, and master-key rotation.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};

use crate::accounts::{Server, call, command, count, database_bytes, http, run};

/// Signs a user up, verifies and logs in; creates an org and a project. Returns
/// (access token, secrets path).
pub(crate) async fn owner_with_project(
    srv: &Server,
    t: &mut Vec<String>,
    email: &str,
) -> (String, String) {
    let http = http();
    let url = |p: &str| format!("{}{p}", srv.base);
    let password = "vault-owner-Pass-42";
    let (s, _) = call(
        t,
        http.post(url("/v1/auth/signup"))
            .json(&json!({ "email": email, "password": password })),
    )
    .await;
    assert_eq!(s, 202);
    let (_, verify) = srv.token(email, 1).await;
    let (s, _) = call(
        t,
        http.post(url("/v1/auth/verify-email"))
            .json(&json!({ "token": verify })),
    )
    .await;
    assert_eq!(s, 204);
    let (s, tokens) = call(
        t,
        http.post(url("/v1/auth/login"))
            .json(&json!({ "email": email, "password": password })),
    )
    .await;
    assert_eq!(s, 200);
    let auth = tokens["access_token"].as_str().unwrap().to_owned();
    let (s, org) = call(
        t,
        http.post(url("/v1/orgs"))
            .bearer_auth(&auth)
            .json(&json!({ "name": "Vault Inc" })),
    )
    .await;
    assert_eq!(s, 201);
    let org = org["id"].as_str().unwrap().to_owned();
    let (s, prj) = call(
        t,
        http.post(url(&format!("/v1/orgs/{org}/projects")))
            .bearer_auth(&auth)
            .json(&json!({ "name": "prod" })),
    )
    .await;
    assert_eq!(s, 201);
    let prj = prj["id"].as_str().unwrap();
    (auth, format!("/v1/orgs/{org}/projects/{prj}/secrets"))
}

async fn reveal(srv: &Server, t: &mut Vec<String>, auth: &str, path: &str) -> (u16, Value) {
    call(
        t,
        http()
            .post(format!("{}{path}/reveal", srv.base))
            .bearer_auth(auth)
            .json(&json!({ "reason": "checking the canary" })),
    )
    .await
}

/// `bastion …` with extra environment, returning (success, stdout + stderr).
fn run_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = command(dir);
    cmd.args(args).env("RUST_LOG", "trace");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn s4_s1_s3_no_log_response_mail_or_database_holds_a_secret_value_through_rotations() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let srv = Server::start(&dir).await;
    let mut t = Vec::new();
    let (auth, secrets) = owner_with_project(&srv, &mut t, "vault-canary@example.com").await;
    let http = http();
    let url = |p: &str| format!("{}{p}", srv.base);
    // Unique canaries, one per way a value can enter.
    let created = "CANARY-created-3f9a61c2";
    let overwritten = "CANARY-overwritten-77b0e4d1";
    let replacement = "CANARY-replacement-5e2a90f3";
    let refused: Vec<String> = (0..4).map(|i| format!("CANARY-refused-{i}-c81d")).collect();
    let (s, _) = call(
        &mut t,
        http.post(url(&secrets))
            .bearer_auth(&auth)
            .json(&json!({ "name": "API_TOKEN", "value": created })),
    )
    .await;
    assert_eq!(s, 201);
    let (s, _) = call(
        &mut t,
        http.post(url(&secrets))
            .bearer_auth(&auth)
            .json(&json!({ "name": "OLD_TOKEN", "value": overwritten })),
    )
    .await;
    assert_eq!(s, 201);
    let (s, _) = call(
        &mut t,
        http.put(url(&format!("{secrets}/OLD_TOKEN")))
            .bearer_auth(&auth)
            .json(&json!({ "value": replacement })),
    )
    .await;
    assert_eq!(s, 200);
    // Refused writes: a duplicate, a bad name, an unknown field, a wrong type, oversize.
    for (body, status) in [
        (json!({ "name": "API_TOKEN", "value": refused[0] }), 409),
        (json!({ "name": "bad name", "value": refused[1] }), 422),
        (
            json!({ "name": "X", "value": "v", "extra": refused[2] }),
            422,
        ),
        (json!({ "name": ["X"], "value": refused[3] }), 422),
        (
            json!({ "name": "BIG", "value": format!("{}{}", refused[3], "x".repeat(70_000)) }),
            422,
        ),
    ] {
        let (s, _) = call(
            &mut t,
            http.post(url(&secrets)).bearer_auth(&auth).json(&body),
        )
        .await;
        assert_eq!(s, status, "{body}");
    }
    let (s, list) = call(&mut t, http.get(url(&secrets)).bearer_auth(&auth)).await;
    assert_eq!(s, 200);
    assert_eq!(list["secrets"].as_array().unwrap().len(), 2);
    let (s, shown) = reveal(&srv, &mut t, &auth, &format!("{secrets}/API_TOKEN")).await;
    assert_eq!((s, shown["value"].as_str()), (200, Some(created)));
    let mut log = srv.stop();

    // Through the CLI: a data-key rotation, a rewrap, and a master-key rotation whose new key
    // is one more canary.
    let (ok, out) = run_env(&dir, &["keys", "rotate", "--purpose", "secrets"], &[]);
    assert!(ok, "{out}");
    log.push_str(&out);
    let (ok, out) = run_env(&dir, &["keys", "rewrap"], &[]);
    assert!(ok, "{out}");
    assert!(out.contains("secrets.value"), "{out}");
    log.push_str(&out);
    let new_key = tmp.path().join("new-master.key");
    let (ok, out) = run_env(
        &dir,
        &[
            "keys",
            "generate-master",
            "--out",
            new_key.to_str().unwrap(),
        ],
        &[],
    );
    assert!(ok, "{out}");
    log.push_str(&out);
    let old_hex = std::fs::read_to_string(dir.join("master.key")).unwrap();
    let new_hex = std::fs::read_to_string(&new_key).unwrap();
    let (ok, out) = run_env(
        &dir,
        &[
            "keys",
            "rotate-master",
            "--new-key-file",
            new_key.to_str().unwrap(),
        ],
        &[],
    );
    assert!(ok, "{out}");
    log.push_str(&out);
    assert_eq!(
        std::fs::read_to_string(dir.join("master.key")).unwrap(),
        new_hex,
        "the data-directory key file holds the new key"
    );
    // The old master key opens nothing now; the new one opens everything.
    let (ok, out) = run_env(
        &dir,
        &["keys", "status"],
        &[("BASTION_MASTER_KEY", old_hex.trim())],
    );
    assert!(!ok, "the old master key still opened the key ring: {out}");
    assert!(out.contains("does not match"), "{out}");
    log.push_str(&out);
    let (ok, out) = run_env(&dir, &["keys", "status"], &[]);
    assert!(ok, "{out}");
    log.push_str(&out);
    let srv = Server::start(&dir).await;
    let (s, shown) = reveal(&srv, &mut t, &auth, &format!("{secrets}/API_TOKEN")).await;
    assert_eq!((s, shown["value"].as_str()), (200, Some(created)));
    let (s, shown) = reveal(&srv, &mut t, &auth, &format!("{secrets}/OLD_TOKEN")).await;
    assert_eq!((s, shown["value"].as_str()), (200, Some(replacement)));
    let mails = srv.mails();
    log.push_str(&srv.stop());
    let db = database_bytes(&dir);
    assert!(
        log.contains("TRACE") || log.contains("trace"),
        "the log ran at trace level"
    );

    // A value appears only in the reveal responses that were asked for it.
    for (value, reveals) in [(created, 2), (replacement, 1)] {
        assert_eq!(count(log.as_bytes(), value), 0, "{value} in the log");
        assert_eq!(count(&db, value), 0, "{value} in the database");
        assert!(
            mails.iter().all(|(_, m)| !m.contains(value)),
            "{value} in a mail"
        );
        assert_eq!(
            t.iter().filter(|r| r.contains(value)).count(),
            reveals,
            "{value} in a response other than its reveals"
        );
    }
    for value in std::iter::once(overwritten).chain(refused.iter().map(String::as_str)) {
        assert_eq!(count(log.as_bytes(), value), 0, "{value} in the log");
        assert_eq!(count(&db, value), 0, "{value} in the database");
        assert!(
            mails.iter().all(|(_, m)| !m.contains(value)),
            "{value} in a mail"
        );
        assert!(
            t.iter().all(|r| !r.contains(value)),
            "{value} in a response"
        );
    }
    for key in [old_hex.trim(), new_hex.trim()] {
        assert_eq!(count(log.as_bytes(), key), 0, "a master key in the log");
        assert_eq!(count(&db, key), 0, "a master key in the database");
    }
}

/// How many secrets the newest `secrets` key seals, read straight from the database file.
async fn rows_under(dir: &Path, key: &str) -> i64 {
    let url = format!("sqlite://{}?mode=ro", dir.join("bastion.db").display());
    let mut c = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    sqlx::query_scalar("SELECT count(*) FROM secrets WHERE value_key = ?1")
        .bind(key)
        .fetch_one(&mut c)
        .await
        .unwrap()
}

#[tokio::test]
async fn s3_a_rewrap_killed_midway_resumes_and_every_value_stays_readable() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let srv = Server::start(&dir).await;
    let mut t = Vec::new();
    let (auth, secrets) = owner_with_project(&srv, &mut t, "vault-rewrap@example.com").await;
    let n = 200;
    for i in 0..n {
        let (s, _) = call(
            &mut t,
            http()
                .post(format!("{}{secrets}", srv.base))
                .bearer_auth(&auth)
                .json(&json!({ "name": format!("S_{i}"), "value": format!("value-{i}") })),
        )
        .await;
        assert_eq!(s, 201);
    }
    srv.stop();
    run(&dir, &["keys", "rotate", "--purpose", "secrets"]);

    // Kill -9 the rewrap once it has done part of the work.
    let mut child = command(&dir)
        .args([
            "keys",
            "rewrap",
            "--purpose",
            "secrets",
            "--batch",
            "2",
            "--pause-ms",
            "20",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut done = 0;
    for _ in 0..1000 {
        done = rows_under(&dir, "secrets-v2").await;
        if done >= 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let done = rows_under(&dir, "secrets-v2").await.max(done);
    assert!(
        (20..n).contains(&done),
        "the rewrap was not interrupted midway: {done} of {n}"
    );
    assert_eq!(
        rows_under(&dir, "secrets-v1").await + rows_under(&dir, "secrets-v2").await,
        n,
        "every row is under one key or the other"
    );
    let status = run(&dir, &["keys", "status"]);
    assert!(status.contains("secrets"), "{status}");
    let out = command(&dir)
        .args([
            "keys",
            "retire",
            "--purpose",
            "secrets",
            "--below-version",
            "2",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "retired v1 while rows still use it");
    assert!(String::from_utf8_lossy(&out.stderr).contains("rewrap"));

    // Resumed: it finishes the rest, and only the rest.
    let out = run(&dir, &["keys", "rewrap", "--purpose", "secrets"]);
    let rest = (n - done).to_string();
    assert!(
        out.contains(&format!(" {rest} rewrapped")),
        "expected {rest} rewrapped: {out}"
    );
    assert_eq!(rows_under(&dir, "secrets-v2").await, n);
    let again = run(&dir, &["keys", "rewrap", "--purpose", "secrets"]);
    assert!(again.contains(" 0 rewrapped"), "{again}");
    run(
        &dir,
        &[
            "keys",
            "retire",
            "--purpose",
            "secrets",
            "--below-version",
            "2",
        ],
    );

    // Every value still reads back, under v2 alone.
    let srv = Server::start(&dir).await;
    for i in 0..n {
        let (s, shown) = reveal(&srv, &mut t, &auth, &format!("{secrets}/S_{i}")).await;
        assert_eq!(
            (s, shown["value"].as_str()),
            (200, Some(format!("value-{i}").as_str()))
        );
    }
    srv.stop();
}
