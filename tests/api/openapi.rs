//! The committed OpenAPI document is the one the code generates, and the one served.

use crate::helpers::{inventory_sync, TestApp, TestUser};

#[test]
fn the_committed_openapi_document_matches_the_code() {
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
        .expect("openapi/openapi.json exists");
    let generated = opsrun::http::openapi::document_json();
    assert!(
        committed == generated,
        "openapi/openapi.json is stale: regenerate it with `cargo run -q -- openapi > openapi/openapi.json`"
    );
}

/// Swagger UI shows a response's first example; without one it makes one up from the
/// Problem schema, which names another status. Every refusal carries its own.
#[test]
fn every_problem_response_has_examples_of_its_own_status() {
    let document: serde_json::Value = serde_json::from_str(&opsrun::http::openapi::document_json()).unwrap();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap().iter().filter(|(_, o)| o.get("responses").is_some()) {
            for (status, response) in operation["responses"].as_object().unwrap() {
                let Some(problem) = response["content"].get("application/problem+json") else { continue };
                let examples =
                    problem["examples"].as_object().map(|e| e.values().collect::<Vec<_>>()).unwrap_or_default();
                assert!(!examples.is_empty(), "{method} {path} {status} has no example");
                for example in examples {
                    assert_eq!(example["value"]["status"].to_string(), *status, "{method} {path}: {example}");
                }
            }
        }
    }
}

#[tokio::test]
async fn the_document_and_swagger_ui_are_served_without_a_token() {
    let app = TestApp::spawn().await;
    let served: serde_json::Value =
        app.client.get(format!("{}/openapi.json", app.address)).send().await.unwrap().json().await.unwrap();
    let generated: serde_json::Value = serde_json::from_str(&opsrun::http::openapi::document_json()).unwrap();
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
    let document: serde_json::Value = serde_json::from_str(&opsrun::http::openapi::document_json()).unwrap();
    let path_of = |operation_id: &str| {
        document["paths"].as_object().unwrap().iter().find_map(|(path, item)| {
            item.as_object().unwrap().values().any(|op| op["operationId"] == operation_id).then_some(path.clone())
        })
    };

    let token = TestUser::admin();
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

/// Every documented problem example: (operation, status, the example's body).
fn documented_examples(document: &serde_json::Value) -> Vec<(String, String, serde_json::Value)> {
    let mut found = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let Some(responses) = operation["responses"].as_object() else { continue };
            for (status, response) in responses {
                let Some(examples) = response["content"]["application/problem+json"]["examples"].as_object() else {
                    continue;
                };
                for example in examples.values() {
                    found.push((format!("{method} {path}"), status.clone(), example["value"].clone()));
                }
            }
        }
    }
    found
}

/// Swagger UI shows each refusal with its own status's example, each operation says
/// what capability it needs, and every `/v1` operation documents `503` with `Retry-After`.
#[test]
fn every_refusal_is_documented_with_an_example_of_its_own_status() {
    let document: serde_json::Value = serde_json::from_str(&opsrun::http::openapi::document_json()).unwrap();
    let examples = documented_examples(&document);
    assert!(examples.len() > 50, "{}", examples.len());
    for (operation, status, example) in &examples {
        assert_eq!(example["status"].to_string(), *status, "{operation} {status}: {example}");
        assert!(example["type"].as_str().unwrap().ends_with(example["code"].as_str().unwrap()));
    }
    for (path, item) in document["paths"].as_object().unwrap().iter().filter(|(path, _)| path.starts_with("/v1/")) {
        assert!(item["description"].as_str().unwrap().contains("405"), "{path}");
        for (method, operation) in item.as_object().unwrap().iter().filter(|(_, op)| op.is_object()) {
            assert!(operation["description"].as_str().unwrap_or_default().contains("**Needs**"), "{method} {path}");
            let unavailable = &operation["responses"]["503"];
            assert!(unavailable["headers"]["Retry-After"].is_object(), "{method} {path}");
            for status in operation["responses"].as_object().unwrap().keys().filter(|s| s.as_str() >= "400") {
                let documented = &operation["responses"][status]["content"]["application/problem+json"]["examples"];
                assert!(documented.as_object().is_some_and(|e| !e.is_empty()), "{method} {path} {status}");
            }
        }
    }
}

/// The documented examples are what the service answers: the same document, but for the
/// request id (and, where the sentence names the request, its detail).
#[tokio::test]
async fn documented_examples_are_what_the_service_really_answers() {
    let app = TestApp::spawn().await;
    let document: serde_json::Value = serde_json::from_str(&opsrun::http::openapi::document_json()).unwrap();
    let example_of = |code: &str| {
        documented_examples(&document)
            .into_iter()
            .find(|(_, _, example)| example["code"] == code)
            .map(|(_, _, example)| example)
            .unwrap_or_else(|| panic!("{code} is documented"))
    };
    let without_request_id = |mut body: serde_json::Value| {
        body.as_object_mut().unwrap().remove("request_id");
        body
    };
    let token = TestUser::admin();
    let url = |path: &str| format!("{}{path}", app.address);
    let unauthenticated = app.client.get(url("/v1/runs")).send().await.unwrap();
    let not_found = app.client.get(url("/v1/runs/987654")).bearer_auth(&token).send().await.unwrap();
    let unsupported = app.client.post(url("/v1/runs")).bearer_auth(&token).body("{}").send().await.unwrap();
    let too_large = app
        .client
        .post(url("/v1/runs"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(vec![b' '; 70_000])
        .send()
        .await
        .unwrap();
    for (code, response) in [
        ("unauthenticated", unauthenticated),
        ("not_found", not_found),
        ("unsupported_media_type", unsupported),
        ("payload_too_large", too_large),
    ] {
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(without_request_id(body), without_request_id(example_of(code)), "{code}");
    }
    app.start(&token, inventory_sync(1, "documented")).await;
    let duplicate: serde_json::Value =
        app.post("/v1/runs", &token, inventory_sync(1, "documented")).await.json().await.unwrap();
    let documented = example_of("duplicate_run");
    for field in ["type", "title", "status", "code"] {
        assert_eq!(duplicate[field], documented[field], "{field}");
    }
    assert!(duplicate["existing_run_id"].is_i64() && documented["existing_run_id"].is_i64());
}
