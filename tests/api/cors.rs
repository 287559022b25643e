//! Browsers on other origins: CORS preflights and responses, configured by
//! `OPSRUN_CORS_ORIGINS`, and nothing at all when it is unset.

use opsrun::config::CorsOrigins;
use reqwest::{Method, Response};

use crate::helpers::{fresh_database, TestApp, TestUser};

const SPA: &str = "http://localhost:5173";

async fn app_allowing(origins: CorsOrigins) -> TestApp {
    TestApp::spawn_with(fresh_database(), |config| config.cors_origins = origins).await
}

async fn preflight(app: &TestApp, origin: &str) -> Response {
    app.client
        .request(Method::OPTIONS, format!("{}/v1/runs", app.address))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "authorization, content-type, idempotency-key")
        .send()
        .await
        .unwrap()
}

fn header<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).map(|v| v.to_str().unwrap())
}

fn listed(value: Option<&str>) -> Vec<String> {
    value.unwrap_or_default().split(',').map(|v| v.trim().to_ascii_lowercase()).collect()
}

#[tokio::test]
async fn an_allowed_origin_gets_its_preflight_granted_with_204() {
    let app = app_allowing(CorsOrigins::Exact(vec![SPA.into()])).await;
    let response = preflight(&app, SPA).await;
    assert_eq!(response.status(), 204);
    assert_eq!(header(&response, "access-control-allow-origin"), Some(SPA));
    assert!(listed(header(&response, "access-control-allow-methods")).contains(&"post".into()));
    let allowed = listed(header(&response, "access-control-allow-headers"));
    for wanted in ["authorization", "content-type", "idempotency-key"] {
        assert!(allowed.contains(&wanted.into()), "{allowed:?}");
    }
    assert!(header(&response, "access-control-max-age").is_some());
    assert!(listed(header(&response, "vary")).iter().any(|v| v == "origin"));
    assert_eq!(header(&response, "access-control-allow-credentials"), None, "bearer tokens need no credentials");
}

#[tokio::test]
async fn an_allowed_origin_may_read_location_link_and_the_request_id() {
    let app = app_allowing(CorsOrigins::Exact(vec![SPA.into()])).await;
    let response = app
        .client
        .get(format!("{}/v1/runs", app.address))
        .bearer_auth(TestUser::admin())
        .header("Origin", SPA)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "access-control-allow-origin"), Some(SPA));
    let exposed = listed(header(&response, "access-control-expose-headers"));
    for wanted in ["location", "link", "x-request-id", "etag", "retry-after", "idempotent-replayed"] {
        assert!(exposed.contains(&wanted.into()), "{exposed:?}");
    }
}

#[tokio::test]
async fn another_origin_gets_no_cors_headers_and_no_500() {
    let app = app_allowing(CorsOrigins::Exact(vec![SPA.into()])).await;
    let refused = preflight(&app, "http://evil.example").await;
    assert!(refused.status().is_client_error(), "{}", refused.status());
    assert_eq!(header(&refused, "access-control-allow-origin"), None);
    // Non-browser clients that happen to send an Origin are served as usual.
    let plain = app
        .client
        .get(format!("{}/v1/runs", app.address))
        .bearer_auth(TestUser::admin())
        .header("Origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 200);
    assert_eq!(header(&plain, "access-control-allow-origin"), None);
}

#[tokio::test]
async fn a_star_allows_any_origin_without_credentials() {
    let app = app_allowing(CorsOrigins::Any).await;
    let response = preflight(&app, "https://anywhere.example").await;
    assert_eq!(response.status(), 204);
    assert_eq!(header(&response, "access-control-allow-origin"), Some("*"));
}

#[tokio::test]
async fn with_no_origins_configured_nothing_about_cors_changes() {
    let app = TestApp::spawn().await;
    let response = preflight(&app, SPA).await;
    assert_eq!(response.status(), 405, "no route answers OPTIONS");
    assert_eq!(header(&response, "access-control-allow-origin"), None);
}
