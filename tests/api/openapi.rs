//! The committed OpenAPI document is the one the code generates, and the one served.

use crate::helpers::{admin_token, inventory_sync, TestApp};

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

/// Every link from `POST /v1/runs` names a real operation (as `operationId`, the spelling
/// OpenAPI requires) and, resolved against a real 201 and 409, reaches the run it names.
#[tokio::test]
async fn links_from_a_started_run_lead_to_that_run() {
    let app = TestApp::spawn().await;
    let document: serde_json::Value = serde_json::from_str(&opsrun::openapi::document_json()).unwrap();
    let path_of = |operation_id: &str| {
        document["paths"].as_object().unwrap().iter().find_map(|(path, item)| {
            item.as_object().unwrap().values().any(|op| op["operationId"] == operation_id).then_some(path.clone())
        })
    };

    let token = admin_token();
    let created = app.post("/v1/runs", &token, inventory_sync(3, "all")).await;
    assert_eq!(created.status(), 201);
    let created: serde_json::Value = created.json().await.unwrap();
    let refused: serde_json::Value = app.post("/v1/runs", &token, inventory_sync(3, "all")).await.json().await.unwrap();

    for (status, body) in [("201", &created), ("409", &refused)] {
        let links = document["paths"]["/v1/runs"]["post"]["responses"][status]["links"].as_object().unwrap();
        assert_eq!(links.len(), 6, "{status}");
        for (name, link) in links {
            let operation_id =
                link["operationId"].as_str().unwrap_or_else(|| panic!("{status} {name}: no operationId"));
            let path = path_of(operation_id).unwrap_or_else(|| panic!("{status} {name}: no operation {operation_id}"));
            let pointer = link["parameters"]["id"].as_str().unwrap().strip_prefix("$response.body#").unwrap();
            assert_eq!(body.pointer(pointer), Some(&created["id"]), "{status} {name}");
            if operation_id == "view_run" {
                let run_path = path.replace("{id}", &created["id"].to_string());
                let viewed: serde_json::Value = app.get(&run_path, &token).await.json().await.unwrap();
                assert_eq!(viewed["id"], created["id"]);
            }
        }
    }
}
