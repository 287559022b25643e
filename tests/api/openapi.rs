//! The committed OpenAPI document is the one the code generates, and the one served.

use crate::helpers::TestApp;

#[test]
fn the_committed_openapi_document_matches_the_code() {
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
        .expect("openapi/openapi.json exists");
    let generated = opsrun::openapi::document_json();
    assert!(
        committed == generated,
        "openapi/openapi.json is stale: regenerate it with `cargo run -q -- openapi > openapi/openapi.json`"
    );
}

#[tokio::test]
async fn the_document_and_swagger_ui_are_served_without_a_token() {
    let app = TestApp::spawn().await;
    let served: serde_json::Value =
        app.client.get(format!("{}/openapi.json", app.address)).send().await.unwrap().json().await.unwrap();
    let generated: serde_json::Value = serde_json::from_str(&opsrun::openapi::document_json()).unwrap();
    assert_eq!(served, generated);
    assert!(served["openapi"].as_str().unwrap().starts_with("3.1"));
    assert!(served["components"]["securitySchemes"]["bearer"].is_object());

    let docs = app.client.get(format!("{}/docs/", app.address)).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.unwrap().contains("swagger"));
    for probe in ["/healthz", "/readyz"] {
        assert_eq!(app.client.get(format!("{}{probe}", app.address)).send().await.unwrap().status(), 200, "{probe}");
    }
}
