//! Typed, prefixed random ids (`usr_…`, `ses_…`, `mail_…`): 128 random bits in hex.

use bastion_crypto::CryptoError;

pub fn new_id(prefix: &str) -> Result<String, CryptoError> {
    let mut raw = [0u8; 16];
    bastion_crypto::random_bytes(&mut raw)?;
    Ok(format!("{prefix}_{}", hex::encode(raw)))
}
