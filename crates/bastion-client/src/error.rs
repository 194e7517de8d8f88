//! The one error type of the client. No variant carries a license key, an email, a machine
//! identifier or a request URL, so an app may log or show any of them.

use bastion_crypto::license::LicenseError;

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A license key, certificate or revocation list was refused offline.
    #[error("license check failed: {0}")]
    License(#[from] LicenseError),
    /// The server answered with a problem document (`code` is its stable machine code).
    #[error("the server refused the request: {status} {code}")]
    Server {
        status: u16,
        code: String,
        /// From `Retry-After` on a 429: wait this long before trying again.
        retry_after_secs: Option<u64>,
    },
    /// The server could not be reached or did not answer in time.
    #[error("could not reach the license server ({0})")]
    Network(&'static str),
    /// The server answered 2xx with a body this client does not understand.
    #[error("unexpected answer from the license server: {0}")]
    UnexpectedResponse(&'static str),
    /// The OS keychain refused or failed an operation.
    #[error("keychain error: {0}")]
    Keychain(String),
    /// No stable machine identifier could be read on this device.
    #[error("cannot identify this machine: {0}")]
    Fingerprint(&'static str),
    /// A revocation list was signed for another product than the one it is checked for.
    #[error("the revocation list belongs to another product")]
    WrongProduct,
    /// An argument the caller gave cannot be used (e.g. a product id with `/` in it).
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
}

impl ClientError {
    /// Classifies a transport error without keeping it: a `reqwest::Error` prints its URL and
    /// its `Debug` its whole request context.
    pub(crate) fn from_transport(e: &reqwest::Error) -> Self {
        if e.is_timeout() {
            Self::Network("timed out")
        } else if e.is_connect() {
            Self::Network("connection failed")
        } else if e.is_decode() || e.is_body() {
            Self::UnexpectedResponse("unreadable body")
        } else if e.is_builder() {
            Self::InvalidArgument("server URL")
        } else {
            Self::Network("request failed")
        }
    }

    /// Keeps the keychain's own message but never its payload: `keyring::Error::BadEncoding`
    /// holds the stored bytes, and its `Debug` would print them.
    pub(crate) fn from_keyring(e: keyring::Error) -> Self {
        let msg = match e {
            keyring::Error::BadEncoding(_) => "stored value is not UTF-8".to_owned(),
            keyring::Error::Ambiguous(_) => "more than one matching entry".to_owned(),
            keyring::Error::NoEntry => "no entry".to_owned(),
            other => other.to_string(),
        };
        Self::Keychain(msg)
    }
}
