//! A local SMTP server that speaks enough of RFC 5321 (and RFC 3207 STARTTLS, over a real TLS
//! handshake) for a real client (lettre) to deliver to it, recording each message. It can
//! refuse recipients permanently (550).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

pub struct SmtpSink {
    pub addr: SocketAddr,
    messages: Arc<Mutex<Vec<String>>>,
    /// How many sessions were upgraded with STARTTLS.
    upgrades: Arc<Mutex<usize>>,
    task: JoinHandle<()>,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How a sink behaves.
#[derive(Clone, Default)]
pub struct SinkOptions {
    /// Every `RCPT TO` gets a permanent 550.
    pub reject_recipients: bool,
    /// Offer STARTTLS with this server configuration.
    pub starttls: Option<TlsAcceptor>,
}

impl SmtpSink {
    /// Listens on `addr` (`127.0.0.1:0` for any port). With `reject_recipients`, every
    /// `RCPT TO` gets a permanent 550.
    pub async fn start(addr: SocketAddr, reject_recipients: bool) -> std::io::Result<Self> {
        Self::start_with(
            addr,
            SinkOptions {
                reject_recipients,
                starttls: None,
            },
        )
        .await
    }

    pub async fn start_with(addr: SocketAddr, opts: SinkOptions) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let messages = Arc::new(Mutex::new(Vec::new()));
        let upgrades = Arc::new(Mutex::new(0));
        let (store, upgraded) = (messages.clone(), upgrades.clone());
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let (store, upgraded, opts) = (store.clone(), upgraded.clone(), opts.clone());
                tokio::spawn(async move {
                    let _ = w_session(sock, store, upgraded, opts).await;
                });
            }
        });
        Ok(Self {
            addr,
            messages,
            upgrades,
            task,
        })
    }

    /// Every message received (the DATA section, dot-unstuffed).
    pub fn messages(&self) -> Vec<String> {
        self.messages.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Sessions that switched to TLS.
    pub fn tls_sessions(&self) -> usize {
        self.upgrades.lock().map(|n| *n).unwrap_or(0)
    }
}

async fn w_session(
    sock: tokio::net::TcpStream,
    store: Arc<Mutex<Vec<String>>>,
    upgraded: Arc<Mutex<usize>>,
    opts: SinkOptions,
) -> std::io::Result<()> {
    let mut plain = BufReader::new(sock);
    plain
        .get_mut()
        .write_all(b"220 sink.test ESMTP\r\n")
        .await?;
    if !commands(&mut plain, &store, &opts, opts.starttls.is_some()).await? {
        return Ok(());
    }
    // STARTTLS: the client waits for our 220 before its handshake, so nothing is buffered.
    let Some(acceptor) = opts.starttls.clone() else {
        return Ok(());
    };
    let tls = acceptor.accept(plain.into_inner()).await?;
    if let Ok(mut n) = upgraded.lock() {
        *n += 1;
    }
    let mut secure = BufReader::new(tls);
    commands(&mut secure, &store, &opts, false).await?;
    Ok(())
}

/// Answers commands until QUIT or end of stream (`false`), or STARTTLS (`true`).
async fn commands<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut BufReader<S>,
    store: &Mutex<Vec<String>>,
    opts: &SinkOptions,
    offer_tls: bool,
) -> std::io::Result<bool> {
    let mut line = String::new();
    loop {
        line.clear();
        if conn.read_line(&mut line).await? == 0 {
            return Ok(false);
        }
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" if offer_tls => b"250-sink.test\r\n250-STARTTLS\r\n250 8BITMIME\r\n",
            "EHLO" => b"250-sink.test\r\n250 8BITMIME\r\n",
            "HELO" => b"250 sink.test\r\n",
            "STAR" if offer_tls => {
                conn.get_mut()
                    .write_all(b"220 2.0.0 ready for TLS\r\n")
                    .await?;
                return Ok(true);
            }
            "RCPT" if opts.reject_recipients => b"550 5.1.1 no such mailbox\r\n",
            "DATA" => {
                conn.get_mut().write_all(b"354 go ahead\r\n").await?;
                let mut data = String::new();
                loop {
                    line.clear();
                    if conn.read_line(&mut line).await? == 0 {
                        return Ok(false);
                    }
                    let l = line.trim_end_matches(['\r', '\n']);
                    if l == "." {
                        break;
                    }
                    data.push_str(l.strip_prefix('.').unwrap_or(l));
                    data.push_str("\r\n");
                }
                if let Ok(mut m) = store.lock() {
                    m.push(data);
                }
                b"250 2.0.0 queued\r\n"
            }
            "QUIT" => {
                conn.get_mut().write_all(b"221 bye\r\n").await?;
                return Ok(false);
            }
            _ => b"250 ok\r\n",
        };
        conn.get_mut().write_all(reply).await?;
    }
}
