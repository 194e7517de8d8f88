//! Accounts through the real binary: nothing secret leaks into logs, responses, mail or the
//! database (A1, A3, A7); the administrator's one-time link (A7); cleanup (A6).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

pub(crate) struct Server {
    child: Child,
    pub(crate) base: String,
    dir: PathBuf,
    log: PathBuf,
}

pub(crate) fn http() -> reqwest::Client {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    reqwest::Client::new()
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) fn command(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bastion"));
    for (k, _) in std::env::vars() {
        if k.starts_with("BASTION_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.arg("--data-dir")
        .arg(dir)
        .env("BASTION_AUTH__ARGON2_MEMORY_KIB", "1024")
        .env("BASTION_AUTH__ARGON2_ITERATIONS", "1");
    cmd
}

impl Server {
    /// `bastion serve` at TRACE level, its whole output kept in a file.
    pub(crate) async fn start(dir: &Path) -> Server {
        let port = free_port();
        let log = dir.with_extension("log");
        let out = std::fs::File::create(&log).unwrap();
        let child = command(dir)
            // Tests send hundreds of requests from 127.0.0.1: only what they test may refuse.
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--rate-limit-per-ip", "0"])
            .env("RUST_LOG", "trace")
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap();
        // Owned at once, so a failed start still stops (and reaps) the child.
        let srv = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            dir: dir.to_owned(),
            log,
        };
        for _ in 0..600 {
            if let Ok(r) = http().get(format!("{}/healthz", srv.base)).send().await
                && r.status() == 200
            {
                return srv;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "bastion serve did not start: {}",
            std::fs::read_to_string(&srv.log).unwrap()
        );
    }

    /// SIGTERM (a graceful stop), then the whole log.
    pub(crate) fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        std::fs::read_to_string(&self.log).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // After `stop` this finds the process already reaped; after a panic it ends it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Every file in the outbox, with its contents.
    pub(crate) fn mails(&self) -> Vec<(PathBuf, String)> {
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir(self.dir.join("outbox")) {
            for e in rd.flatten() {
                out.push((e.path(), std::fs::read_to_string(e.path()).unwrap()));
            }
        }
        out
    }

    /// Waits for the `n`th mail to `to` and returns the link token in the newest one.
    pub(crate) async fn token(&self, to: &str, n: usize) -> (PathBuf, String) {
        for _ in 0..500 {
            let mut mine: Vec<_> = self
                .mails()
                .into_iter()
                .filter(|(_, m)| m.contains(&format!("To: {to}")))
                .collect();
            if mine.len() >= n {
                mine.sort_by_key(|(p, _)| std::fs::metadata(p).unwrap().modified().unwrap());
                let (path, raw) = mine.pop().unwrap();
                let decoded = raw.replace("=\r\n", "").replace("=3D", "=");
                let at = decoded.find("#token=").unwrap() + "#token=".len();
                let token: String = decoded[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
                    .collect();
                return (path, token);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no mail {n} to {to}");
    }
}

/// What a client saw: status, headers and body of one response.
pub(crate) async fn call(
    transcript: &mut Vec<String>,
    req: reqwest::RequestBuilder,
) -> (u16, Value) {
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let headers = format!("{:?}", res.headers());
    let body = res.text().await.unwrap();
    transcript.push(format!("{status} {headers} {body}"));
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

pub(crate) fn count(haystack: &[u8], needle: &str) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle.as_bytes())
        .count()
}

/// The database files as raw bytes (a "plain dump": no decoding, nothing hidden).
pub(crate) fn database_bytes(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("bastion.db") {
            all.extend(std::fs::read(e.path()).unwrap());
        }
    }
    all
}

#[tokio::test]
async fn a1_a3_a7_u1_no_log_response_mail_or_database_holds_a_password_or_token_and_each_step_is_audited()
 {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let srv = Server::start(&dir).await;
    let http = http();
    let url = |p: &str| format!("{}{p}", srv.base);
    let email = "leak-check@example.com";
    let passwords = [
        "first-Canary-pass-7Qz",
        "second-Canary-pass-8Wx",
        "third-Canary-pass-9Ev",
    ];
    let mut t = Vec::new();

    let (s, _) = call(
        &mut t,
        http.post(url("/v1/auth/signup"))
            .json(&json!({ "email": email, "password": passwords[0] })),
    )
    .await;
    assert_eq!(s, 202);
    let (verify_mail, verify) = srv.token(email, 1).await;
    let (s, _) = call(
        &mut t,
        http.post(url("/v1/auth/verify-email"))
            .json(&json!({ "token": verify })),
    )
    .await;
    assert_eq!(s, 204);
    let (s, first) = call(
        &mut t,
        http.post(url("/v1/auth/login"))
            .json(&json!({ "email": email, "password": passwords[0] })),
    )
    .await;
    assert_eq!(s, 200);
    let a1 = first["access_token"].as_str().unwrap().to_owned();
    let r1 = first["refresh_token"].as_str().unwrap().to_owned();
    let (s, _) = call(&mut t, http.get(url("/v1/me")).bearer_auth(&a1)).await;
    assert_eq!(s, 200);
    let (s, second) = call(
        &mut t,
        http.post(url("/v1/auth/refresh"))
            .json(&json!({ "refresh_token": r1 })),
    )
    .await;
    assert_eq!(s, 200);
    let a2 = second["access_token"].as_str().unwrap().to_owned();
    let r2 = second["refresh_token"].as_str().unwrap().to_owned();
    let (s, _) = call(
        &mut t,
        http.post(url("/v1/auth/password/forgot"))
            .json(&json!({ "email": email })),
    )
    .await;
    assert_eq!(s, 202);
    let (reset_mail, reset) = srv.token(email, 2).await;
    let (s, _) = call(
        &mut t,
        http.post(url("/v1/auth/password/reset"))
            .json(&json!({ "token": reset, "new_password": passwords[1] })),
    )
    .await;
    assert_eq!(s, 204);
    let (s, third) = call(
        &mut t,
        http.post(url("/v1/auth/login"))
            .json(&json!({ "email": email, "password": passwords[1] })),
    )
    .await;
    assert_eq!(s, 200);
    let a3 = third["access_token"].as_str().unwrap().to_owned();
    let r3 = third["refresh_token"].as_str().unwrap().to_owned();
    // R1/R6: an org, a service key used once, an invitation: the same rules hold for their
    // secrets.
    let (s, org) = call(
        &mut t,
        http.post(url("/v1/orgs"))
            .bearer_auth(&a3)
            .json(&json!({ "name": "Leak Check Inc" })),
    )
    .await;
    assert_eq!(s, 201);
    let org = org["id"].as_str().unwrap().to_owned();
    let (s, key) = call(
        &mut t,
        http.post(url(&format!("/v1/orgs/{org}/api-keys")))
            .bearer_auth(&a3)
            .json(&json!({ "name": "backend", "kind": "service" })),
    )
    .await;
    assert_eq!(s, 201);
    let api_key = key["secret"].as_str().unwrap().to_owned();
    let (s, _) = call(
        &mut t,
        http.get(url(&format!("/v1/orgs/{org}")))
            .bearer_auth(&api_key),
    )
    .await;
    assert_eq!(s, 200);
    let invitee = "invitee@example.com";
    let (s, _) = call(
        &mut t,
        http.post(url(&format!("/v1/orgs/{org}/invitations")))
            .bearer_auth(&api_key)
            .json(&json!({ "email": invitee, "level": "viewer" })),
    )
    .await;
    assert_eq!(s, 201);
    let (invite_mail, invite) = srv.token(invitee, 1).await;
    let (s, _) = call(
        &mut t,
        http.post(url("/v1/me/password"))
            .bearer_auth(&a3)
            .json(&json!({ "current_password": passwords[1], "new_password": passwords[2] })),
    )
    .await;
    assert_eq!(s, 204);
    let (s, _) = call(&mut t, http.post(url("/v1/auth/logout")).bearer_auth(&a3)).await;
    assert_eq!(s, 204);
    // Failures echo nothing either: a wrong password, a used link, a replayed refresh token.
    let (s, _) = call(
        &mut t,
        http.post(url("/v1/auth/login"))
            .json(&json!({ "email": email, "password": passwords[0] })),
    )
    .await;
    assert_eq!(s, 401);
    let (s, _) = call(
        &mut t,
        http.post(url("/v1/auth/password/reset"))
            .json(&json!({ "token": reset, "new_password": passwords[0] })),
    )
    .await;
    assert_eq!(s, 400);
    let (s, _) = call(
        &mut t,
        http.post(url("/v1/auth/refresh"))
            .json(&json!({ "refresh_token": r1 })),
    )
    .await;
    assert_eq!(s, 401);

    let mails = srv.mails();
    let log = srv.stop();
    let db = database_bytes(&dir);

    // U1: each step left its authentication event in the audit trail.
    let export = run(&dir, &["audit", "export"]);
    for action in [
        "account.created",
        "email.verified",
        "login.success",
        "token.refreshed",
        "password.reset",
        "session.revoked",
        "password.changed",
        "logout",
        "login.failure",
    ] {
        assert!(
            export
                .lines()
                .any(|l| l.contains(&format!("\"action\":\"{action}\""))
                    && l.contains("\"category\":\"authentication\"")),
            "no {action} event"
        );
    }
    assert!(
        log.contains("TRACE") || log.contains("trace"),
        "the log ran at trace level"
    );
    for action in ["org.created", "api_key.created", "member.invited"] {
        assert!(
            export
                .lines()
                .any(|l| l.contains(&format!("\"action\":\"{action}\""))
                    && l.contains("\"category\":\"admin\"")),
            "no {action} event"
        );
    }
    // The API key: shown in the one response that created it, nowhere else.
    assert_eq!(count(log.as_bytes(), &api_key), 0, "API key in the log");
    assert_eq!(t.iter().filter(|r| r.contains(api_key.as_str())).count(), 1);
    assert!(mails.iter().all(|(_, m)| !m.contains(api_key.as_str())));
    assert_eq!(count(&db, &api_key), 0, "API key in the database");

    for p in passwords {
        assert_eq!(count(log.as_bytes(), p), 0, "password in the log");
        assert!(t.iter().all(|r| !r.contains(p)), "password in a response");
        assert!(
            mails.iter().all(|(_, m)| !m.contains(p)),
            "password in a mail"
        );
        assert_eq!(count(&db, p), 0, "password in the database");
    }
    // A link token lives only in its own mail.
    for (token, own) in [
        (&verify, &verify_mail),
        (&reset, &reset_mail),
        (&invite, &invite_mail),
    ] {
        assert_eq!(count(log.as_bytes(), token), 0, "link token in the log");
        assert!(
            t.iter().all(|r| !r.contains(token.as_str())),
            "link token in a response"
        );
        assert_eq!(count(&db, token), 0, "link token in the database");
        for (path, m) in &mails {
            let decoded = m.replace("=\r\n", "").replace("=3D", "=");
            assert_eq!(
                decoded.contains(token.as_str()),
                path == own,
                "link token in another mail"
            );
        }
    }
    // Session tokens appear in exactly one response: the one that issued them.
    for token in [&a1, &r1, &a2, &r2, &a3, &r3] {
        assert_eq!(count(log.as_bytes(), token), 0, "session token in the log");
        assert_eq!(t.iter().filter(|r| r.contains(token.as_str())).count(), 1);
        assert!(mails.iter().all(|(_, m)| !m.contains(token.as_str())));
        assert_eq!(count(&db, token), 0, "session token in the database");
    }
}

pub(crate) fn run(dir: &Path, args: &[&str]) -> String {
    let out = command(dir).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{args:?}: {text}");
    text
}

#[tokio::test]
async fn a7_admin_create_user_prints_a_one_time_link_that_sets_the_password() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let out = run(
        &dir,
        &[
            "admin",
            "create-user",
            "--email",
            "Root@Example.com",
            "--super-admin",
        ],
    );
    assert!(
        out.contains("root@example.com") && out.contains("super admin"),
        "{out}"
    );
    let at = out.find("#token=").unwrap() + "#token=".len();
    let token: String = out[at..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    assert!(token.starts_with("bml_"));
    // The same address cannot be created twice.
    let again = command(&dir)
        .args(["admin", "create-user", "--email", "root@example.com"])
        .output()
        .unwrap();
    assert!(!again.status.success());

    let srv = Server::start(&dir).await;
    let http = http();
    let login = |pw: &'static str| {
        http.post(format!("{}/v1/auth/login", srv.base))
            .json(&json!({ "email": "root@example.com", "password": pw }))
            .send()
    };
    assert_eq!(login("no password yet").await.unwrap().status(), 401);
    let reset = |pw: &'static str| {
        http.post(format!("{}/v1/auth/password/reset", srv.base))
            .json(&json!({ "token": token, "new_password": pw }))
            .send()
    };
    assert_eq!(reset("the root passphrase").await.unwrap().status(), 204);
    assert_eq!(
        reset("a second passphrase").await.unwrap().status(),
        400,
        "once"
    );
    assert_eq!(login("the root passphrase").await.unwrap().status(), 200);
    srv.stop();
}

#[tokio::test]
async fn a6_cleanup_dry_run_counts_what_cleanup_then_removes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let srv = Server::start(&dir).await;
    let http = http();
    let url = |p: &str| format!("{}{p}", srv.base);
    let email = "tidy@example.com";
    let password = "correct horse battery staple";
    http.post(url("/v1/auth/signup"))
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await
        .unwrap();
    let (_, token) = srv.token(email, 1).await;
    http.post(url("/v1/auth/verify-email"))
        .json(&json!({ "token": token }))
        .send()
        .await
        .unwrap();
    // Two sessions: one logged out (revoked), one live.
    let mut access = Vec::new();
    for _ in 0..2 {
        let tokens: Value = http
            .post(url("/v1/auth/login"))
            .json(&json!({ "email": email, "password": password }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        access.push(tokens["access_token"].as_str().unwrap().to_owned());
    }
    let res = http
        .post(url("/v1/auth/logout"))
        .bearer_auth(&access[0])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    srv.stop();

    let line = |out: &str, kind: &str| -> u64 {
        out.lines()
            .find(|l| l.trim_end().ends_with(kind))
            .and_then(|l| l.split_whitespace().rev().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {kind} line in {out}"))
    };
    let preview = run(&dir, &["cleanup", "--dry-run"]);
    assert!(preview.contains("would remove"), "{preview}");
    assert_eq!(line(&preview, "sessions"), 1, "{preview}");
    assert_eq!(
        line(&preview, "magic_links"),
        1,
        "the used verification link"
    );
    assert_eq!(
        run(&dir, &["cleanup", "--dry-run"]),
        preview,
        "a dry run changes nothing"
    );
    let done = run(&dir, &["cleanup"]);
    assert_eq!(line(&done, "sessions"), 1, "{done}");
    assert_eq!(line(&done, "magic_links"), 1, "{done}");
    let after = run(&dir, &["cleanup", "--dry-run"]);
    assert_eq!(line(&after, "sessions"), 0, "{after}");
    assert_eq!(line(&after, "magic_links"), 0, "{after}");

    // The live session still works.
    let srv = Server::start(&dir).await;
    let res = http
        .get(format!("{}/v1/me", srv.base))
        .bearer_auth(&access[1])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    srv.stop();
}
