//! Authorization (docs/CONTRACT.md): outside your workspace or tenants → 404 (byte-identical to a missing run),
//! inside but lacking the capability → 403, and lists show only what you may view.

use serde_json::{json, Value};

use crate::helpers::{assert_problem, claims, inventory_sync, mint, problem_without_request_id, TestApp, TestUser};

/// The body of a 404, without the request id (the one part that varies per request).
async fn not_found_body(app: &TestApp, path: &str, token: &str) -> String {
    let (status, body) = problem_without_request_id(app.get(path, token).await).await;
    assert_eq!(status, 404, "{path}");
    body
}

#[tokio::test]
async fn foreign_workspace_foreign_tenant_and_missing_runs_answer_identical_404s_apart_from_request_ids() {
    let app = TestApp::spawn().await;
    let run = app.start(&TestUser::admin(), inventory_sync(5, "a")).await;
    let other_workspace = mint(&claims(2, json!("*"), &["inventory.sync"]));
    let other_tenant = TestUser::with(json!([6, 7]), &["inventory.sync"]);
    let member = TestUser::with(json!([5]), &["inventory.sync"]);

    let missing = not_found_body(&app, "/v1/runs/987654", &member).await;
    for path in [format!("/v1/runs/{run}"), format!("/v1/runs/{run}/events")] {
        assert_eq!(not_found_body(&app, &path, &other_workspace).await, missing, "{path}");
        assert_eq!(not_found_body(&app, &path, &other_tenant).await, missing, "{path}");
        assert_eq!(app.get(&path, &member).await.status(), 200, "{path}");
    }
    for verb in ["start", "progress", "complete", "cancel"] {
        let path = format!("/v1/runs/{run}/{verb}");
        let worker_elsewhere = mint(&claims(2, json!("*"), &["operations.execute"]));
        let body = if verb == "complete" { json!({"outcome": "succeeded"}) } else { json!({}) };
        let (status, body) = problem_without_request_id(app.post(&path, &worker_elsewhere, body).await).await;
        assert_eq!((status, body), (404, missing.clone()), "{path}");
    }
}

#[tokio::test]
async fn a_member_without_the_view_capability_gets_403() {
    let app = TestApp::spawn().await;
    let run = app.start(&TestUser::admin(), inventory_sync(5, "a")).await;
    let lacking = TestUser::with(json!([5]), &["policies.sync"]);
    let problem = assert_problem(app.get(&format!("/v1/runs/{run}"), &lacking).await, 403, "forbidden").await;
    assert!(problem["detail"].as_str().unwrap().contains("inventory.sync"));
    assert_problem(app.get(&format!("/v1/runs/{run}/events"), &lacking).await, 403, "forbidden").await;
}

#[tokio::test]
async fn provider_connection_view_can_view_but_not_start_a_connection_check() {
    let app = TestApp::spawn().await;
    let check = json!({"type": "provider_connection_verify", "tenant_id": 5, "inputs": {"provider_connection_id": 3}});
    let viewer = TestUser::with(json!([5]), &["provider_connections.view"]);
    let problem = assert_problem(app.post("/v1/runs", &viewer, check.clone()).await, 403, "forbidden").await;
    assert!(problem["detail"].as_str().unwrap().contains("provider_connections.manage"));

    let manager = TestUser::with(json!([5]), &["provider_connections.manage"]);
    let run = app.start(&manager, check).await;
    assert_eq!(app.get(&format!("/v1/runs/{run}"), &viewer).await.status(), 200);
    // The start capability is not the view capability for this type.
    assert_problem(app.get(&format!("/v1/runs/{run}"), &manager).await, 403, "forbidden").await;
}

#[tokio::test]
async fn starting_for_a_tenant_outside_the_token_is_404() {
    let app = TestApp::spawn().await;
    let member = TestUser::with(json!([5]), &["inventory.sync"]);
    assert_problem(app.post("/v1/runs", &member, inventory_sync(6, "a")).await, 404, "tenant_not_found").await;
    let nobody = mint(&claims(1, Value::Null, &["inventory.sync"]));
    assert_problem(app.post("/v1/runs", &nobody, inventory_sync(5, "a")).await, 404, "tenant_not_found").await;
    app.start(&member, inventory_sync(5, "a")).await;
    app.start(&TestUser::with(json!("*"), &["inventory.sync"]), inventory_sync(6, "a")).await;
}

#[tokio::test]
async fn worker_moves_need_operations_execute_and_cancel_also_takes_the_start_capability() {
    let app = TestApp::spawn().await;
    let starter = TestUser::with(json!([5]), &["inventory.sync"]);
    let run = app.start(&starter, inventory_sync(5, "a")).await;
    for (verb, body) in [("start", json!({})), ("progress", json!({})), ("complete", json!({"outcome": "succeeded"}))] {
        let response = app.post(&format!("/v1/runs/{run}/{verb}"), &starter, body).await;
        let problem = assert_problem(response, 403, "forbidden").await;
        assert!(problem["detail"].as_str().unwrap().contains("operations.execute"));
    }
    let cancelled: Value = app.post(&format!("/v1/runs/{run}/cancel"), &starter, json!({})).await.json().await.unwrap();
    assert_eq!(cancelled["outcome"], "cancelled");
}

#[tokio::test]
async fn lists_silently_hold_only_runs_the_caller_may_view() {
    let app = TestApp::spawn().await;
    let admin = TestUser::admin();
    let visible = app.start(&admin, inventory_sync(5, "a")).await;
    app.start(&admin, inventory_sync(6, "a")).await; // other tenant
    app.start(&admin, json!({"type": "policy_sync", "tenant_id": 5, "inputs": {"selection_hash": "a"}})).await; // other capability
    let workspace_run = app.start(&admin, json!({"type": "workspace_audit_export"})).await;
    let elsewhere = mint(&claims(2, json!("*"), &["inventory.sync", "audit.export"]));
    app.start(&elsewhere, inventory_sync(5, "a")).await; // other workspace

    let member = TestUser::with(json!([5]), &["inventory.sync", "audit.export"]);
    let page: Value = app.get("/v1/runs", &member).await.json().await.unwrap();
    let ids: Vec<i64> = page["items"].as_array().unwrap().iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, vec![workspace_run, visible]);

    // Asking for a tenant outside the token gives an empty list; your own tenant, its runs.
    let page: Value = app.get("/v1/runs?tenant_id=6", &member).await.json().await.unwrap();
    assert_eq!(page["items"], json!([]));
    let page: Value = app.get("/v1/runs?tenant_id=5", &member).await.json().await.unwrap();
    assert_eq!(
        page["items"].as_array().unwrap().iter().map(|r| r["id"].as_i64().unwrap()).collect::<Vec<_>>(),
        vec![visible]
    );
    // Asking for a type you may not view gives an empty list, not an error.
    let page: Value = app.get("/v1/runs?type=policy_sync", &member).await.json().await.unwrap();
    assert_eq!(page["items"], json!([]));
    // tenants "*" sees every tenant of the workspace, and nothing of another workspace.
    let star = TestUser::with(json!("*"), &["inventory.sync"]);
    let page: Value = app.get("/v1/runs", &star).await.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
}
