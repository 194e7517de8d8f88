//! Typed, prefixed random ids (`usr_…`, `ses_…`, `mail_…`): 128 random bits in hex; and
//! prefixed secret tokens (refresh tokens, magic links): 256 random bits, base64url.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bastion_crypto::CryptoError;
use secrecy::SecretString;
use zeroize::Zeroizing;

pub fn new_id(prefix: &str) -> Result<String, CryptoError> {
    let mut raw = [0u8; 16];
    bastion_crypto::random_bytes(&mut raw)?;
    Ok(format!("{prefix}_{}", hex::encode(raw)))
}

/// A bearer secret: `prefix` + 256 random bits in base64url (43 characters).
pub fn secret_token(prefix: &str) -> Result<SecretString, CryptoError> {
    let mut raw = Zeroizing::new([0u8; 32]);
    bastion_crypto::random_bytes(&mut raw[..])?;
    Ok(SecretString::from(format!(
        "{prefix}{}",
        URL_SAFE_NO_PAD.encode(&raw[..])
    )))
}
