//! Token verification (docs/CONTRACT.md, "Authorization"): every refusal is a 401 problem
//! with `WWW-Authenticate: Bearer`, and the algorithm is pinned to the configured key.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use opsrun::http::auth::{AuthConfig, JwtKey};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{assert_problem, claims, fresh_database, mint, test_auth, TestApp, TestUser, SECRET};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}")).unwrap()
}

fn sign(algorithm: Algorithm, key: &EncodingKey, claims: &impl serde::Serialize) -> String {
    jsonwebtoken::encode(&Header::new(algorithm), claims, key).unwrap()
}

async fn assert_unauthenticated(app: &TestApp, token: Option<&str>, reason: &str) {
    let response = app.request(Method::GET, "/v1/runs", token, None).await;
    assert!(
        response.headers().get("www-authenticate").is_some_and(|v| v.to_str().unwrap().starts_with("Bearer")),
        "{reason}: no WWW-Authenticate"
    );
    let body = assert_problem(response, 401, "unauthenticated").await;
    assert!(body["detail"].as_str().unwrap().contains(reason), "{body}");
}

#[tokio::test]
async fn a_valid_token_is_accepted() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/v1/runs", &TestUser::admin()).await.status(), 200);
}

#[tokio::test]
async fn missing_malformed_expired_and_immature_tokens_are_refused() {
    let app = TestApp::spawn().await;
    assert_unauthenticated(&app, None, "no Authorization header").await;
    let raw =
        app.client.get(format!("{}/v1/runs", app.address)).header("authorization", "Basic abc").send().await.unwrap();
    assert_problem(raw, 401, "unauthenticated").await;
    assert_unauthenticated(&app, Some("not-a-jwt"), "malformed").await;

    let mut expired = claims(1, json!("*"), &[]);
    expired.exp = chrono::Utc::now().timestamp() - 3600;
    assert_unauthenticated(&app, Some(&mint(&expired)), "expired").await;

    let mut immature = claims(1, json!("*"), &[]);
    immature.nbf = Some(chrono::Utc::now().timestamp() + 3600);
    assert_unauthenticated(&app, Some(&mint(&immature)), "not valid yet").await;
}

#[tokio::test]
async fn wrong_keys_and_other_algorithms_are_refused() {
    let app = TestApp::spawn().await;
    let good = claims(1, json!("*"), &[]);
    let wrong_key = sign(Algorithm::HS256, &EncodingKey::from_secret(b"another-secret-another-secret-0123"), &good);
    assert_unauthenticated(&app, Some(&wrong_key), "signature").await;

    // The same secret with another HMAC algorithm: no algorithm switching.
    let hs384 = sign(Algorithm::HS384, &EncodingKey::from_secret(SECRET), &good);
    assert_unauthenticated(&app, Some(&hs384), "algorithm").await;

    // alg: none, unsigned.
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&good).unwrap());
    assert_unauthenticated(&app, Some(&format!("{header}.{payload}.")), "malformed").await;
}

#[tokio::test]
async fn tokens_without_required_claims_are_refused() {
    let app = TestApp::spawn().await;
    let key = EncodingKey::from_secret(SECRET);
    let exp = chrono::Utc::now().timestamp() + 600;
    let no_workspace = sign(Algorithm::HS256, &key, &json!({"sub": "1", "exp": exp, "tenants": "*"}));
    assert_unauthenticated(&app, Some(&no_workspace), "workspace_id").await;
    let no_exp = sign(Algorithm::HS256, &key, &json!({"sub": "1", "workspace_id": 1}));
    assert_unauthenticated(&app, Some(&no_exp), "exp").await;
    let bad_tenants =
        sign(Algorithm::HS256, &key, &json!({"sub": "1", "workspace_id": 1, "exp": exp, "tenants": "all"}));
    assert_unauthenticated(&app, Some(&bad_tenants), "tenants").await;
}

#[tokio::test]
async fn issuer_and_audience_are_checked_when_configured() {
    let auth = AuthConfig { issuer: Some("https://id.example".into()), audience: Some("opsrun".into()), ..test_auth() };
    let app = TestApp::spawn_on(fresh_database(), auth).await;
    let mut good = claims(1, json!("*"), &[]);
    good.iss = Some("https://id.example".into());
    good.aud = Some("opsrun".into());
    assert_eq!(app.get("/v1/runs", &mint(&good)).await.status(), 200);

    let mut wrong_issuer = good.clone();
    wrong_issuer.iss = Some("https://evil.example".into());
    assert_unauthenticated(&app, Some(&mint(&wrong_issuer)), "issuer").await;
    let mut wrong_audience = good.clone();
    wrong_audience.aud = Some("someone-else".into());
    assert_unauthenticated(&app, Some(&mint(&wrong_audience)), "audience").await;
    let mut no_audience = good;
    no_audience.aud = None;
    assert_unauthenticated(&app, Some(&mint(&no_audience)), "aud").await;
}

