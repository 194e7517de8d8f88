//! Bastion for desktop apps: activate a license against a Bastion server once, keep it in the
//! OS keychain, and check it offline on every start with the public keys the app ships.
//!
//! - [`offline`]: license key, machine certificate and revocation checks, no network (SPEC C4).
//! - [`fingerprint`]: this machine's stable identifiers, which a certificate is bound to.
//! - [`api`]: the server's license endpoints (activate, validate, deactivate, …).
//! - [`storage`]: the license in the OS keychain, verified on every load (SPEC C1).
//!
//! The cryptography is `bastion_crypto::license`; this crate links no server runtime, so an
//! app's binary gets only an HTTP client. Nothing here logs, and no error or `Debug` output
//! carries a license key, an email or a machine identifier.
//!
//! ```no_run
//! use bastion_client::{Client, Fingerprint, LicenseStorage, Loaded, StoredLicense};
//! use bastion_crypto::license::PublicKeySet;
//! use secrecy::SecretString;
//!
//! # async fn start(key: &str, email: &str, now_s: i64) -> Result<(), Box<dyn std::error::Error>> {
//! # const PUBLIC_KEYS: &str = r#"{"keys": []}"#;
//! // Baked into the app at build time: `include_str!` of what `bastion license public-keys` prints.
//! let keys = PublicKeySet::from_json(PUBLIC_KEYS)?;
//! let machine = Fingerprint::gather()?;
//! let storage = LicenseStorage::for_app("com.example.editor");
//!
//! let status = match storage.load(&keys, &machine, now_s)? {
//!     Loaded::Valid { status, .. } => status,
//!     Loaded::Missing | Loaded::Cleared(_) => {
//!         // First start (or the stored lease ran out): activate online once.
//!         let client = Client::new("https://licenses.example.com")?;
//!         let activated = client.activate(key, email, &machine, "Ann's laptop").await?;
//!         let stored = StoredLicense::from_activation(SecretString::from(key), email, &activated);
//!         storage.save(&stored)?;
//!         let Loaded::Valid { status, .. } = storage.load(&keys, &machine, now_s)? else {
//!             return Err("the server's certificate does not verify".into());
//!         };
//!         status
//!     }
//! };
//! println!("licensed until {} with {:?}", status.runs_until(), status.entitlements());
//! # Ok(())
//! # }
//! ```

pub mod api;
mod error;
pub mod fingerprint;
pub mod offline;
pub mod storage;

pub use api::{Activated, Client, Machine};
pub use error::ClientError;
pub use fingerprint::Fingerprint;
pub use offline::{OfflineStatus, RevocationCache};
pub use storage::{ClearReason, LicenseStorage, Loaded, StoredLicense};
