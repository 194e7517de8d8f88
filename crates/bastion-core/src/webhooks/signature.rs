//! Webhook signature schemes (SPEC P2), written by hand on purpose (DESIGN.md): each is a few
//! lines over aws-lc-rs HMAC and Ed25519, always over the raw bytes received, compared in
//! constant time, with lengths checked (an empty signature never matches).
//!
//! Every scheme takes several secrets, because during a rotation the old and the new secret are
//! both live, and Stripe's header may carry several `v1` signatures: any signature against any
//! secret may match (a known bug elsewhere keeps only the last one). Timestamps are checked in
//! both directions: a stale or a future timestamp is refused.

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

/// How far a signed timestamp may be from now, either way (Stripe, Slack and Standard Webhooks
/// all use five minutes).
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;
/// Longest signature header accepted before parsing (several signatures fit easily).
const MAX_HEADER: usize = 8 * 1024;

/// How a provider signs its webhooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    /// `Stripe-Signature: t=…,v1=…[,v1=…]`, HMAC-SHA256 over `"{t}.{body}"`, hex.
    Stripe,
    /// `X-Hub-Signature-256: sha256=…`, HMAC-SHA256 over the body, hex; id `X-GitHub-Delivery`.
    GitHub,
    /// `X-Slack-Signature: v0=…` over `"v0:{X-Slack-Request-Timestamp}:{body}"`, hex.
    Slack,
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature` (space-separated `v1,<b64>` HMAC
    /// and `v1a,<b64>` Ed25519) over `"{id}.{timestamp}.{body}"`.
    StandardWebhooks,
    /// `X-Twilio-Signature`: base64 HMAC-SHA1 over the configured public URL (never one rebuilt
    /// from forwarded headers) plus the POST parameters sorted by name; for JSON bodies, the URL
    /// carries `bodySHA256` and only the URL is signed.
    Twilio { public_url: String },
    /// HMAC-SHA256 of the body in a configured header, hex or base64, after an optional prefix.
    Generic {
        header: String,
        encoding: Encoding,
        prefix: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Hex,
    Base64,
}

/// One verification secret of an endpoint.
pub enum WebhookSecret {
    /// An HMAC key (Stripe's and Slack's are used as the literal string; Standard Webhooks'
    /// `whsec_` secrets are base64 after the prefix).
    Hmac(Zeroizing<Vec<u8>>),
    /// A Standard Webhooks `whpk_` Ed25519 public key (for `v1a` signatures).
    Ed25519(Vec<u8>),
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Hmac(_) => f.write_str("Hmac([REDACTED])"),
            Self::Ed25519(_) => f.write_str("Ed25519(public key)"),
        }
    }
}

impl WebhookSecret {
    /// Reads a secret as the provider hands it out for `scheme`.
    pub fn parse(scheme: &Scheme, text: &str) -> Result<Self, SignatureError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(SignatureError::BadSecret("empty"));
        }
        if matches!(scheme, Scheme::StandardWebhooks) {
            if let Some(b64) = text.strip_prefix("whsec_") {
                let key = STANDARD
                    .decode(b64)
                    .map_err(|_| SignatureError::BadSecret("whsec_ secret is not base64"))?;
                return Ok(Self::Hmac(Zeroizing::new(key)));
            }
            if let Some(b64) = text.strip_prefix("whpk_") {
                let key = STANDARD
                    .decode(b64)
                    .map_err(|_| SignatureError::BadSecret("whpk_ key is not base64"))?;
                if key.len() != 32 {
                    return Err(SignatureError::BadSecret("whpk_ key must be 32 bytes"));
                }
                // A small-order key verifies signatures anyone can make.
                if !bastion_crypto::signing::ed25519_point_is_strong(&key) {
                    return Err(SignatureError::BadSecret(
                        "whpk_ key is not a valid Ed25519 public key",
                    ));
                }
                return Ok(Self::Ed25519(key));
            }
            return Err(SignatureError::BadSecret("expected whsec_… or whpk_…"));
        }
        Ok(Self::Hmac(Zeroizing::new(text.as_bytes().to_vec())))
    }

    /// Refuses an HMAC secret anyone could guess, when an admin sets one: at least
    /// [`MIN_HMAC_SECRET_BYTES`] bytes and about [`MIN_HMAC_SECRET_BITS`] bits by a byte-frequency
    /// estimate (a floor that stops "aaaa…" and empty keys, not a proof of randomness). Secrets
    /// the providers generate pass easily.
    pub fn check_strength(&self) -> Result<(), SignatureError> {
        let Self::Hmac(key) = self else {
            return Ok(());
        };
        if key.len() < MIN_HMAC_SECRET_BYTES {
            return Err(SignatureError::BadSecret(
                "an HMAC secret must be at least 16 bytes",
            ));
        }
        if estimated_bits(key) < MIN_HMAC_SECRET_BITS {
            return Err(SignatureError::BadSecret(
                "the HMAC secret is too predictable; use the one the provider generated",
            ));
        }
        Ok(())
    }
}

/// Shortest HMAC secret accepted from an admin.
pub const MIN_HMAC_SECRET_BYTES: usize = 16;
/// Least estimated entropy of an HMAC secret accepted from an admin.
pub const MIN_HMAC_SECRET_BITS: f64 = 48.0;

/// Length times the Shannon entropy of the secret's byte frequencies.
fn estimated_bits(key: &[u8]) -> f64 {
    let mut counts = [0usize; 256];
    for b in key {
        counts[usize::from(*b)] += 1;
    }
    let n = key.len() as f64;
    let per_byte: f64 = counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = *c as f64 / n;
            -p * p.log2()
        })
        .sum();
    per_byte * n
}

/// Why a delivery was refused. None carries a secret, a signature or the body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the endpoint has no verification secret")]
    NoSecret,
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("header {0} appears more than once")]
    DuplicateHeader(&'static str),
    #[error("malformed {0}")]
    Malformed(&'static str),
    #[error("no signature in the header")]
    EmptySignature,
    #[error("the signed timestamp is older than the tolerance")]
    Stale,
    #[error("the signed timestamp is in the future")]
    Future,
    #[error("no signature matches")]
    Mismatch,
    #[error("invalid secret: {0}")]
    BadSecret(&'static str),
}

/// The parts of an HTTP request a scheme reads: headers (any case), the raw query string, the
/// raw body and its content type.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    pub headers: &'a [(&'a str, &'a str)],
    pub query: Option<&'a str>,
    pub body: &'a [u8],
}

impl<'a> Delivery<'a> {
    /// The one value of `name`; a repeated signature or timestamp header is ambiguous, so refused.
    fn header(&self, name: &'static str) -> Result<Option<&'a str>, SignatureError> {
        let mut found = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name));
        let first = found.next().map(|(_, v)| *v);
        if found.next().is_some() {
            return Err(SignatureError::DuplicateHeader(name));
        }
        match first {
            Some(v) if v.len() > MAX_HEADER => Err(SignatureError::Malformed(name)),
            other => Ok(other),
        }
    }

    fn required(&self, name: &'static str) -> Result<&'a str, SignatureError> {
        self.header(name)?
            .ok_or(SignatureError::MissingHeader(name))
    }

    fn content_type(&self) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| *v)
    }
}

/// What a verified delivery carries for de-duplication and the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The provider's delivery id where the scheme has one in a signed or trusted header
    /// (`X-GitHub-Delivery`, `webhook-id`, Twilio's idempotency token); otherwise the inbox
    /// takes the event id from the verified body.
    pub delivery_id: Option<String>,
    /// The signed timestamp, where the scheme has one.
    pub timestamp: Option<i64>,
    /// Which secret matched (index into the endpoint's secrets): shows when an old secret can go.
    pub secret_index: usize,
}

/// HMAC of `parts` concatenated, without copying the body.
fn mac(alg: hmac::Algorithm, key: &[u8], parts: &[&[u8]]) -> hmac::Tag {
    let key = hmac::Key::new(alg, key);
    let mut ctx = hmac::Context::with_key(&key);
    for p in parts {
        ctx.update(p);
    }
    ctx.sign()
}

/// Index of the first HMAC secret whose MAC over `parts` equals one of `candidates`.
fn first_match(
    secrets: &[WebhookSecret],
    alg: hmac::Algorithm,
    parts: &[&[u8]],
    candidates: &[Vec<u8>],
) -> Option<usize> {
    secrets.iter().position(|s| match s {
        WebhookSecret::Hmac(key) => {
            let tag = mac(alg, key, parts);
            candidates
                .iter()
                .any(|c| bastion_crypto::ct_eq(tag.as_ref(), c))
        }
        WebhookSecret::Ed25519(_) => false,
    })
}

fn check_time(ts: i64, now_s: i64, tolerance: i64) -> Result<(), SignatureError> {
    if ts < now_s.saturating_sub(tolerance) {
        return Err(SignatureError::Stale);
    }
    if ts > now_s.saturating_add(tolerance) {
        return Err(SignatureError::Future);
    }
    Ok(())
}

fn parse_ts(raw: &str, what: &'static str) -> Result<i64, SignatureError> {
    let raw = raw.trim();
    if raw.is_empty() || raw.len() > 12 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SignatureError::Malformed(what));
    }
    raw.parse().map_err(|_| SignatureError::Malformed(what))
}

/// A hex signature; an empty or odd one is never a match.
fn hex_sig(raw: &str) -> Result<Vec<u8>, SignatureError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(SignatureError::EmptySignature);
    }
    hex::decode(raw).map_err(|_| SignatureError::Malformed("signature"))
}

fn b64_sig(raw: &str) -> Result<Vec<u8>, SignatureError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(SignatureError::EmptySignature);
    }
    STANDARD
        .decode(raw)
        .map_err(|_| SignatureError::Malformed("signature"))
}

/// Verifies `delivery` under `scheme` against every live secret, at `now_s` (Unix seconds).
/// With no secret at all it fails closed ([`SignatureError::NoSecret`]).
pub fn verify(
    scheme: &Scheme,
    secrets: &[WebhookSecret],
    delivery: &Delivery<'_>,
    now_s: i64,
    tolerance_secs: i64,
) -> Result<Verified, SignatureError> {
    if secrets.is_empty() {
        return Err(SignatureError::NoSecret);
    }
    match scheme {
        Scheme::Stripe => stripe(secrets, delivery, now_s, tolerance_secs),
        Scheme::GitHub => {
            let header = delivery.required("x-hub-signature-256")?;
            let sig = header
                .trim()
                .strip_prefix("sha256=")
                .ok_or(SignatureError::Malformed("x-hub-signature-256"))?;
            let sig = hex_sig(sig)?;
            let index = first_match(secrets, hmac::HMAC_SHA256, &[delivery.body], &[sig])
                .ok_or(SignatureError::Mismatch)?;
            Ok(Verified {
                delivery_id: delivery.header("x-github-delivery")?.map(str::to_owned),
                timestamp: None,
                secret_index: index,
            })
        }
        Scheme::Slack => {
            let ts_raw = delivery.required("x-slack-request-timestamp")?;
            let ts = parse_ts(ts_raw, "x-slack-request-timestamp")?;
            let header = delivery.required("x-slack-signature")?;
            let sig = header
                .trim()
                .strip_prefix("v0=")
                .ok_or(SignatureError::Malformed("x-slack-signature"))?;
            let sig = hex_sig(sig)?;
            check_time(ts, now_s, tolerance_secs)?;
            let parts: [&[u8]; 4] = [b"v0:", ts_raw.trim().as_bytes(), b":", delivery.body];
            let index = first_match(secrets, hmac::HMAC_SHA256, &parts, &[sig])
                .ok_or(SignatureError::Mismatch)?;
            Ok(Verified {
                delivery_id: None,
                timestamp: Some(ts),
                secret_index: index,
            })
        }
        Scheme::StandardWebhooks => standard(secrets, delivery, now_s, tolerance_secs),
        Scheme::Twilio { public_url } => twilio(secrets, delivery, public_url),
        Scheme::Generic {
            header,
            encoding,
            prefix,
        } => {
            let raw = delivery
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(header))
                .map(|(_, v)| *v)
                .collect::<Vec<_>>();
            let raw = match raw.as_slice() {
                [] => return Err(SignatureError::MissingHeader("signature")),
                [one] => *one,
                _ => return Err(SignatureError::DuplicateHeader("signature")),
            };
            let raw = raw
                .trim()
                .strip_prefix(prefix.as_str())
                .ok_or(SignatureError::Malformed("signature"))?;
            let sig = match encoding {
                Encoding::Hex => hex_sig(raw)?,
                Encoding::Base64 => b64_sig(raw)?,
            };
            let index = first_match(secrets, hmac::HMAC_SHA256, &[delivery.body], &[sig])
                .ok_or(SignatureError::Mismatch)?;
            Ok(Verified {
                delivery_id: None,
                timestamp: None,
                secret_index: index,
            })
        }
    }
}

fn stripe(
    secrets: &[WebhookSecret],
    delivery: &Delivery<'_>,
    now_s: i64,
    tolerance: i64,
) -> Result<Verified, SignatureError> {
    let header = delivery.required("stripe-signature")?;
    let mut ts: Option<&str> = None;
    let mut sigs = Vec::new();
    for item in header.split(',') {
        let Some((k, v)) = item.trim().split_once('=') else {
            continue;
        };
        match k {
            "t" if ts.is_some() => return Err(SignatureError::Malformed("stripe-signature")),
            "t" => ts = Some(v),
            // Every v1, not only the last: during a secret rotation Stripe signs with each.
            "v1" if !v.trim().is_empty() => sigs.push(hex_sig(v)?),
            _ => {}
        }
    }
    let ts_raw = ts.ok_or(SignatureError::Malformed("stripe-signature"))?;
    let t = parse_ts(ts_raw, "stripe-signature")?;
    if sigs.is_empty() {
        return Err(SignatureError::EmptySignature);
    }
    check_time(t, now_s, tolerance)?;
    let parts: [&[u8]; 3] = [ts_raw.trim().as_bytes(), b".", delivery.body];
    let index =
        first_match(secrets, hmac::HMAC_SHA256, &parts, &sigs).ok_or(SignatureError::Mismatch)?;
    Ok(Verified {
        delivery_id: None,
        timestamp: Some(t),
        secret_index: index,
    })
}

fn standard(
    secrets: &[WebhookSecret],
    delivery: &Delivery<'_>,
    now_s: i64,
    tolerance: i64,
) -> Result<Verified, SignatureError> {
    let id = delivery.required("webhook-id")?.trim();
    if id.is_empty() || id.len() > 256 {
        return Err(SignatureError::Malformed("webhook-id"));
    }
    let ts_raw = delivery.required("webhook-timestamp")?.trim();
    let ts = parse_ts(ts_raw, "webhook-timestamp")?;
    let header = delivery.required("webhook-signature")?;
    let (mut hmacs, mut eds) = (Vec::new(), Vec::new());
    for item in header.split(' ') {
        match item.trim().split_once(',') {
            Some(("v1", s)) if !s.is_empty() => hmacs.push(b64_sig(s)?),
            Some(("v1a", s)) if !s.is_empty() => eds.push(b64_sig(s)?),
            _ => {}
        }
    }
    if hmacs.is_empty() && eds.is_empty() {
        return Err(SignatureError::EmptySignature);
    }
    check_time(ts, now_s, tolerance)?;
    let parts: [&[u8]; 5] = [id.as_bytes(), b".", ts_raw.as_bytes(), b".", delivery.body];
    let mut index = first_match(secrets, hmac::HMAC_SHA256, &parts, &hmacs);
    if index.is_none() && !eds.is_empty() {
        let signed = [id.as_bytes(), b".", ts_raw.as_bytes(), b".", delivery.body].concat();
        index = secrets.iter().position(|s| match s {
            WebhookSecret::Ed25519(pk) => eds.iter().any(|sig| {
                bastion_crypto::signing::verify_ed25519_strict(pk, &signed, sig).is_ok()
            }),
            WebhookSecret::Hmac(_) => false,
        });
    }
    let index = index.ok_or(SignatureError::Mismatch)?;
    Ok(Verified {
        delivery_id: Some(id.to_owned()),
        timestamp: Some(ts),
        secret_index: index,
    })
}

fn twilio(
    secrets: &[WebhookSecret],
    delivery: &Delivery<'_>,
    public_url: &str,
) -> Result<Verified, SignatureError> {
    let sig = b64_sig(delivery.required("x-twilio-signature")?)?;
    // The URL Twilio called: the configured public one plus the query it was called with.
    let url = match delivery.query.filter(|q| !q.is_empty()) {
        Some(q) => format!("{public_url}?{q}"),
        None => public_url.to_owned(),
    };
    let body_sha = delivery.query.and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "bodySHA256")
            .map(|(_, v)| v.into_owned())
    });
    let is_form = delivery.content_type().is_some_and(|c| {
        c.trim_start()
            .starts_with("application/x-www-form-urlencoded")
    });
    let signed = match body_sha {
        // JSON (any non-form) body: the URL with its bodySHA256 is signed; the hash binds the body.
        Some(expected) => {
            let actual = hex::encode(bastion_crypto::sha256(delivery.body));
            if !bastion_crypto::ct_eq(actual.as_bytes(), expected.to_ascii_lowercase().as_bytes()) {
                return Err(SignatureError::Mismatch);
            }
            url
        }
        None if is_form => {
            let mut params: Vec<(String, String)> = form_urlencoded::parse(delivery.body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            params.sort();
            let mut s = url;
            for (k, v) in params {
                s.push_str(&k);
                s.push_str(&v);
            }
            s
        }
        // Neither form parameters nor a body hash: the body would be unsigned.
        None if !delivery.body.is_empty() => {
            return Err(SignatureError::Malformed("twilio body without bodySHA256"));
        }
        None => url,
    };
    let index = first_match(
        secrets,
        hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        &[signed.as_bytes()],
        &[sig],
    )
    .ok_or(SignatureError::Mismatch)?;
    Ok(Verified {
        delivery_id: delivery
            .header("i-twilio-idempotency-token")?
            .map(str::to_owned),
        timestamp: None,
        secret_index: index,
    })
}
