//! The signed scope context (docs/tenancy.md): each transaction tells the database who acts in
//! one setting, `bastion.ctx`, whose HMAC-SHA256 the policies' helper functions verify with a
//! key that only the schema owner can read. Forged, expired or misplaced contexts see nothing.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest::{Context as Digest, SHA256};
use bastion_store::{KeyKind, Scope, StoreError, StoreResult};
use zeroize::Zeroizing;

/// How long a context stays valid after its transaction begins: transactions are short, and a
/// context seen elsewhere is useless soon after.
const CONTEXT_TTL: Duration = Duration::from_secs(60);

/// The scope key as its HMAC pad blocks (what the database stores, too).
#[derive(Clone)]
pub(crate) struct ScopeKey {
    ipad: Zeroizing<[u8; 64]>,
    opad: Zeroizing<[u8; 64]>,
}

impl ScopeKey {
    /// A fresh random 256-bit key.
    pub(crate) fn generate() -> StoreResult<Self> {
        let mut key = Zeroizing::new([0u8; 64]);
        aws_lc_rs::rand::fill(&mut key[..32])
            .map_err(|_| StoreError::Database("no randomness for the scope key".into()))?;
        let mut ipad = Zeroizing::new([0x36u8; 64]);
        let mut opad = Zeroizing::new([0x5cu8; 64]);
        for i in 0..64 {
            ipad[i] ^= key[i];
            opad[i] ^= key[i];
        }
        Ok(Self { ipad, opad })
    }

    pub(crate) fn from_pads(ipad: &[u8], opad: &[u8]) -> StoreResult<Self> {
        let bad = || StoreError::Corrupt("scope key pads must be 64 bytes".into());
        let mut k = Self {
            ipad: Zeroizing::new([0u8; 64]),
            opad: Zeroizing::new([0u8; 64]),
        };
        k.ipad.copy_from_slice(
            ipad.get(..64)
                .filter(|_| ipad.len() == 64)
                .ok_or_else(bad)?,
        );
        k.opad.copy_from_slice(
            opad.get(..64)
                .filter(|_| opad.len() == 64)
                .ok_or_else(bad)?,
        );
        Ok(k)
    }

    pub(crate) fn pads(&self) -> (&[u8], &[u8]) {
        (&self.ipad[..], &self.opad[..])
    }

    fn mac(&self, payload: &str) -> [u8; 32] {
        let mut inner = Digest::new(&SHA256);
        inner.update(&self.ipad[..]);
        inner.update(payload.as_bytes());
        let mut outer = Digest::new(&SHA256);
        outer.update(&self.opad[..]);
        outer.update(inner.finish().as_ref());
        let mut out = [0u8; 32];
        out.copy_from_slice(outer.finish().as_ref());
        out
    }

    /// The role to switch to and the signed context for `scope`, valid until `expires_ms`.
    pub(crate) fn sign_until(
        &self,
        scope: &Scope,
        expires_ms: i64,
    ) -> StoreResult<(&'static str, String)> {
        let (role, kind, user, org) = match scope {
            Scope::System(_) => ("bastion_system", "sys", "", ""),
            Scope::User { user_id, org_id } => (
                "bastion_app",
                "app",
                user_id.as_str(),
                org_id.as_deref().unwrap_or(""),
            ),
            Scope::ApiKey {
                key_id,
                org_id,
                kind,
            } => (
                "bastion_app",
                match kind {
                    KeyKind::Service => "svc",
                    KeyKind::Publishable => "pub",
                },
                key_id.as_str(),
                org_id.as_str(),
            ),
            Scope::Anonymous => ("bastion_app", "app", "", ""),
        };
        // Ids are Bastion's own (`usr_…`); a separator inside one could shift the fields.
        if [user, org].iter().any(|v| v.contains('.')) {
            return Err(StoreError::Forbidden);
        }
        let payload = format!("v1.{kind}.{user}.{org}.{expires_ms}");
        let mac = hex::encode(self.mac(&payload));
        Ok((role, format!("{payload}.{mac}")))
    }

    pub(crate) fn sign(&self, scope: &Scope) -> StoreResult<(&'static str, String)> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_add(CONTEXT_TTL);
        self.sign_until(scope, i64::try_from(now.as_millis()).unwrap_or(i64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn r4_the_pad_construction_is_hmac_sha256() {
        let k = ScopeKey::generate().unwrap();
        // Recover K from the inner pad and compare with aws-lc's own HMAC.
        let key: Vec<u8> = k.ipad.iter().map(|b| b ^ 0x36).collect();
        let reference = aws_lc_rs::hmac::sign(
            &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &key[..32]),
            b"v1.app.usr_1..123",
        );
        assert_eq!(&k.mac("v1.app.usr_1..123")[..], reference.as_ref());
    }

    #[test]
    fn r4_contexts_name_the_role_and_refuse_separators_in_ids() {
        let k = ScopeKey::generate().unwrap();
        let (role, ctx) = k.sign_until(&Scope::System("x"), 5).unwrap();
        assert_eq!(role, "bastion_system");
        assert!(ctx.starts_with("v1.sys...5."));
        let user = Scope::User {
            user_id: "usr_1".into(),
            org_id: Some("org_2".into()),
        };
        let (role, ctx) = k.sign_until(&user, 7).unwrap();
        assert_eq!(role, "bastion_app");
        assert!(ctx.starts_with("v1.app.usr_1.org_2.7."));
        let sneaky = Scope::User {
            user_id: "usr_1.org_b".into(),
            org_id: None,
        };
        assert!(k.sign_until(&sneaky, 7).is_err());
    }
}
