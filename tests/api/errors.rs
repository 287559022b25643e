//! Bad requests get problem+json bodies with stable codes, never plain text or a 500.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{assert_problem, problem_without_request_id, TestApp, TestUser};

#[tokio::test]
async fn malformed_json_is_400_problem_json() {
    let app = TestApp::spawn().await;
    let response = app
        .client
        .post(format!("{}/v1/runs", app.address))
        .bearer_auth(TestUser::admin())
        .header("content-type", "application/json")
        .body("{\"type\": ")
        .send()
        .await
        .unwrap();
    assert_problem(response, 400, "malformed_json").await;
}

#[tokio::test]
async fn a_body_over_64_kib_is_413_problem_json() {
    let app = TestApp::spawn().await;
    let huge = json!({"type": "inventory_sync", "tenant_id": 1, "context": {"blob": "x".repeat(70 * 1024)}});
    let response = app.post("/v1/runs", &TestUser::admin(), huge).await;
    assert_problem(response, 413, "payload_too_large").await;
}

#[tokio::test]
async fn a_non_json_body_is_415_problem_json() {
    let app = TestApp::spawn().await;
    for content_type in [Some("text/plain"), Some("application/x-www-form-urlencoded"), None] {
        let mut request =
            app.client.post(format!("{}/v1/runs", app.address)).bearer_auth(TestUser::admin()).body("type=x");
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        assert_problem(request.send().await.unwrap(), 415, "unsupported_media_type").await;
    }
}

#[tokio::test]
async fn a_wrongly_shaped_body_is_422_problem_json() {
    let app = TestApp::spawn().await;
    for body in [
        json!([1, 2]),
        json!({"type": 5}),
        json!({"type": "inventory_sync", "surprise": 1}),
        json!({"type": "policy_sync", "inputs": "x"}),
    ] {
        assert_problem(app.post("/v1/runs", &TestUser::admin(), body).await, 422, "invalid_body").await;
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problem_json() {
    let app = TestApp::spawn().await;
    assert_problem(app.get("/v2/anything", &TestUser::admin()).await, 404, "route_not_found").await;
    let delete = app.request(Method::DELETE, "/v1/runs", Some(&TestUser::admin()), None).await;
    assert_problem(delete, 405, "method_not_allowed").await;
}

#[tokio::test]
async fn legacy_run_urls_answer_404_and_never_redirect() {
    let app = TestApp::spawn().await;
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for path in [
        "/admin/t/5/inventory-sync-runs",
        "/admin/t/5/inventory-sync-runs/12",
        "/admin/entra-group-sync-runs",
        "/admin/entra-group-sync-runs/3",
        "/v1/inventory-sync-runs/1",
        "/v1/entra-group-sync-runs",
        "/v1/backup-schedule-runs/9",
    ] {
        let response =
            client.get(format!("{}{path}", app.address)).bearer_auth(TestUser::admin()).send().await.unwrap();
        assert!(response.headers().get("location").is_none(), "{path} redirects");
        assert_problem(response, 404, "route_not_found").await;
    }
}

#[tokio::test]
async fn a_non_numeric_run_id_is_the_same_404_as_a_missing_run() {
    let app = TestApp::spawn().await;
    let missing = problem_without_request_id(app.get("/v1/runs/999999", &TestUser::admin()).await).await;
    for path in ["/v1/runs/abc", "/v1/runs/99999999999999999999999", "/v1/runs/-1"] {
        assert_eq!(problem_without_request_id(app.get(path, &TestUser::admin()).await).await, missing, "{path}");
    }
}

#[tokio::test]
async fn every_documented_operation_refuses_a_query_parameter_it_does_not_take() {
    let app = TestApp::spawn().await;
    let id = crate::helpers::started_run(&app).await;
    let document: serde_json::Value =
        app.client.get(format!("{}/openapi.json", app.address)).send().await.unwrap().json().await.unwrap();
    let mut checked = 0;
    for (template, item) in document["paths"].as_object().unwrap() {
        let path = template.replace("{id}", &id.to_string()).replace("{schedule_id}", "1");
        for method in
            item.as_object().unwrap().keys().filter(|key| ["get", "post", "put", "delete"].contains(&key.as_str()))
        {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let response =
                app.request(method.clone(), &format!("{path}?surprise=1"), Some(&TestUser::admin()), None).await;
            let problem = assert_problem(response, 400, "invalid_query").await;
            let detail = problem["detail"].as_str().unwrap();
            assert!(detail.contains("`surprise` is not a query parameter of"), "{method} {path}: {detail}");
            checked += 1;
        }
    }
    assert!(checked >= 13, "only {checked} operations documented");
}

#[tokio::test]
async fn the_refusal_names_the_parameters_the_route_takes() {
    let app = TestApp::spawn().await;
    let id = crate::helpers::started_run(&app).await;
    let problem = assert_problem(
        app.get(&format!("/v1/runs/{id}/events?afterr=3"), &TestUser::admin()).await,
        400,
        "invalid_query",
    )
    .await;
    assert!(problem["detail"].as_str().unwrap().ends_with("it takes `after`."), "{problem}");
    let problem =
        assert_problem(app.get(&format!("/v1/runs/{id}?x=1"), &TestUser::admin()).await, 400, "invalid_query").await;
    assert!(problem["detail"].as_str().unwrap().contains("takes"), "{problem}");
}
