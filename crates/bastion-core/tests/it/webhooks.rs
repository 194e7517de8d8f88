//! Webhook signature schemes (SPEC P2, P6): for each, the provider's published example, a
//! tampered body, a tampered signature, an empty signature, a missing header, a stale and a
//! future timestamp where the scheme signs one, a rotated secret (old and new both accepted),
//! and no secret at all (fail closed).

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bastion_core::webhooks::signature::{
    DEFAULT_TOLERANCE_SECS as TOL, Delivery, Encoding, Scheme, SignatureError as E, WebhookSecret,
    verify,
};

fn secret(scheme: &Scheme, s: &str) -> WebhookSecret {
    WebhookSecret::parse(scheme, s).unwrap()
}

fn hmac_hex(key: &[u8], msg: &[u8]) -> String {
    hex::encode(hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), msg).as_ref())
}

fn deliver<'a>(headers: &'a [(&'a str, &'a str)], body: &'a [u8]) -> Delivery<'a> {
    Delivery {
        headers,
        query: None,
        body,
    }
}

/// One byte of a hex or base64 signature changed.
fn flip(sig: &str) -> String {
    let mut b = sig.as_bytes().to_vec();
    let i = b.len() / 2;
    b[i] = if b[i] == b'a' { b'b' } else { b'a' };
    String::from_utf8(b).unwrap()
}

#[test]
fn p2_p6_github_published_example_tampering_rotation_and_fail_closed() {
    let s = Scheme::GitHub;
    // docs.github.com, "Validating webhook deliveries": this secret and payload give this digest.
    let good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    let key = secret(&s, "It's a Secret to Everybody");
    let h = [("X-Hub-Signature-256", good), ("X-GitHub-Delivery", "d-1")];
    let v = verify(&s, &[key], &deliver(&h, b"Hello, World!"), 0, TOL).unwrap();
    assert_eq!(v.delivery_id.as_deref(), Some("d-1"));
    let keys = || vec![secret(&s, "It's a Secret to Everybody")];
    assert_eq!(
        verify(&s, &keys(), &deliver(&h, b"Hello, World?"), 0, TOL),
        Err(E::Mismatch)
    );
    let bad = flip(good);
    let hb = [("X-Hub-Signature-256", bad.as_str())];
    assert_eq!(
        verify(&s, &keys(), &deliver(&hb, b"Hello, World!"), 0, TOL),
        Err(E::Mismatch)
    );
    let he = [("X-Hub-Signature-256", "sha256=")];
    assert_eq!(
        verify(&s, &keys(), &deliver(&he, b"Hello, World!"), 0, TOL),
        Err(E::EmptySignature)
    );
    assert!(matches!(
        verify(&s, &keys(), &deliver(&[], b"Hello, World!"), 0, TOL),
        Err(E::MissingHeader(_))
    ));
    // Rotation: the old secret and the new one both verify while both are live.
    let rotated = vec![
        secret(&s, "new secret"),
        secret(&s, "It's a Secret to Everybody"),
    ];
    assert_eq!(
        verify(&s, &rotated, &deliver(&h, b"Hello, World!"), 0, TOL)
            .unwrap()
            .secret_index,
        1
    );
    let new_sig = format!("sha256={}", hmac_hex(b"new secret", b"Hello, World!"));
    let hn = [("X-Hub-Signature-256", new_sig.as_str())];
    assert_eq!(
        verify(&s, &rotated, &deliver(&hn, b"Hello, World!"), 0, TOL)
            .unwrap()
            .secret_index,
        0
    );
    assert_eq!(
        verify(&s, &[], &deliver(&h, b"Hello, World!"), 0, TOL),
        Err(E::NoSecret)
    );
    // Two signature headers are ambiguous.
    let hd = [("X-Hub-Signature-256", good), ("x-hub-signature-256", good)];
    assert!(matches!(
        verify(&s, &keys(), &deliver(&hd, b"Hello, World!"), 0, TOL),
        Err(E::DuplicateHeader(_))
    ));
}

