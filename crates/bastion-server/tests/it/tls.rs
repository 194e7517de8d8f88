//! SPEC T1: Bastion serves TLS itself; TLS 1.3-only mode refuses TLS 1.2, the default accepts it.
//! Real handshakes with a rustls client against a self-signed certificate.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bastion_testkit::app::{Spawn, TestApp, spawn_app};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ProtocolVersion, SupportedProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;

use crate::{CSP, HSTS, raw_header};

/// A self-signed certificate for `localhost` and `127.0.0.1`; keep the directory alive.
pub fn self_signed() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    bastion_server::tls::write_self_signed(
        dir.path(),
        vec!["localhost".into(), "127.0.0.1".into()],
    )
    .unwrap();
    dir
}

/// Points the configuration at the certificate in `dir`.
pub fn use_tls(cfg: &mut bastion_server::Config, dir: &Path, min_version: &str) {
    cfg.tls.cert = dir.join("cert.pem").display().to_string();
    cfg.tls.key = dir.join("key.pem").display().to_string();
    cfg.tls.min_version = min_version.to_owned();
}

/// A rustls client that trusts only the test certificate and speaks only `versions`.
pub fn connector(cert_dir: &Path, versions: &[&'static SupportedProtocolVersion]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(cert_dir.join("cert.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsConnector::from(Arc::new(cfg))
}

/// Handshakes with `addr` as `localhost`, sends GET `path` over HTTP/1.1 and returns the
/// negotiated version and the raw response. Err when the handshake fails.
pub async fn https_get(
    addr: SocketAddr,
    tls: &TlsConnector,
    path: &str,
) -> std::io::Result<(ProtocolVersion, String)> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    let mut stream = tls.connect(name, tcp).await?;
    let version = stream.get_ref().1.protocol_version().unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut buf = Vec::new();
    // What arrived is the response, whether or not the peer sent close_notify.
    let _ = stream.read_to_end(&mut buf).await;
    Ok((version, String::from_utf8_lossy(&buf).into_owned()))
}

pub async fn spawn_tls(cert_dir: &Path, min_version: &str) -> TestApp {
    spawn_app(Spawn::default(), |cfg| use_tls(cfg, cert_dir, min_version))
        .await
        .unwrap()
}

fn assert_ok_and_hardened(response: &str) {
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(
        raw_header(response, "strict-transport-security"),
        Some(HSTS)
    );
    assert_eq!(raw_header(response, "content-security-policy"), Some(CSP));
    assert!(response.contains("\"status\":\"ok\""), "{response}");
}

#[tokio::test]
async fn t1_tls13_only_mode_refuses_tls12_and_serves_tls13() {
    let certs = self_signed();
    let app = spawn_tls(certs.path(), "1.3").await;
    assert!(app.base.starts_with("https://"));

    // spawn_app does not wait for TLS listeners; this handshake completes once it serves.
    let tls13 = connector(certs.path(), &[&rustls::version::TLS13]);
    let (version, response) = https_get(app.addr, &tls13, "/healthz").await.unwrap();
    assert_eq!(version, ProtocolVersion::TLSv1_3);
    assert_ok_and_hardened(&response);

    let tls12 = connector(certs.path(), &[&rustls::version::TLS12]);
    let refused = https_get(app.addr, &tls12, "/healthz")
        .await
        .expect_err("a TLS 1.2-only client must fail the handshake");
    // The server itself refused the version (not a certificate or connection problem).
    let cause = refused
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    assert_eq!(
        cause,
        Some(&rustls::Error::AlertReceived(
            rustls::AlertDescription::ProtocolVersion
        )),
        "{refused}"
    );
}

#[tokio::test]
async fn t1_tls12_minimum_accepts_tls12_and_tls13() {
    let certs = self_signed();
    let app = spawn_tls(certs.path(), "1.2").await;

    let tls12 = connector(certs.path(), &[&rustls::version::TLS12]);
    let (version, response) = https_get(app.addr, &tls12, "/healthz").await.unwrap();
    assert_eq!(version, ProtocolVersion::TLSv1_2);
    assert_ok_and_hardened(&response);

    let any = connector(certs.path(), rustls::ALL_VERSIONS);
    let (version, response) = https_get(app.addr, &any, "/healthz").await.unwrap();
    assert_eq!(version, ProtocolVersion::TLSv1_3, "TLS 1.3 is preferred");
    assert_ok_and_hardened(&response);
}

#[tokio::test]
async fn t1_untrusted_certificate_is_refused_by_a_verifying_client() {
    // Sanity check of the harness: the client really verifies the server's certificate.
    let served = self_signed();
    let other = self_signed();
    let app = spawn_tls(served.path(), "1.3").await;
    let good = connector(served.path(), &[&rustls::version::TLS13]);
    https_get(app.addr, &good, "/healthz").await.unwrap();
    let wrong = connector(other.path(), &[&rustls::version::TLS13]);
    let refused = https_get(app.addr, &wrong, "/healthz")
        .await
        .expect_err("an unknown issuer must be refused");
    let cause = refused
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    assert!(
        matches!(cause, Some(rustls::Error::InvalidCertificate(_))),
        "{refused}"
    );
}

/// `bastion tls self-signed` over an existing, world-readable key.pem: the new key is 0600 (a new
/// file renamed over the old one), and no temporary file is left behind.
#[test]
fn t1_a_self_signed_key_written_over_a_world_readable_one_is_0600() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    std::fs::write(&key, "old").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    bastion_server::tls::write_self_signed(dir.path(), vec!["localhost".into()]).unwrap();
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{mode:o}");
    assert!(
        std::fs::read_to_string(&key)
            .unwrap()
            .contains("PRIVATE KEY")
    );
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(names, ["cert.pem", "key.pem"]);
}
