//! Test helpers: an issuer that signs like the server, machines, a throwaway keychain entry and a
//! one-shot local HTTP server.

use bastion_client::{Fingerprint, LicenseStorage};
use bastion_crypto::jwt::JwtAlgorithm;
use bastion_crypto::license::{
    CertificateClaims, DocumentKind, LicenseClaims, LicenseSigner, PublicKeySet, RevocationClaims,
    canonical_machine, email_hash, machine_binding,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The tests' clock (Unix seconds); nothing reads the real time.
pub const NOW: i64 = 1_800_000_000;
pub const DAY: i64 = 86_400;
pub const EMAIL: &str = "ann@example.com";
pub const LICENSE_ID: &str = "lic_01test";
pub const PRODUCT_ID: &str = "prd_01test";

/// Signs license documents as the server does.
pub struct Issuer {
    pub signer: LicenseSigner,
    pub keys: PublicKeySet,
}

impl Issuer {
    pub fn new(alg: JwtAlgorithm) -> Self {
        let signer =
            LicenseSigner::from_pkcs8(alg, "licenses-v1", &alg.generate_pkcs8().unwrap()).unwrap();
        let keys = PublicKeySet::new(&[signer.public_key().clone()]).unwrap();
        Self { signer, keys }
    }

    pub fn license_claims(&self, lic: &str, email: &str, exp: Option<i64>) -> LicenseClaims {
        LicenseClaims {
            v: 1,
            kid: self.signer.kid().into(),
            alg: self.signer.alg_name().into(),
            lic: lic.into(),
            prd: PRODUCT_ID.into(),
            pol: "pol_01test".into(),
            iat: NOW - 10 * DAY,
            exp,
            ent: vec!["export".into(), "pro".into()],
            eml: email_hash(lic, email),
        }
    }

    /// A perpetual license key for [`EMAIL`].
    pub fn license(&self) -> String {
        self.license_with(LICENSE_ID, EMAIL, None)
    }

    pub fn license_with(&self, lic: &str, email: &str, exp: Option<i64>) -> String {
        self.signer
            .sign(DocumentKind::License, &self.license_claims(lic, email, exp))
            .unwrap()
    }

    /// A certificate for `machine` on `lic` with a lease ending at `exp`.
    pub fn certificate(&self, lic: &str, machine: &Fingerprint, exp: i64) -> String {
        let canonical = canonical_machine(machine.components()).unwrap();
        let claims = CertificateClaims {
            v: 1,
            kid: self.signer.kid().into(),
            alg: self.signer.alg_name().into(),
            lic: lic.into(),
            mch: "mch_01test".into(),
            mh: machine_binding(lic, &canonical),
            ent: vec!["export".into(), "pro".into()],
            iat: NOW - DAY,
            exp,
        };
        self.signer
            .sign(DocumentKind::Certificate, &claims)
            .unwrap()
    }

    pub fn revocations(&self, prd: &str, iat: i64, revoked: &[&str]) -> String {
        self.revocations_with_machines(prd, iat, revoked, &[])
    }

    pub fn revocations_with_machines(
        &self,
        prd: &str,
        iat: i64,
        revoked: &[&str],
        machines: &[&str],
    ) -> String {
        let claims = RevocationClaims {
            v: 1,
            kid: self.signer.kid().into(),
            alg: self.signer.alg_name().into(),
            prd: prd.into(),
            iat,
            revoked: revoked.iter().map(|s| s.to_string()).collect(),
            machines: machines.iter().map(|s| s.to_string()).collect(),
        };
        self.signer
            .sign(DocumentKind::Revocations, &claims)
            .unwrap()
    }
}

pub fn machine_a() -> Fingerprint {
    Fingerprint::from_components(vec![
        "os:linux".into(),
        "machine-id:0f1e2d3c4b5a69788796a5b4c3d2e1f0".into(),
    ])
}

pub fn machine_b() -> Fingerprint {
    Fingerprint::from_components(vec![
        "os:linux".into(),
        "machine-id:aaaabbbbccccddddeeeeffff00001111".into(),
    ])
}

/// Flips one bit of `doc` at byte `i`, if the result is still text.
pub fn flip(doc: &str, i: usize) -> Option<String> {
    let mut bytes = doc.as_bytes().to_vec();
    bytes[i] ^= 1;
    String::from_utf8(bytes).ok()
}

/// A keychain entry under a service name no other run or test uses; deleted when dropped.
pub struct TempStorage {
    pub storage: LicenseStorage,
}

impl TempStorage {
    pub fn new(test: &str) -> Self {
        let mut rnd = [0u8; 8];
        bastion_crypto::random_bytes(&mut rnd).unwrap();
        let suffix: String = rnd.iter().map(|b| format!("{b:02x}")).collect();
        let service = format!("bastion-client-test:{test}:{}:{suffix}", std::process::id());
        let storage = LicenseStorage::new(service);
        // Nothing to clear under a fresh name; going through the library first also gives this
        // thread a session keyring (see `ensure_session_keyring`), which `raw()` relies on.
        assert!(!storage.clear().unwrap());
        Self { storage }
    }

    /// The raw keychain entry, to read or tamper with what the library wrote.
    pub fn raw(&self) -> keyring::Entry {
        keyring::Entry::new(self.storage.service(), "license").unwrap()
    }

    pub fn exists(&self) -> bool {
        match self.raw().get_password() {
            Ok(_) => true,
            Err(keyring::Error::NoEntry) => false,
            Err(e) => panic!("keychain read failed: {e}"),
        }
    }
}

impl Drop for TempStorage {
    fn drop(&mut self) {
        let _ = self.storage.clear();
    }
}

/// Answers one HTTP request on a local port with `response` (a full HTTP/1.1 response) and
/// returns the base URL and the raw request it received.
pub async fn serve_once(response: String) -> (String, JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = sock.read(&mut chunk).await.unwrap();
            assert!(n > 0, "client closed before sending a whole request");
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some(head_end) = text.find("\r\n\r\n") {
                let len = text[..head_end]
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if buf.len() >= head_end + 4 + len {
                    break;
                }
            }
        }
        sock.write_all(response.as_bytes()).await.unwrap();
        sock.shutdown().await.unwrap();
        String::from_utf8(buf).unwrap()
    });
    (url, task)
}

/// A full HTTP/1.1 response with a JSON body.
pub fn response(status: &str, content_type: &str, extra_headers: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n{extra_headers}\r\n{body}",
        body.len()
    )
}

/// The head and the JSON body of a raw request.
pub fn split_request(raw: &str) -> (&str, serde_json::Value) {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let body = if body.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(body).unwrap()
    };
    (head, body)
}
