//! Mail transports for the outbox dispatcher (lettre): SMTP with STARTTLS, implicit TLS or
//! (local relays only) plain; and the file outbox, `<data-dir>/outbox/*.eml`, the zero-config
//! default for development.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bastion_core::mail::{MailTransport, Message, TransportError};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};

use crate::config::Config;
use crate::startup::StartupError;

fn build(from: &Mailbox, m: &Message) -> Result<lettre::Message, TransportError> {
    let to: Mailbox = m.to.parse().map_err(|_| TransportError {
        permanent: true,
        reason: "recipient address is not valid".into(),
    })?;
    lettre::Message::builder()
        .from(from.clone())
        .to(to)
        .subject(m.subject.clone())
        .multipart(MultiPart::alternative_plain_html(
            m.text.clone(),
            m.html.clone(),
        ))
        .map_err(|e| TransportError {
            permanent: true,
            reason: format!("message could not be built: {e}"),
        })
}

/// Whether a transport's error means "do not retry".
trait Permanence {
    fn permanent(&self) -> bool;
}

impl Permanence for lettre::transport::smtp::Error {
    fn permanent(&self) -> bool {
        self.is_permanent()
    }
}

impl Permanence for lettre::transport::file::Error {
    // A full or unwritable disk may recover.
    fn permanent(&self) -> bool {
        false
    }
}

/// A lettre transport as a [`MailTransport`].
struct Via<T> {
    name: &'static str,
    from: Mailbox,
    inner: T,
}

#[async_trait::async_trait]
impl<T> MailTransport for Via<T>
where
    T: AsyncTransport + Send + Sync,
    T::Error: Permanence + std::fmt::Display + Send,
{
    fn name(&self) -> &'static str {
        self.name
    }

    async fn send(&self, message: &Message) -> Result<(), TransportError> {
        let msg = build(&self.from, message)?;
        self.inner
            .send(msg)
            .await
            .map(|_| ())
            .map_err(|e| TransportError {
                permanent: e.permanent(),
                reason: format!("{}: {e}", self.name),
            })
    }
}

fn smtp_password(cfg: &Config) -> Result<Option<SecretString>, StartupError> {
    let file = &cfg.email.smtp.password_file;
    if !file.is_empty() {
        let text = std::fs::read_to_string(file)
            .map_err(|e| StartupError::Config(format!("email.smtp.password_file {file}: {e}")))?;
        return Ok(Some(SecretString::from(text.trim_end().to_owned())));
    }
    Ok(std::env::var("BASTION_SMTP_PASSWORD")
        .ok()
        .map(SecretString::from))
}

/// The transport `[email]` asks for.
pub fn transport(cfg: &Config) -> Result<Arc<dyn MailTransport>, StartupError> {
    let e = &cfg.email;
    let from: Mailbox = e
        .from
        .parse()
        .map_err(|_| StartupError::Config("email.from is not a valid address".into()))?;
    if e.transport == "file" {
        let dir = cfg.data_dir.join("outbox");
        create_private_dir(&dir)?;
        tracing::info!(dir = %dir.display(), "email goes to the file outbox (transport = \"file\"): nothing leaves this machine");
        return Ok(Arc::new(Via {
            name: "file",
            from,
            inner: AsyncFileTransport::<Tokio1Executor>::new(dir),
        }));
    }
    let s = &e.smtp;
    let builder = match s.security.as_str() {
        "tls" => AsyncSmtpTransport::<Tokio1Executor>::relay(&s.host),
        "starttls" => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&s.host),
        _ => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
            &s.host,
        )),
    }
    .map_err(|e| StartupError::Config(format!("email.smtp: {e}")))?;
    let mut builder = match (s.security.as_str(), tls_with_extra_root(cfg)?) {
        ("tls", Some(params)) => builder.tls(Tls::Wrapper(params)),
        ("starttls", Some(params)) => builder.tls(Tls::Required(params)),
        _ => builder,
    };
    builder = builder
        .port(s.port)
        .hello_name(ClientId::Domain(s.hello_name.clone()))
        .timeout(Some(Duration::from_secs(s.timeout_secs)));
    if !s.username.is_empty() {
        let password = smtp_password(cfg)?.ok_or_else(|| {
            StartupError::Config(
                "email.smtp.username is set but no password: set email.smtp.password_file or BASTION_SMTP_PASSWORD".into(),
            )
        })?;
        builder = builder.credentials(Credentials::new(
            s.username.clone(),
            password.expose_secret().to_owned(),
        ));
    }
    tracing::info!(host = %s.host, port = s.port, security = %s.security, "email goes out over SMTP");
    Ok(Arc::new(Via {
        name: "smtp",
        from,
        inner: builder.build(),
    }))
}

/// TLS parameters that also trust `email.smtp.ca_cert` (a private relay's CA), if set.
fn tls_with_extra_root(cfg: &Config) -> Result<Option<TlsParameters>, StartupError> {
    let s = &cfg.email.smtp;
    if s.ca_cert.is_empty() {
        return Ok(None);
    }
    let fail = |e: String| StartupError::Config(format!("email.smtp.ca_cert {}: {e}", s.ca_cert));
    let pem = std::fs::read(&s.ca_cert).map_err(|e| fail(e.to_string()))?;
    let cert = Certificate::from_pem(&pem).map_err(|e| fail(e.to_string()))?;
    TlsParameters::builder(s.host.clone())
        .add_root_certificate(cert)
        .build_rustls()
        .map(Some)
        .map_err(|e| fail(e.to_string()))
}

fn create_private_dir(dir: &Path) -> Result<(), StartupError> {
    let fail = |e: std::io::Error| StartupError::Config(format!("{}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(fail)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(fail)?;
    }
    Ok(())
}