#[test]
fn p2_p6_slack_published_example_window_and_tampering() {
    let s = Scheme::Slack;
    // api.slack.com, "Verifying requests from Slack": the example request and its signature.
    let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    let sig = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
    let keys = || vec![secret(&s, "8f742231b10e8888abcd99yyyzzz85a5")];
    let ts = 1_531_420_618;
    let h = [
        ("X-Slack-Request-Timestamp", "1531420618"),
        ("X-Slack-Signature", sig),
    ];
    assert_eq!(
        verify(&s, &keys(), &deliver(&h, body), ts, TOL)
            .unwrap()
            .timestamp,
        Some(ts)
    );
    assert_eq!(
        verify(&s, &keys(), &deliver(&h, b"token=x"), ts, TOL),
        Err(E::Mismatch)
    );
    assert_eq!(
        verify(&s, &keys(), &deliver(&h, body), ts + TOL + 1, TOL),
        Err(E::Stale)
    );
    assert_eq!(
        verify(&s, &keys(), &deliver(&h, body), ts - TOL - 1, TOL),
        Err(E::Future)
    );
    let bad = flip(sig);
    let hb = [
        ("X-Slack-Request-Timestamp", "1531420618"),
        ("X-Slack-Signature", bad.as_str()),
    ];
    assert_eq!(
        verify(&s, &keys(), &deliver(&hb, body), ts, TOL),
        Err(E::Mismatch)
    );
    let he = [
        ("X-Slack-Request-Timestamp", "1531420618"),
        ("X-Slack-Signature", "v0="),
    ];
    assert_eq!(
        verify(&s, &keys(), &deliver(&he, body), ts, TOL),
        Err(E::EmptySignature)
    );
    let hm = [("X-Slack-Signature", sig)];
    assert!(matches!(
        verify(&s, &keys(), &deliver(&hm, body), ts, TOL),
        Err(E::MissingHeader(_))
    ));
    // The timestamp is signed: moving it breaks the signature even inside the window.
    let moved = [
        ("X-Slack-Request-Timestamp", "1531420619"),
        ("X-Slack-Signature", sig),
    ];
    assert_eq!(
        verify(&s, &keys(), &deliver(&moved, body), ts, TOL),
        Err(E::Mismatch)
    );
    let rotated = vec![
        secret(&s, "next"),
        secret(&s, "8f742231b10e8888abcd99yyyzzz85a5"),
    ];
    assert!(verify(&s, &rotated, &deliver(&h, body), ts, TOL).is_ok());
    assert_eq!(
        verify(&s, &[], &deliver(&h, body), ts, TOL),
        Err(E::NoSecret)
    );
}

