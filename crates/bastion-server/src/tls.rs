//! TLS with rustls on aws-lc-rs (SPEC T1): PEM certificate and key, TLS 1.2 minimum or
//! TLS 1.3 only, ALPN for HTTP/2 and HTTP/1.1; and a self-signed certificate for development.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::startup::StartupError;

pub fn server_config(
    cert: &Path,
    key: &Path,
    min_version: &str,
) -> Result<Arc<ServerConfig>, StartupError> {
    let tls_err = |m: String| StartupError::Tls(m);
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| tls_err(format!("{}: {e}", cert.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err(format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(tls_err(format!("{}: no certificate found", cert.display())));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| tls_err(format!("{}: {e}", key.display())))?;
    let versions: &[&rustls::SupportedProtocolVersion] = match min_version {
        "1.3" => &[&rustls::version::TLS13],
        _ => &[&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let mut cfg = ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(versions)
    .map_err(|e| tls_err(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| tls_err(e.to_string()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Writes `cert.pem` and `key.pem` (0600) for `names` into `dir`. Development only.
pub fn write_self_signed(dir: &Path, names: Vec<String>) -> Result<(), StartupError> {
    let err = |e: String| StartupError::Tls(e);
    let ck = rcgen::generate_simple_self_signed(names).map_err(|e| err(e.to_string()))?;
    std::fs::create_dir_all(dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
    std::fs::write(dir.join("cert.pem"), ck.cert.pem()).map_err(|e| err(e.to_string()))?;
    // A new 0600 file renamed over the old one: opening an existing key.pem would keep its
    // mode, however readable that is.
    let tmp = dir.join(format!(".key.pem.{}.tmp", std::process::id()));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(ck.key_pair.serialize_pem().as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join("key.pem"))
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(format!("{}: {e}", dir.join("key.pem").display())));
    }
    Ok(())
}
