//! Access tokens as another party sees them (SPEC A2, A5): verified by independent code from
//! the JWKS fetched over HTTP, and refused by Bastion when forged, expired or mis-addressed.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bastion_crypto::jwt::{JwtAlgorithm, JwtSigningKey};
use bastion_testkit::app::{Spawn, TestApp, spawn_app};
use serde_json::{Value, json};

use crate::auth::signup_and_login;
use crate::{assert_problem, client};

async fn jwks(app: &TestApp) -> Value {
    client()
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn parts(token: &str) -> (Value, Value) {
    let mut it = token.split('.');
    let mut next = || -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(it.next().unwrap()).unwrap()).unwrap()
    };
    (next(), next())
}

async fn me_status(app: &TestApp, token: &str) -> reqwest::Response {
    client()
        .get(app.url("/v1/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

fn assert_claims(claims: &Value, header: &Value, jwks: &Value, alg: &str) {
    assert_eq!(header["alg"], alg);
    assert_eq!(
        header["kid"], jwks["keys"][0]["kid"],
        "kid names the JWKS key"
    );
    assert_eq!(claims["iss"], "bastion");
    assert_eq!(claims["aud"], "bastion");
    assert!(claims["sub"].as_str().unwrap().starts_with("usr_"));
    assert!(claims["sid"].as_str().unwrap().starts_with("ses_"));
    assert!(!claims["jti"].as_str().unwrap().is_empty());
    assert_eq!(claims["amr"], json!(["pwd"]));
    let (iat, nbf, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["nbf"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert!(nbf <= iat + 1 && exp - iat == 900, "15 minutes");
}

#[tokio::test]
async fn a2_an_eddsa_token_verifies_with_jwt_compact_from_the_jwks_over_http() {
    use jwt_compact::alg::Ed25519;
    use jwt_compact::jwk::JsonWebKey;
    use jwt_compact::{AlgorithmExt, Claims, TimeOptions, UntrustedToken};

    let app = spawn_app(Spawn::default(), |c| c.tokens.algorithm = "EdDSA".into())
        .await
        .unwrap();
    let tokens = signup_and_login(&app, "eddsa@example.com").await;
    let access = tokens["access_token"].as_str().unwrap();
    let set = jwks(&app).await;
    let jwk: JsonWebKey<'_> = serde_json::from_value(set["keys"][0].clone()).unwrap();
    let key = <Ed25519 as jwt_compact::Algorithm>::VerifyingKey::try_from(&jwk).unwrap();
    let untrusted = UntrustedToken::new(access).unwrap();
    assert_eq!(
        untrusted.header().key_id.as_deref(),
        set["keys"][0]["kid"].as_str()
    );
    let token = Ed25519
        .validator::<Value>(&key)
        .validate(&untrusted)
        .expect("jwt-compact accepts Bastion's signature");
    let claims: &Claims<Value> = token.claims();
    claims
        .validate_expiration(&TimeOptions::default())
        .unwrap()
        .validate_maturity(&TimeOptions::default())
        .unwrap();
    let (header, all) = parts(access);
    assert_claims(&all, &header, &set, "EdDSA");

    // A flipped payload bit fails the independent check too.
    let mut forged: Vec<String> = access.split('.').map(str::to_owned).collect();
    let mut payload = URL_SAFE_NO_PAD.decode(&forged[1]).unwrap();
    payload[10] ^= 1;
    forged[1] = URL_SAFE_NO_PAD.encode(payload);
    let forged = forged.join(".");
    assert!(
        Ed25519
            .validator::<Value>(&key)
            .validate(&UntrustedToken::new(&forged).unwrap())
            .is_err()
    );
    assert_problem(me_status(&app, &forged).await, 401, "invalid_token").await;
}

#[tokio::test]
async fn a2_an_rs256_token_verifies_with_raw_rsa_from_the_jwks_and_forgeries_are_refused() {
    let app = spawn_app(Spawn::default(), |_| {}).await.unwrap();
    let tokens = signup_and_login(&app, "rs256@example.com").await;
    let access = tokens["access_token"].as_str().unwrap();
    let set = jwks(&app).await;

    // Verify with aws-lc-rs directly from n and e: no JWT library involved.
    let n = URL_SAFE_NO_PAD
        .decode(set["keys"][0]["n"].as_str().unwrap())
        .unwrap();
    let e = URL_SAFE_NO_PAD
        .decode(set["keys"][0]["e"].as_str().unwrap())
        .unwrap();
    let (signed, sig) = access.rsplit_once('.').unwrap();
    aws_lc_rs::signature::RsaPublicKeyComponents { n: &n, e: &e }
        .verify(
            &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
            signed.as_bytes(),
            &URL_SAFE_NO_PAD.decode(sig).unwrap(),
        )
        .expect("raw RSA verification from the JWKS");
    let (header, claims) = parts(access);
    assert_claims(&claims, &header, &set, "RS256");

    // Tokens signed with the real key that differ in one claim: a control that passes, then
    // each single fault refused.
    let real = bastion_server::Bastion::open(&app.config).await.unwrap();
    let ring = real.keys.current();
    let signer = ring.token_signer().unwrap();
    let now = jsonwebtoken::get_current_timestamp() as i64;
    let with = |patch: Value| {
        let mut c = claims.clone();
        c["iat"] = json!(now);
        c["nbf"] = json!(now);
        c["exp"] = json!(now + 600);
        for (k, v) in patch.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let control = signer.sign(&with(json!({}))).unwrap();
    assert_eq!(me_status(&app, &control).await.status(), 200, "control");
    for (what, patch) in [
        ("wrong aud", json!({ "aud": "someone-else" })),
        ("wrong iss", json!({ "iss": "evil" })),
        (
            "expired",
            json!({ "iat": now - 7200, "nbf": now - 7200, "exp": now - 3600 }),
        ),
        (
            "not yet valid",
            json!({ "nbf": now + 3600, "exp": now + 7200 }),
        ),
        (
            "unknown session",
            json!({ "sid": "ses_00000000000000000000000000000000" }),
        ),
    ] {
        let t = signer.sign(&with(patch)).unwrap();
        let res = me_status(&app, &t).await;
        assert_eq!(res.status(), 401, "{what}");
        assert_problem(res, 401, "invalid_token").await;
    }

    // A key Bastion never published, even with a plausible kid.
    let pkcs8 = JwtAlgorithm::Rs256.generate_pkcs8().unwrap();
    let stranger = JwtSigningKey::from_pkcs8(JwtAlgorithm::Rs256, "tokens-v9", &pkcs8).unwrap();
    let t = stranger.sign(&with(json!({}))).unwrap();
    assert_problem(me_status(&app, &t).await, 401, "invalid_token").await;

    // `alg: none` with the real kid, and an HS256 token keyed with the public modulus.
    let kid = header["kid"].as_str().unwrap();
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&with(json!({}))).unwrap());
    let none = format!(
        "{}.{body}.",
        URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"none","typ":"JWT","kid":"{kid}"}}"#))
    );
    assert_problem(me_status(&app, &none).await, 401, "invalid_token").await;
    let hs_head = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{kid}"}}"#));
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &n);
    let mac = aws_lc_rs::hmac::sign(&key, format!("{hs_head}.{body}").as_bytes());
    let confused = format!("{hs_head}.{body}.{}", URL_SAFE_NO_PAD.encode(mac.as_ref()));
    assert_problem(me_status(&app, &confused).await, 401, "invalid_token").await;
}