#[tokio::test]
async fn rs256_and_es256_public_keys_verify_their_own_algorithm_only() {
    for (public, private, algorithm) in
        [("rsa-public.pem", "rsa-private.pem", Algorithm::RS256), ("ec-public.pem", "ec-private.pem", Algorithm::ES256)]
    {
        let key = JwtKey::from_public_pem(fixture(public)).unwrap();
        let app = TestApp::spawn_on(fresh_database(), AuthConfig { key, ..test_auth() }).await;
        let encoding = match algorithm {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&fixture(private)).unwrap(),
            _ => EncodingKey::from_ec_pem(&fixture(private)).unwrap(),
        };
        let good = claims(1, json!("*"), &[]);
        assert_eq!(app.get("/v1/runs", &sign(algorithm, &encoding, &good)).await.status(), 200, "{algorithm:?}");

        // The classic confusion attack: HS256 "signed" with the public key's bytes.
        let confused = sign(Algorithm::HS256, &EncodingKey::from_secret(&fixture(public)), &good);
        assert_unauthenticated(&app, Some(&confused), "algorithm").await;
        // And a token for the shared secret is refused by a public-key service.
        assert_unauthenticated(&app, Some(&mint(&good)), "algorithm").await;
    }
}

#[tokio::test]
async fn the_initiator_comes_from_name_else_sub() {
    let app = TestApp::spawn().await;
    let caps = ["inventory.sync"];
    let mut named = claims(1, json!("*"), &caps);
    named.sub = "4242".into();
    let id = app.start(&mint(&named), crate::helpers::inventory_sync(1, "a")).await;
    let run: Value = app.get(&format!("/v1/runs/{id}"), &mint(&named)).await.json().await.unwrap();
    assert_eq!((run["initiator_name"].as_str(), run["user_id"].as_i64()), (Some("Test User"), Some(4242)));

    let mut service = claims(1, json!("*"), &caps);
    service.sub = "scheduler@svc".into();
    service.name = None;
    let id = app.start(&mint(&service), crate::helpers::inventory_sync(1, "b")).await;
    let run: Value = app.get(&format!("/v1/runs/{id}"), &mint(&service)).await.json().await.unwrap();
    assert_eq!((run["initiator_name"].as_str(), run["user_id"].as_i64()), (Some("scheduler@svc"), None));
}

#[tokio::test]
async fn the_clock_leeway_on_exp_is_a_setting() {
    let recently_expired = {
        let mut expired = claims(1, json!("*"), &["inventory.sync"]);
        expired.exp = chrono::Utc::now().timestamp() - 20;
        mint(&expired)
    };
    // The default tolerates 60 s of skew; a strict deployment can allow none.
    let default = TestApp::spawn().await;
    assert_eq!(default.get("/v1/runs", &recently_expired).await.status(), 200);
    let strict =
        TestApp::spawn_on(fresh_database(), AuthConfig { leeway: std::time::Duration::ZERO, ..test_auth() }).await;
    let problem = assert_problem(strict.get("/v1/runs", &recently_expired).await, 401, "unauthenticated").await;
    assert!(problem["detail"].as_str().unwrap().contains("expired"), "{problem}");
}

#[tokio::test]
async fn a_token_remembered_as_verified_is_refused_once_it_expires() {
    let app =
        TestApp::spawn_on(fresh_database(), AuthConfig { leeway: std::time::Duration::ZERO, ..test_auth() }).await;
    let mut soon = claims(1, json!("*"), &[]);
    soon.exp = chrono::Utc::now().timestamp() + 2;
    let token = mint(&soon);
    assert_eq!(app.get("/v1/runs", &token).await.status(), 200, "verified, and remembered");
    assert_eq!(app.get("/v1/runs", &token).await.status(), 200);
    let past_exp = (soon.exp + 1) * 1000 - chrono::Utc::now().timestamp_millis();
    tokio::time::sleep(std::time::Duration::from_millis(past_exp.max(0) as u64 + 50)).await;
    assert_unauthenticated(&app, Some(&token), "expired").await;
}
