//! Readiness on both backends, security.txt (SPEC T6) and the OpenAPI document.

use bastion_testkit::app::{Spawn, spawn_app};

use crate::{assert_hardened, assert_problem, client};

#[tokio::test]
async fn readyz_is_200_on_sqlite() {
    let app = spawn_app(Spawn::default(), |_| {}).await.unwrap();
    let res = client().get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_hardened(&res);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["status"], "ready");
}

#[tokio::test]
async fn readyz_is_200_on_postgres() {
    let Some(app) = spawn_app(
        Spawn {
            postgres: true,
            ..Default::default()
        },
        |_| {},
    )
    .await
    else {
        return;
    };
    assert!(app.config.database_url.starts_with("postgres"));
    let res = client().get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["status"], "ready");
}

#[tokio::test]
async fn t6_security_txt_is_404_problem_without_a_contact() {
    let app = spawn_app(Spawn::default(), |_| {}).await.unwrap();
    let res = client()
        .get(app.url("/.well-known/security.txt"))
        .send()
        .await
        .unwrap();
    assert_problem(res, 404, "not_found").await;
}

#[tokio::test]
async fn t6_security_txt_serves_the_configured_contact_and_an_expiry() {
    let app = spawn_app(Spawn::default(), |cfg| {
        cfg.security_txt.contact = vec!["mailto:security@example.com".into()];
    })
    .await
    .unwrap();
    let res = client()
        .get(app.url("/.well-known/security.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_hardened(&res);
    let ct = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("text/plain"), "{ct}");
    let body = res.text().await.unwrap();
    assert!(
        body.lines()
            .any(|l| l == "Contact: mailto:security@example.com"),
        "{body}"
    );
    assert!(body.lines().any(|l| l.starts_with("Expires: ")), "{body}");
}

#[tokio::test]
async fn openapi_json_is_3_1_and_lists_the_health_routes() {
    let app = spawn_app(Spawn::default(), |_| {}).await.unwrap();
    let res = client().get(app.url("/openapi.json")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_hardened(&res);
    let doc: serde_json::Value = res.json().await.unwrap();
    let version = doc["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3.1"), "openapi {version:?}");
    let paths = doc["paths"].as_object().expect("paths");
    for p in ["/healthz", "/readyz"] {
        assert!(paths.contains_key(p), "{p} missing from {:?}", paths.keys());
    }
}

#[tokio::test]
async fn a5_jwks_publishes_the_token_key_and_verifies_its_tokens_over_http() {
    let app = spawn_app(Spawn::default(), |_| {}).await.unwrap();
    let res = client()
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_hardened(&res);
    let jwks: jsonwebtoken::jwk::JwkSet = res.json().await.unwrap();
    assert_eq!(jwks.keys.len(), 1);
    let kid = jwks.keys[0].common.key_id.clone().unwrap();
    assert!(kid.starts_with("tokens-v1-"), "{kid}");
    assert!(
        matches!(
            jwks.keys[0].algorithm,
            jsonwebtoken::jwk::AlgorithmParameters::RSA(_)
        ),
        "RS256 by default"
    );

    // The same database opened beside the server signs with the key the JWKS publishes.
    let other = bastion_server::Bastion::open(&app.config).await.unwrap();
    let now = jsonwebtoken::get_current_timestamp();
    let claims = serde_json::json!({ "iss": "i", "aud": "a", "sub": "usr_1", "iat": now, "nbf": now, "exp": now + 60 });
    let token = other
        .keys
        .current()
        .token_signer()
        .unwrap()
        .sign(&claims)
        .unwrap();
    let verifier = bastion_crypto::jwt::JwtVerifier::new(&jwks, "i", "a", 5).unwrap();
    assert!(verifier.verify::<serde_json::Value>(&token).is_ok());
}
