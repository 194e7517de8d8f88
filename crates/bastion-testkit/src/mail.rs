//! Reading the file outbox (`<data-dir>/outbox/*.eml`) the way a recipient would.

use std::path::PathBuf;
use std::time::Duration;

use crate::app::TestApp;

/// One delivered message.
#[derive(Debug, Clone)]
pub struct Mail {
    pub file: PathBuf,
    /// The raw message as written by the transport.
    pub raw: String,
    /// The raw message with quoted-printable soft line breaks and `=3D` undone, which is
    /// enough to read the ASCII bodies Bastion writes.
    pub decoded: String,
}

impl Mail {
    pub fn is_to(&self, address: &str) -> bool {
        self.raw.lines().any(|l| {
            l.strip_prefix("To: ").is_some_and(|v| {
                v.to_ascii_lowercase()
                    .contains(&address.to_ascii_lowercase())
            })
        })
    }

    pub fn subject(&self) -> String {
        self.raw
            .lines()
            .find_map(|l| l.strip_prefix("Subject: "))
            .unwrap_or_default()
            .to_owned()
    }

    /// The magic-link token (`bml_…`) the message carries, if any.
    pub fn link_token(&self) -> Option<String> {
        let at = self.decoded.find("bml_")?;
        let token: String = self.decoded[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
            .collect();
        Some(token)
    }
}

fn decode(raw: &str) -> String {
    raw.replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=")
}

impl TestApp {
    pub fn outbox_dir(&self) -> PathBuf {
        self.data_dir.path().join("outbox")
    }

    /// Every message in the file outbox, oldest first.
    pub fn mails(&self) -> Vec<Mail> {
        let Ok(dir) = std::fs::read_dir(self.outbox_dir()) else {
            return Vec::new();
        };
        let mut out: Vec<(std::time::SystemTime, Mail)> = dir
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
            .filter_map(|e| {
                let raw = std::fs::read_to_string(e.path()).ok()?;
                let modified = e.metadata().ok()?.modified().ok()?;
                Some((
                    modified,
                    Mail {
                        file: e.path(),
                        decoded: decode(&raw),
                        raw,
                    },
                ))
            })
            .collect();
        out.sort_by_key(|(t, _)| *t);
        out.into_iter().map(|(_, m)| m).collect()
    }

    /// The messages to `address`, once there are at least `count` (waits up to 20 s for the
    /// dispatcher; panics after that).
    pub async fn wait_for_mail(&self, address: &str, count: usize) -> Vec<Mail> {
        for _ in 0..1000 {
            let mine: Vec<Mail> = self
                .mails()
                .into_iter()
                .filter(|m| m.is_to(address))
                .collect();
            if mine.len() >= count {
                return mine;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no {count} message(s) to {address} in the outbox");
    }

    /// The link token of the newest message to `address`, waiting for the `count`th.
    pub async fn link_token(&self, address: &str, count: usize) -> String {
        let mails = self.wait_for_mail(address, count).await;
        match mails.last().and_then(Mail::link_token) {
            Some(t) => t,
            None => panic!("the newest message to {address} carries no link"),
        }
    }
}