#[test]
fn p2_p6_stripe_any_v1_against_any_secret_within_300_s_either_way() {
    let s = Scheme::Stripe;
    let (old, new) = ("whsec_old_0123456789", "whsec_new_9876543210");
    let body = br#"{"id":"evt_1","type":"checkout.session.completed"}"#;
    let t = 1_700_000_000i64;
    // Stripe's documented construction: HMAC-SHA256 of "{t}.{payload}" keyed by the secret.
    let sign = |key: &str| {
        hmac_hex(
            key.as_bytes(),
            format!("{t}.{}", std::str::from_utf8(body).unwrap()).as_bytes(),
        )
    };
    // During a rotation Stripe sends one v1 per live secret; the matching one may come first.
    let header = format!("t={t},v1={},v1={},v0=ignored", sign(new), sign(old));
    let h = [("Stripe-Signature", header.as_str())];
    let only_old = || vec![secret(&s, old)];
    assert_eq!(
        verify(&s, &only_old(), &deliver(&h, body), t, TOL)
            .unwrap()
            .timestamp,
        Some(t)
    );
    let only_new = vec![secret(&s, new)];
    assert!(verify(&s, &only_new, &deliver(&h, body), t, TOL).is_ok());
    assert_eq!(
        verify(&s, &only_old(), &deliver(&h, b"{}"), t, TOL),
        Err(E::Mismatch)
    );
    assert_eq!(
        verify(&s, &only_old(), &deliver(&h, body), t + TOL + 1, TOL),
        Err(E::Stale)
    );
    assert_eq!(
        verify(&s, &only_old(), &deliver(&h, body), t - TOL - 1, TOL),
        Err(E::Future)
    );
    assert!(verify(&s, &only_old(), &deliver(&h, body), t + TOL, TOL).is_ok());
    let tampered = format!("t={t},v1={}", flip(&sign(old)));
    let ht = [("Stripe-Signature", tampered.as_str())];
    assert_eq!(
        verify(&s, &only_old(), &deliver(&ht, body), t, TOL),
        Err(E::Mismatch)
    );
    for empty in [
        format!("t={t},v1="),
        format!("t={t}"),
        format!("t={t},v0={}", sign(old)),
    ] {
        let he = [("Stripe-Signature", empty.as_str())];
        assert_eq!(
            verify(&s, &only_old(), &deliver(&he, body), t, TOL),
            Err(E::EmptySignature),
            "{empty}"
        );
    }
    // The timestamp is signed: a replay with a fresh t fails.
    let replay = format!("t={},v1={}", t + 10, sign(old));
    let hr = [("Stripe-Signature", replay.as_str())];
    assert_eq!(
        verify(&s, &only_old(), &deliver(&hr, body), t, TOL),
        Err(E::Mismatch)
    );
    let twice = format!("t={t},t={},v1={}", t + 1, sign(old));
    let h2 = [("Stripe-Signature", twice.as_str())];
    assert!(matches!(
        verify(&s, &only_old(), &deliver(&h2, body), t, TOL),
        Err(E::Malformed(_))
    ));
    assert!(matches!(
        verify(&s, &only_old(), &deliver(&[], body), t, TOL),
        Err(E::MissingHeader(_))
    ));
    assert_eq!(
        verify(&s, &[], &deliver(&h, body), t, TOL),
        Err(E::NoSecret)
    );
}

