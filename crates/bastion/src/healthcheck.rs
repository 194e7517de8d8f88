//! `bastion healthcheck --url`: one GET, exit 0 on 2xx, 1 otherwise. No extra HTTP client
//! dependency: hyper over a TCP (or rustls) stream.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use http_body_util::Empty;
use hyper::Request;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::cli::HealthcheckArgs;

pub async fn run(args: &HealthcheckArgs) -> ExitCode {
    match tokio::time::timeout(Duration::from_secs(args.timeout_secs), probe(args)).await {
        Ok(Ok(status)) if (200..300).contains(&status) => {
            println!("healthy ({status})");
            ExitCode::SUCCESS
        }
        Ok(Ok(status)) => {
            println!("unhealthy ({status})");
            ExitCode::FAILURE
        }
        Ok(Err(e)) => {
            println!("unhealthy: {e:#}");
            ExitCode::FAILURE
        }
        Err(_) => {
            println!("unhealthy: no answer within {} s", args.timeout_secs);
            ExitCode::FAILURE
        }
    }
}

async fn probe(args: &HealthcheckArgs) -> anyhow::Result<u16> {
    let uri: hyper::Uri = args.url.parse().context("invalid --url")?;
    let host = uri
        .host()
        .context("--url needs a host")?
        .trim_matches(|c| c == '[' || c == ']')
        .to_owned();
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => bail!("--url must start with http:// or https://"),
    };
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .with_context(|| format!("connecting to {host}:{port}"))?;
    let req = Request::get(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
        .header(
            hyper::header::HOST,
            uri.authority().map(|a| a.as_str()).unwrap_or(&host),
        )
        .body(Empty::<Bytes>::new())?;
    if !https {
        return send(TokioIo::new(tcp), req).await;
    }
    let ca = args
        .ca_cert
        .as_ref()
        .context("https:// needs --ca-cert FILE (the CA or self-signed certificate to trust)")?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in
        CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {}", ca.display()))?
    {
        roots.add(cert?)?;
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::try_from(host.clone())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .context("TLS handshake")?;
    send(TokioIo::new(tls), req).await
}

async fn send<T>(io: TokioIo<T>, req: Request<Empty<Bytes>>) -> anyhow::Result<u16>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(conn);
    Ok(sender.send_request(req).await?.status().as_u16())
}
