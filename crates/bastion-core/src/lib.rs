//! Bastion's domain: services and rules per area. No HTTP and no SQL here; storage goes through
//! the `bastion-store` traits, cryptography through `bastion-crypto`.

pub mod accounts;
pub mod audit;
pub mod cleanup;
pub mod clock;
pub mod idempotency;
pub mod ids;
pub mod keys;
pub mod licenses;
pub mod limits;
pub mod links;
pub mod mail;
pub mod orgs;
pub mod passwords;
pub mod payments;
pub mod sessions;
mod text;
pub mod vault;
pub mod wallet;
pub mod webhooks;

pub use clock::{Clock, SystemClock};