#[test]
fn p2_p6_standard_webhooks_published_example_v1_v1a_and_tampering() {
    let s = Scheme::StandardWebhooks;
    // The Standard Webhooks specification's example.
    let keys = || vec![secret(&s, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")];
    let body = br#"{"test": 2432232314}"#;
    let ts = 1_614_265_330;
    let sig = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    let with = |sig: &'static str| {
        [
            ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
            ("webhook-timestamp", "1614265330"),
            ("webhook-signature", sig),
        ]
    };
    let h = with(sig);
    let v = verify(&s, &keys(), &deliver(&h, body), ts, TOL).unwrap();
    assert_eq!(
        v.delivery_id.as_deref(),
        Some("msg_p5jXN8AQM9LWM0D4loKWxJek")
    );
    // Several signatures, space-separated: any may match.
    let several = with(
        "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    );
    assert!(verify(&s, &keys(), &deliver(&several, body), ts, TOL).is_ok());
    assert_eq!(
        verify(&s, &keys(), &deliver(&h, b"{}"), ts, TOL),
        Err(E::Mismatch)
    );
    assert_eq!(
        verify(&s, &keys(), &deliver(&h, body), ts + TOL + 1, TOL),
        Err(E::Stale)
    );
    assert_eq!(
        verify(&s, &keys(), &deliver(&h, body), ts - TOL - 1, TOL),
        Err(E::Future)
    );
    let tampered = with("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OF=");
    assert!(verify(&s, &keys(), &deliver(&tampered, body), ts, TOL).is_err());
    // An empty signature never verifies (a published verifier once accepted one).
    for empty in ["", "v1,", "v1, ", "v2,abc"] {
        let he = [
            ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
            ("webhook-timestamp", "1614265330"),
            ("webhook-signature", empty),
        ];
        assert_eq!(
            verify(&s, &keys(), &deliver(&he, body), ts, TOL),
            Err(E::EmptySignature),
            "{empty:?}"
        );
    }
    let missing = [("webhook-id", "msg_1"), ("webhook-signature", sig)];
    assert!(matches!(
        verify(&s, &keys(), &deliver(&missing, body), ts, TOL),
        Err(E::MissingHeader(_))
    ));
    // The id is signed: another id with the same signature fails.
    let other_id = [
        ("webhook-id", "msg_other"),
        ("webhook-timestamp", "1614265330"),
        ("webhook-signature", sig),
    ];
    assert_eq!(
        verify(&s, &keys(), &deliver(&other_id, body), ts, TOL),
        Err(E::Mismatch)
    );
    let rotated = vec![
        secret(&s, "whsec_bmV3IHNlY3JldCBieXRlcw=="),
        secret(&s, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
    ];
    assert_eq!(
        verify(&s, &rotated, &deliver(&h, body), ts, TOL)
            .unwrap()
            .secret_index,
        1
    );
    assert_eq!(
        verify(&s, &[], &deliver(&h, body), ts, TOL),
        Err(E::NoSecret)
    );

    // v1a: Ed25519 with a whpk_ public key.
    let pair = aws_lc_rs::signature::Ed25519KeyPair::from_seed_unchecked(&[9; 32]).unwrap();
    use aws_lc_rs::signature::KeyPair;
    let pk = format!("whpk_{}", STANDARD.encode(pair.public_key().as_ref()));
    let signed = [b"msg_1.1614265330.".as_slice(), body].concat();
    let v1a = format!("v1a,{}", STANDARD.encode(pair.sign(&signed).as_ref()));
    let ha = [
        ("webhook-id", "msg_1"),
        ("webhook-timestamp", "1614265330"),
        ("webhook-signature", v1a.as_str()),
    ];
    let eds = vec![secret(&s, &pk)];
    assert!(verify(&s, &eds, &deliver(&ha, body), ts, TOL).is_ok());
    assert_eq!(
        verify(&s, &eds, &deliver(&ha, b"{}"), ts, TOL),
        Err(E::Mismatch)
    );
    // An HMAC secret never verifies a v1a signature, nor a public key a v1 one.
    assert_eq!(
        verify(&s, &keys(), &deliver(&ha, body), ts, TOL),
        Err(E::Mismatch)
    );
    assert_eq!(
        verify(&s, &eds, &deliver(&h, body), ts, TOL),
        Err(E::Mismatch)
    );
    assert!(WebhookSecret::parse(&s, "not-prefixed").is_err());
}

fn at<'a>(
    headers: &'a [(&'a str, &'a str)],
    query: Option<&'a str>,
    body: &'a [u8],
) -> Delivery<'a> {
    Delivery {
        headers,
        query,
        body,
    }
}

#[test]
fn p2_p6_twilio_published_example_form_and_json_bodies_and_no_url_from_headers() {
    // twilio.com/docs/usage/security: this auth token, URL and parameters give this signature.
    let url = "https://mycompany.com/myapp.php";
    let s = Scheme::Twilio {
        public_url: url.to_owned(),
    };
    let keys = || vec![secret(&s, "12345")];
    let body = b"CallSid=CA1234567890ABCDE&Caller=%2B12349013030&Digits=1234&From=%2B12349013030&To=%2B18005551212";
    let sig = "0/KCTR6DLpKmkAf8muzZqo1nDgQ=";
    let form = "application/x-www-form-urlencoded";
    let q = Some("foo=1&bar=2");
    let h = [("X-Twilio-Signature", sig), ("Content-Type", form)];
    assert!(verify(&s, &keys(), &at(&h, q, body), 0, TOL).is_ok());
    // Another query, another body, or another configured URL: refused.
    assert_eq!(
        verify(&s, &keys(), &at(&h, Some("foo=1&bar=3"), body), 0, TOL),
        Err(E::Mismatch)
    );
    assert_eq!(
        verify(&s, &keys(), &at(&h, q, b"CallSid=CA1&Digits=9"), 0, TOL),
        Err(E::Mismatch)
    );
    let other = Scheme::Twilio {
        public_url: "https://evil.example/myapp.php".into(),
    };
    assert_eq!(
        verify(&other, &[secret(&other, "12345")], &at(&h, q, body), 0, TOL),
        Err(E::Mismatch)
    );
    // Forwarded headers never change the URL that is checked.
    let forwarded = [
        ("X-Twilio-Signature", sig),
        ("Content-Type", form),
        ("X-Forwarded-Host", "evil.example"),
        ("X-Forwarded-Proto", "http"),
    ];
    assert!(verify(&s, &keys(), &at(&forwarded, q, body), 0, TOL).is_ok());
    let empty = [("X-Twilio-Signature", ""), ("Content-Type", form)];
    assert_eq!(
        verify(&s, &keys(), &at(&empty, q, body), 0, TOL),
        Err(E::EmptySignature)
    );
    let none = [("Content-Type", form)];
    assert!(matches!(
        verify(&s, &keys(), &at(&none, q, body), 0, TOL),
        Err(E::MissingHeader(_))
    ));
    let tampered = flip(sig);
    let ht = [
        ("X-Twilio-Signature", tampered.as_str()),
        ("Content-Type", form),
    ];
    assert!(verify(&s, &keys(), &at(&ht, q, body), 0, TOL).is_err());
    let rotated = vec![secret(&s, "67890"), secret(&s, "12345")];
    assert_eq!(
        verify(&s, &rotated, &at(&h, q, body), 0, TOL)
            .unwrap()
            .secret_index,
        1
    );
    assert_eq!(verify(&s, &[], &at(&h, q, body), 0, TOL), Err(E::NoSecret));

    // JSON body: the URL carries bodySHA256 and only the URL is signed; the hash binds the body.
    let json = br#"{"event":"x"}"#;
    let jq = format!("bodySHA256={}", hex::encode(bastion_crypto::sha256(json)));
    let signed = format!("{url}?{jq}");
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, b"12345");
    let js = STANDARD.encode(hmac::sign(&key, signed.as_bytes()).as_ref());
    let hj = [
        ("X-Twilio-Signature", js.as_str()),
        ("Content-Type", "application/json"),
    ];
    assert!(verify(&s, &keys(), &at(&hj, Some(&jq), json), 0, TOL).is_ok());
    assert_eq!(
        verify(
            &s,
            &keys(),
            &at(&hj, Some(&jq), br#"{"event":"y"}"#),
            0,
            TOL
        ),
        Err(E::Mismatch)
    );
    // A JSON body with no hash in the URL would be unsigned: refused.
    assert!(verify(&s, &keys(), &at(&hj, None, json), 0, TOL).is_err());
}

#[test]
fn p2_generic_hmac_with_configured_header_encoding_and_prefix() {
    let body = b"{\"hello\":\"world\"}";
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, b"k1"), body);
    for (encoding, value) in [
        (Encoding::Hex, hex::encode(tag.as_ref())),
        (Encoding::Base64, STANDARD.encode(tag.as_ref())),
    ] {
        let s = Scheme::Generic {
            header: "X-Signature".into(),
            encoding,
            prefix: "sha256=".into(),
        };
        let keys = || vec![secret(&s, "k1")];
        let full = format!("sha256={value}");
        let h = [("x-signature", full.as_str())];
        assert!(verify(&s, &keys(), &deliver(&h, body), 0, TOL).is_ok());
        assert_eq!(
            verify(&s, &keys(), &deliver(&h, b"{}"), 0, TOL),
            Err(E::Mismatch)
        );
        let he = [("X-Signature", "sha256=")];
        assert_eq!(
            verify(&s, &keys(), &deliver(&he, body), 0, TOL),
            Err(E::EmptySignature)
        );
        let hp = [("X-Signature", value.as_str())];
        assert!(
            matches!(
                verify(&s, &keys(), &deliver(&hp, body), 0, TOL),
                Err(E::Malformed(_))
            ),
            "prefix required"
        );
        assert!(matches!(
            verify(&s, &keys(), &deliver(&[], body), 0, TOL),
            Err(E::MissingHeader(_))
        ));
        let rotated = vec![secret(&s, "k2"), secret(&s, "k1")];
        assert_eq!(
            verify(&s, &rotated, &deliver(&h, body), 0, TOL)
                .unwrap()
                .secret_index,
            1
        );
        assert_eq!(
            verify(&s, &[], &deliver(&h, body), 0, TOL),
            Err(E::NoSecret)
        );
        assert!(WebhookSecret::parse(&s, "  ").is_err());
    }
}

