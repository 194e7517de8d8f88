//! The Bastion server's license API, as a desktop app calls it.
//!
//! License keys and emails travel only in JSON bodies, never in URLs. Errors come back as
//! problem documents and become [`ClientError::Server`] with the stable `code`.

use std::time::Duration;

use reqwest::header::RETRY_AFTER;
use reqwest::{StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{ClientError, Fingerprint};

const TIMEOUT: Duration = Duration::from_secs(30);

/// What activation and validation return: the machine's signed lease (verify it offline with
/// [`crate::offline::verify_certificate`] before trusting it).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Activated {
    pub license_id: String,
    pub machine_id: String,
    /// `BSTM1.…`
    pub certificate: String,
    /// RFC 3339; the certificate's `exp` says the same in Unix seconds.
    pub lease_expires_at: String,
    pub entitlements: Vec<String>,
}

/// A machine activated on a license.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Machine {
    pub id: String,
    pub name: String,
    /// RFC 3339.
    pub activated_at: String,
    /// RFC 3339.
    pub last_seen_at: String,
}

#[derive(Deserialize)]
struct MachineList {
    machines: Vec<Machine>,
}

#[derive(Deserialize)]
struct RevocationList {
    list: String,
}

#[derive(Deserialize)]
struct Problem {
    code: String,
}

#[derive(Serialize)]
struct MachineBody<'a> {
    components: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
}

#[derive(Serialize)]
struct KeyBody<'a> {
    key: &'a str,
    email: &'a str,
}

#[derive(Serialize)]
struct ActivateBody<'a> {
    key: &'a str,
    email: &'a str,
    machine: MachineBody<'a>,
}

#[derive(Serialize)]
struct DeactivateBody<'a> {
    key: &'a str,
    email: &'a str,
    machine_id: &'a str,
}

#[derive(Serialize)]
struct RevokeRequestBody<'a> {
    key: &'a str,
    email: &'a str,
    certificate: &'a str,
    machine: MachineBody<'a>,
}

/// Installs aws-lc-rs as rustls' process-wide provider, which the workspace's reqwest expects;
/// an app that installed one already keeps its own.
fn ensure_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// An HTTP client for one Bastion server.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    /// A client for the server at `base_url` (e.g. `https://licenses.example.com`), with a 30 s
    /// timeout per request. Plain `http` is accepted only for loopback hosts, since request
    /// bodies carry the license key. Redirects are not followed, for the same reason.
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        let url = Url::parse(base_url)
            .map_err(|_| ClientError::InvalidArgument("server URL is not a URL"))?;
        let loopback = url.host_str().is_some_and(|h| {
            h.eq_ignore_ascii_case("localhost")
                || h.trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        });
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            _ => {
                return Err(ClientError::InvalidArgument(
                    "server URL must be https (http only for localhost)",
                ));
            }
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(ClientError::InvalidArgument(
                "server URL must not have a query or fragment",
            ));
        }
        ensure_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ClientError::from_transport(&e))?;
        Ok(Self {
            base: url.as_str().trim_end_matches('/').to_owned(),
            http,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn post<B: Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<reqwest::Response, ClientError> {
        let resp = self
            .http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .map_err(|e| ClientError::from_transport(&e))?;
        check(resp).await
    }

    async fn get(&self, path: &str) -> Result<reqwest::Response, ClientError> {
        let resp = self
            .http
            .get(self.url(path))
            .send()
            .await
            .map_err(|e| ClientError::from_transport(&e))?;
        check(resp).await
    }

    /// Activates this machine on the license and returns its certificate (SPEC L3/L4).
    pub async fn activate(
        &self,
        key: &str,
        email: &str,
        machine: &Fingerprint,
        machine_name: &str,
    ) -> Result<Activated, ClientError> {
        let body = ActivateBody {
            key,
            email,
            machine: MachineBody {
                components: machine.components(),
                name: Some(machine_name),
            },
        };
        json(self.post("/v1/licenses/activate", &body).await?).await
    }

    /// Checks the license online for an activated machine and returns a refreshed certificate.
    pub async fn validate(
        &self,
        key: &str,
        email: &str,
        machine: &Fingerprint,
    ) -> Result<Activated, ClientError> {
        let body = ActivateBody {
            key,
            email,
            machine: MachineBody {
                components: machine.components(),
                name: None,
            },
        };
        json(self.post("/v1/licenses/validate", &body).await?).await
    }

    /// Frees this (or another) machine's seat.
    pub async fn deactivate(
        &self,
        key: &str,
        email: &str,
        machine_id: &str,
    ) -> Result<(), ClientError> {
        let body = DeactivateBody {
            key,
            email,
            machine_id,
        };
        self.post("/v1/licenses/deactivate", &body).await?;
        Ok(())
    }

    /// The machines activated on the license.
    pub async fn machines(&self, key: &str, email: &str) -> Result<Vec<Machine>, ClientError> {
        let list: MachineList = json(
            self.post("/v1/licenses/machines", &KeyBody { key, email })
                .await?,
        )
        .await?;
        Ok(list.machines)
    }

    /// Asks the server to revoke the license (e.g. the key leaked); the server mails the
    /// licensee a confirmation link. Proven by this machine's certificate.
    pub async fn request_revoke(
        &self,
        key: &str,
        email: &str,
        certificate: &str,
        machine: &Fingerprint,
    ) -> Result<(), ClientError> {
        let body = RevokeRequestBody {
            key,
            email,
            certificate,
            machine: MachineBody {
                components: machine.components(),
                name: None,
            },
        };
        self.post("/v1/licenses/revoke-request", &body).await?;
        Ok(())
    }

    /// The product's current signed revocation list (`BSTR1.…`); offer it to a
    /// [`crate::offline::RevocationCache`], which verifies it and keeps the newest.
    pub async fn revocations(&self, product_id: &str) -> Result<String, ClientError> {
        let valid = !product_id.is_empty()
            && product_id.len() <= 64
            && product_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(ClientError::InvalidArgument("product id"));
        }
        let list: RevocationList = json(
            self.get(&format!("/v1/licenses/revocations/{product_id}"))
                .await?,
        )
        .await?;
        Ok(list.list)
    }

    /// The server's license public keys as JSON (`{"keys": [...]}`), for
    /// `PublicKeySet::from_json`. Apps should ship their keys instead of trusting this at run
    /// time; it is meant for tooling.
    pub async fn public_keys(&self) -> Result<String, ClientError> {
        self.get("/v1/licenses/public-keys")
            .await?
            .text()
            .await
            .map_err(|e| ClientError::from_transport(&e))
    }
}

async fn json<T: DeserializeOwned>(resp: reqwest::Response) -> Result<T, ClientError> {
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| ClientError::from_transport(&e))?;
    serde_json::from_slice(&bytes)
        .map_err(|_| ClientError::UnexpectedResponse("not the expected JSON"))
}

/// Passes a 2xx through; turns anything else into [`ClientError::Server`].
async fn check(resp: reqwest::Response) -> Result<reqwest::Response, ClientError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let retry_after_secs = if status == StatusCode::TOO_MANY_REQUESTS {
        resp.headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    } else {
        None
    };
    let code = resp
        .bytes()
        .await
        .ok()
        .and_then(|b| serde_json::from_slice::<Problem>(&b).ok())
        .map(|p| p.code)
        // Only a plain machine code is kept: the server's text never reaches app logs raw.
        .filter(|c| {
            !c.is_empty()
                && c.len() <= 64
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
        .unwrap_or_else(|| "unknown".to_owned());
    Err(ClientError::Server {
        status: status.as_u16(),
        code,
        retry_after_secs,
    })
}
