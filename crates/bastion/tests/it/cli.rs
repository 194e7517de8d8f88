use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use bastion_core::audit::{AuditEvent, Category, Outcome};

fn bastion(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bastion"));
    cmd.args(args).arg("--data-dir").arg(data_dir);
    // The developer's own configuration must not leak into these runs.
    for (k, _) in std::env::vars() {
        if k.starts_with("BASTION_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn s3_first_start_creates_0700_data_dir_and_0600_master_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let out = bastion(&dir, &["keys", "status"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("generated into"), "{}", text(&out));
    assert!(text(&out).contains("audit-v1-"), "{}", text(&out));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("master.key")), 0o600);
    // The second start reads the same key from the file.
    let again = bastion(&dir, &["keys", "status"], &[]);
    assert!(
        again.status.success() && text(&again).contains("master key: file"),
        "{}",
        text(&again)
    );
}

#[tokio::test]
async fn s3_wrong_master_key_refuses_to_start_and_touches_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    {
        let b = bastion_server::Bastion::open(&bastion_testkit::test_config(&dir))
            .await
            .unwrap();
        for i in 0..5 {
            b.audit
                .record(AuditEvent::new(
                    Category::Admin,
                    format!("setup.{i}"),
                    Outcome::Success,
                ))
                .await
                .unwrap();
        }
        b.store.close().await;
    }
    let key_before = std::fs::read(dir.join("master.key")).unwrap();
    let export = || bastion(&dir, &["audit", "export"], &[]);
    let before = export();
    assert!(before.status.success(), "{}", text(&before));
    assert_eq!(before.stdout.iter().filter(|b| **b == b'\n').count(), 5);

    let wrong = "22".repeat(32);
    for args in [
        &["keys", "status"][..],
        &["audit", "verify"][..],
        &["audit", "checkpoint", "--out", "/dev/null"][..],
    ] {
        let out = bastion(&dir, args, &[("BASTION_MASTER_KEY", &wrong)]);
        assert!(!out.status.success(), "{args:?} started with a wrong key");
        assert!(
            text(&out).contains("master key does not match"),
            "{}",
            text(&out)
        );
    }
    // A missing key must not be replaced by a fresh one: the ring exists already.
    let aside = tmp.path().join("master.key.aside");
    std::fs::rename(dir.join("master.key"), &aside).unwrap();
    let none = bastion(&dir, &["keys", "status"], &[]);
    assert!(!none.status.success(), "{}", text(&none));
    assert!(text(&none).contains("no master key"), "{}", text(&none));
    assert!(
        !dir.join("master.key").exists(),
        "no key file may be generated for an existing ring"
    );
    std::fs::rename(&aside, dir.join("master.key")).unwrap();

    assert_eq!(std::fs::read(dir.join("master.key")).unwrap(), key_before);
    assert_eq!(before.stdout, export().stdout, "the audit trail changed");
    let verify = bastion(&dir, &["audit", "verify"], &[]);
    assert!(verify.status.success(), "{}", text(&verify));
}

#[test]
fn s3_a_group_readable_master_key_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    assert!(bastion(&dir, &["keys", "status"], &[]).status.success());
    std::fs::set_permissions(
        dir.join("master.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let out = bastion(&dir, &["keys", "status"], &[]);
    assert!(!out.status.success());
    assert!(text(&out).contains("chmod 600"), "{}", text(&out));
}

#[test]
fn unknown_config_key_and_unknown_database_scheme_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let cfg = tmp.path().join("bad.toml");
    std::fs::write(&cfg, "[http]\nrequest_timeout = 5\n").unwrap();
    let out = bastion(&dir, &["--config", cfg.to_str().unwrap(), "migrate"], &[]);
    assert!(!out.status.success());
    assert!(text(&out).contains("request_timeout"), "{}", text(&out));

    let out = bastion(&dir, &["migrate"], &[("BASTION_LISTN", "127.0.0.1:1")]);
    assert!(!out.status.success());
    assert!(text(&out).contains("listn"), "{}", text(&out));

    let out = bastion(
        &dir,
        &["--database-url", "mysql://root@localhost/x", "migrate"],
        &[],
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("\"mysql\""), "{}", text(&out));
    assert!(
        !dir.join("bastion.db").exists(),
        "no database may be created for a refused URL"
    );
}

#[test]
fn config_print_default_is_the_documented_file() {
    let tmp = tempfile::tempdir().unwrap();
    let out = bastion(tmp.path(), &["config", "print-default"], &[]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        include_str!("../../../../config/default.toml")
    );
}

#[test]
fn healthcheck_exits_nonzero_when_nothing_listens() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{port}/healthz");
    let out = bastion(
        tmp.path(),
        &["healthcheck", "--url", &url, "--timeout-secs", "2"],
        &[],
    );
    assert!(!out.status.success(), "{}", text(&out));
}

#[test]
fn healthcheck_exits_zero_against_a_serving_bastion() {
    let tmp = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_bastion"))
        .args(["serve", "--listen", &listen, "--data-dir"])
        .arg(tmp.path().join("data"))
        .env_remove("BASTION_MASTER_KEY")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://{listen}/readyz");
    let mut ok = false;
    for _ in 0..100 {
        if bastion(
            tmp.path(),
            &["healthcheck", "--url", &url, "--timeout-secs", "1"],
            &[],
        )
        .status
        .success()
        {
            ok = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // SIGTERM: graceful shutdown must end the process with success.
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(ok, "healthcheck never succeeded");
    assert!(
        status.success(),
        "serve did not exit cleanly on SIGTERM: {status:?}"
    );
}

#[test]
fn t1_tls_self_signed_writes_a_usable_certificate_and_a_0600_key() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("tls");
    let out = bastion(
        tmp.path(),
        &["tls", "self-signed", "--out", out_dir.to_str().unwrap()],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    let cert = std::fs::read_to_string(out_dir.join("cert.pem")).unwrap();
    assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
    let key = out_dir.join("key.pem");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // The server accepts the pair (the TLS handshake tests use the same writer).
    assert!(bastion_server::tls::server_config(&out_dir.join("cert.pem"), &key, "1.3").is_ok());
}

#[test]
fn a5_keys_rotate_adds_a_version_and_refuses_unknown_purposes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let out = bastion(&dir, &["keys", "rotate", "--purpose", "tokens"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("tokens key rotated: version 2"),
        "{}",
        text(&out)
    );
    let status = text(&bastion(&dir, &["keys", "status"], &[]));
    assert!(
        status.contains("tokens-v1-") && status.contains("tokens-v2-"),
        "{status}"
    );
    let bad = bastion(&dir, &["keys", "rotate", "--purpose", "passwords"], &[]);
    assert!(!bad.status.success());
    assert!(text(&bad).contains("unknown purpose"), "{}", text(&bad));
}