/// P2: secrets anyone can sign with are refused. An empty or short `whsec_` key, a guessable HMAC
/// secret and a small-order Ed25519 key (under which "R = identity, s = 0" verifies any message)
/// are refused where an admin sets them; a small-order `whpk_` key does not even parse, and a
/// forged small-order signature never verifies.
#[test]
fn p2_webhook_secrets_anyone_could_sign_with_are_refused() {
    let sw = Scheme::StandardWebhooks;
    let weak =
        |scheme: &Scheme, s: &str| WebhookSecret::parse(scheme, s).and_then(|k| k.check_strength());
    assert!(weak(&sw, "whsec_").is_err(), "empty key");
    assert!(weak(&sw, &format!("whsec_{}", STANDARD.encode([7u8; 8]))).is_err());
    assert!(weak(&sw, &format!("whsec_{}", STANDARD.encode([7u8; 32]))).is_err());
    assert!(weak(&Scheme::Stripe, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa").is_err());
    assert!(weak(&Scheme::Stripe, "short").is_err());
    // What the providers generate passes.
    assert!(weak(&sw, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_ok());
    assert!(weak(&Scheme::Stripe, "whsec_5WbX5kEWLlfzsGNjH64I8lOOqUB6e8FH").is_ok());
    // The identity point as a public key, with and without its sign bit.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    for key in [identity, {
        let mut k = identity;
        k[31] |= 0x80;
        k
    }] {
        assert!(WebhookSecret::parse(&sw, &format!("whpk_{}", STANDARD.encode(key))).is_err());
    }
    // A real key with the forged signature: still refused (strict verification checks R).
    let real = bastion_crypto::signing::Ed25519Signer::from_seed("wh-v1", &[3; 32]).unwrap();
    let pk = format!("whpk_{}", STANDARD.encode(real.public_key()));
    let keys = [secret(&sw, &pk)];
    let mut forged = identity.to_vec();
    forged.extend([0u8; 32]);
    let ts = 1_700_000_000i64;
    let sig = format!("v1a,{}", STANDARD.encode(&forged));
    let ts_s = ts.to_string();
    let h = [
        ("webhook-id", "msg_1"),
        ("webhook-timestamp", ts_s.as_str()),
        ("webhook-signature", sig.as_str()),
    ];
    assert_eq!(
        verify(&sw, &keys, &deliver(&h, b"{}"), ts, TOL),
        Err(E::Mismatch)
    );
    // And the genuine signature of the real key verifies.
    let good = real.sign(format!("msg_1.{ts}.{{}}").as_bytes());
    let sig = format!("v1a,{}", STANDARD.encode(&good));
    let h = [
        ("webhook-id", "msg_1"),
        ("webhook-timestamp", ts_s.as_str()),
        ("webhook-signature", sig.as_str()),
    ];
    assert!(verify(&sw, &keys, &deliver(&h, b"{}"), ts, TOL).is_ok());
}
