//! The encryption budget of each data key (why: nonces are 96 random bits).
//!
//! NIST SP 800-38D §8.3 bounds a key with random nonces to 2^32 encryptions, keeping the chance
//! of a repeated nonce below 2^-32. Bastion stops a key at half that: each process reserves
//! blocks of encryptions in the database (one atomic increment shared by every node) and
//! refuses to seal once a key's total would pass [`LIMIT`], telling the operator to rotate.

use std::sync::Mutex;

use bastion_crypto::keyring::Purpose;
use bastion_store::{Scope, Store};

use super::VaultError;

/// Encryptions allowed per key version: 2^31, half of NIST's bound for random nonces.
pub const LIMIT: u64 = 1 << 31;
/// Encryptions reserved per database round trip; a restart forfeits at most one block.
pub const BLOCK: u64 = 1 << 16;

const SCOPE: Scope = Scope::System("vault");

/// The blocks this process holds, per key id: `(key id, next, end)`. A handful of keys, so a
/// list beats hashing on the hot path.
#[derive(Debug)]
pub struct Budget {
    limit: u64,
    block: u64,
    blocks: Mutex<Vec<(String, u64, u64)>>,
}

impl Default for Budget {
    fn default() -> Self {
        Self::new(LIMIT, BLOCK)
    }
}

impl Budget {
    /// A budget of `limit` encryptions per key, reserved `block` at a time (tests use small ones).
    pub fn new(limit: u64, block: u64) -> Self {
        Self {
            limit,
            block: block.max(1),
            blocks: Mutex::default(),
        }
    }

    fn take_local(&self, key_id: &str) -> bool {
        let mut blocks = match self.blocks.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        match blocks.iter_mut().find(|(id, _, _)| id == key_id) {
            Some((_, next, end)) if *next < *end => {
                *next += 1;
                true
            }
            _ => false,
        }
    }

    /// Counts one encryption under `key_id`, reserving a new block when this one is spent.
    pub async fn take(
        &self,
        store: &dyn Store,
        key_id: &str,
        purpose: Purpose,
    ) -> Result<(), VaultError> {
        if self.take_local(key_id) {
            return Ok(());
        }
        let total = store
            .reserve_encryptions(&SCOPE, key_id, self.block)
            .await?;
        if total > self.limit {
            return Err(VaultError::BudgetExhausted {
                key_id: key_id.to_owned(),
                purpose: purpose.as_str(),
                limit: self.limit,
            });
        }
        let mut blocks = match self.blocks.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        // This encryption uses the block's first slot.
        let fresh = (key_id.to_owned(), total - self.block + 1, total);
        match blocks.iter_mut().find(|(id, _, _)| id == key_id) {
            Some(slot) => *slot = fresh,
            None => blocks.push(fresh),
        }
        Ok(())
    }
}
