//! Dispatch-time creation and the three identity policies (docs/CONTRACT.md, "Run identity"), enforced by the
//! database even under concurrent starts across instances.

use std::collections::HashSet;

use diesel::prelude::*;
use serde_json::{json, Value};

use crate::helpers::{assert_problem, complete, inventory_sync, spawn_all, TestApp, TestUser};

#[tokio::test]
async fn a_start_creates_a_queued_run_with_its_location_and_created_event() {
    let app = TestApp::spawn().await;
    let response = app.post("/v1/runs", &TestUser::admin(), inventory_sync(3, "sel-1")).await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let run: Value = response.json().await.unwrap();
    assert_eq!(location, format!("/v1/runs/{}", run["id"]));
    assert_eq!((run["status"].as_str(), run["outcome"].as_str()), (Some("queued"), Some("pending")));
    assert_eq!(run["type_label"], "Inventory sync");
    assert_eq!(run["context"]["selection_hash"], "sel-1", "inputs are stored in the context");
    let events: Value = app.get(&format!("{location}/events"), &TestUser::admin()).await.json().await.unwrap();
    assert_eq!(events["items"][0]["kind"], "created");
}

#[tokio::test]
async fn a_second_start_of_an_active_identity_is_refused_with_409() {
    let app = TestApp::spawn().await;
    let first = app.start(&TestUser::admin(), inventory_sync(3, "sel-1")).await;
    let response = app.post("/v1/runs", &TestUser::admin(), inventory_sync(3, "sel-1")).await;
    assert_eq!(response.headers()["location"], format!("/v1/runs/{first}").as_str());
    let problem = assert_problem(response, 409, "duplicate_run").await;
    assert_eq!(problem["existing_run_id"], first);

    // Another selection, another tenant or another type is another identity.
    app.start(&TestUser::admin(), inventory_sync(3, "sel-2")).await;
    app.start(&TestUser::admin(), inventory_sync(4, "sel-1")).await;
    app.start(
        &TestUser::admin(),
        json!({"type": "policy_sync", "tenant_id": 3, "inputs": {"selection_hash": "sel-1"}}),
    )
    .await;
}

#[tokio::test]
async fn after_the_active_run_completes_a_new_start_succeeds() {
    let app = TestApp::spawn().await;
    let first = app.start(&TestUser::admin(), inventory_sync(3, "sel-1")).await;
    complete(&app, first, "succeeded").await;
    let second = app.start(&TestUser::admin(), inventory_sync(3, "sel-1")).await;
    assert_ne!(first, second);
}

#[tokio::test]
async fn workspace_scoped_identities_dedupe_too() {
    let app = TestApp::spawn().await;
    let export = json!({"type": "workspace_audit_export"});
    let first = app.start(&TestUser::admin(), export.clone()).await;
    let problem =
        assert_problem(app.post("/v1/runs", &TestUser::admin(), export.clone()).await, 409, "duplicate_run").await;
    assert_eq!(problem["existing_run_id"], first);
    complete(&app, first, "succeeded").await;
    app.start(&TestUser::admin(), export).await;
}

#[tokio::test]
async fn strict_once_conflicts_even_after_completion() {
    let app = TestApp::spawn().await;
    let restore = json!({"type": "restore_execute", "tenant_id": 2, "inputs": {"restore_run_id": 77}});
    let first = app.start(&TestUser::admin(), restore.clone()).await;
    complete(&app, first, "succeeded").await;
    let problem = assert_problem(app.post("/v1/runs", &TestUser::admin(), restore).await, 409, "duplicate_run").await;
    assert_eq!(problem["existing_run_id"], first);
    app.start(&TestUser::admin(), json!({"type": "restore_execute", "tenant_id": 2, "inputs": {"restore_run_id": 78}}))
        .await;
}

#[tokio::test]
async fn unique_per_click_starts_never_conflict() {
    let app = TestApp::spawn().await;
    let run_now = json!({"type": "backup_schedule_run", "tenant_id": 2, "inputs": {"backup_schedule_id": 5, "trigger": "run_now"}});
    let ids: HashSet<i64> = [
        app.start(&TestUser::admin(), run_now.clone()).await,
        app.start(&TestUser::admin(), run_now.clone()).await,
        app.start(&TestUser::admin(), run_now).await,
    ]
    .into_iter()
    .collect();
    assert_eq!(ids.len(), 3);
}

async fn race(apps: &[&TestApp], body: Value, starts: usize) -> (Vec<i64>, Vec<Value>) {
    let futures = (0..starts)
        .map(|i| {
            let client = apps[i % apps.len()].client.clone();
            let url = format!("{}/v1/runs", apps[i % apps.len()].address);
            let body = body.clone();
            async move {
                let response = client.post(url).bearer_auth(TestUser::admin()).json(&body).send().await.unwrap();
                (response.status().as_u16(), response.json::<Value>().await.unwrap())
            }
        })
        .collect();
    let results = spawn_all(futures).await;
    let created = results.iter().filter(|(s, _)| *s == 201).map(|(_, b)| b["id"].as_i64().unwrap()).collect();
    let refused: Vec<Value> = results.iter().filter(|(s, _)| *s == 409).map(|(_, b)| b.clone()).collect();
    assert_eq!(results.len(), starts);
    assert!(results.iter().all(|(s, _)| *s == 201 || *s == 409), "{results:?}");
    (created, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_concurrent_identical_starts_create_exactly_one_run() {
    let app = TestApp::spawn().await;
    let (created, refused) = race(&[&app], inventory_sync(9, "hot"), 32).await;
    assert_eq!(created.len(), 1);
    assert!(refused.iter().all(|p| p["existing_run_id"] == created[0]), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_starts_across_two_instances_create_exactly_one_run() {
    let first = TestApp::spawn().await;
    let second = first.second_instance().await;
    for body in
        [inventory_sync(9, "hot"), json!({"type": "restore_execute", "tenant_id": 9, "inputs": {"restore_run_id": 1}})]
    {
        let (created, refused) = race(&[&first, &second], body, 32).await;
        assert_eq!(created.len(), 1);
        assert_eq!(refused.len(), 31);
        assert!(refused.iter().all(|p| p["existing_run_id"] == created[0]));
    }
}

#[tokio::test]
async fn each_refused_start_names_its_problem() {
    let app = TestApp::spawn().await;
    let cases = [
        (json!({"type": "inventory.sync", "tenant_id": 1}), "legacy_type", "inventory_sync"),
        (json!({"type": "backup_schedule.scheduled", "tenant_id": 1}), "legacy_type", "backup_schedule_run"),
        (json!({"type": "coffee_brewing", "tenant_id": 1}), "unknown_type", "operation-types"),
        (json!({"type": "inventory_sync", "inputs": {"selection_hash": "a"}}), "tenant_required", "tenant_id"),
        (json!({"type": "workspace_audit_export", "tenant_id": 1}), "tenant_not_allowed", "tenant_id"),
        (
            json!({"type": "inventory_sync", "tenant_id": 0, "inputs": {"selection_hash": "a"}}),
            "invalid_tenant",
            "positive",
        ),
        (json!({"type": "inventory_sync", "tenant_id": 1}), "missing_input", "selection_hash"),
        (
            json!({"type": "inventory_sync", "tenant_id": 1, "inputs": {"selection_hash": "a", "extra": 1}}),
            "unknown_input",
            "extra",
        ),
        (
            json!({"type": "restore_execute", "tenant_id": 1, "inputs": {"restore_run_id": "7"}}),
            "invalid_input",
            "positive integer",
        ),
        (
            json!({"type": "backup_schedule_run", "tenant_id": 1, "inputs": {"backup_schedule_id": 1, "trigger": "scheduled", "scheduled_for": "tomorrow"}}),
            "invalid_input",
            "RFC 3339",
        ),
        (
            json!({"type": "backup_schedule_run", "tenant_id": 1, "inputs": {"backup_schedule_id": 1, "trigger": "later"}}),
            "invalid_input",
            "run_now",
        ),
        (json!({"type": "workspace_audit_export", "context": [1]}), "invalid_context", "object"),
        (json!({"type": "workspace_audit_export", "context": null}), "invalid_context", "object"),
        (json!({"type": "workspace_audit_export", "context": {"note": "a\u{0}b"}}), "invalid_context", "NUL"),
        (
            json!({"type": "inventory_sync", "tenant_id": 1, "inputs": {"selection_hash": "a\u{0}"}}),
            "invalid_input",
            "control",
        ),
        (
            json!({"type": "workspace_audit_export", "context": {"target": {"DB_Password": "x"}}}),
            "secret_in_context",
            "DB_Password",
        ),
        (
            json!({"type": "workspace_audit_export", "context": {"blob": "x".repeat(17 * 1024)}}),
            "context_too_large",
            "16384",
        ),
        (
            json!({"type": "inventory_sync", "tenant_id": 1, "inputs": {"selection_hash": "a"}, "context": {"selection_hash": "b"}}),
            "context_conflicts_with_input",
            "selection_hash",
        ),
    ];
    for (body, code, mentions) in cases {
        let problem = assert_problem(app.post("/v1/runs", &TestUser::admin(), body.clone()).await, 422, code).await;
        assert!(problem["detail"].as_str().unwrap().contains(mentions), "{body}: {problem}");
    }
    let count: i64 = opsrun::db::schema::operation_runs::table.count().get_result(&mut app.db()).unwrap();
    assert_eq!(count, 0, "no refused start leaves a row");
}

#[tokio::test]
async fn context_keeps_extreme_numbers_and_unicode_exactly() {
    // Found by the API fuzzer: PostgreSQL spells f64::MAX out in 309 digits, which must
    // parse back to the same number.
    let app = TestApp::spawn().await;
    let context = json!({"max": f64::MAX, "min": -f64::MAX, "tiny": 5e-324, "big": 1e300, "\u{1F600}ключ": "värde"});
    let body = json!({"type": "workspace_audit_export", "context": context});
    let run: Value = app.post("/v1/runs", &TestUser::admin(), body).await.json().await.unwrap();
    assert_eq!(run["context"], context);
}

/// The catalog says per trigger which identity policy a start gets, and a start with each
/// trigger is stored under exactly that policy.
#[tokio::test]
async fn the_catalog_states_each_triggers_identity_policy_as_starts_apply_it() {
    let app = TestApp::spawn().await;
    let catalog: Value = app.get("/v1/operation-types", &TestUser::admin()).await.json().await.unwrap();
    let entry = |name: &str| catalog["items"].as_array().unwrap().iter().find(|t| t["type"] == name).unwrap().clone();
    assert_eq!(entry("inventory_sync")["identity_by_trigger"], Value::Null);
    let by_trigger = entry("backup_schedule_run")["identity_by_trigger"].clone();
    assert_eq!(
        by_trigger,
        json!({"scheduled": "strict_once", "run_now": "unique_per_click", "retry": "unique_per_click"})
    );
    for (trigger, policy) in by_trigger.as_object().unwrap() {
        let mut inputs = json!({"backup_schedule_id": 8, "trigger": trigger});
        if trigger == "scheduled" {
            inputs["scheduled_for"] = json!("2026-06-01T02:00:00Z");
        }
        let id = app
            .start(&TestUser::admin(), json!({"type": "backup_schedule_run", "tenant_id": 1, "inputs": inputs}))
            .await;
        let events: Value = app.get(&format!("/v1/runs/{id}/events"), &TestUser::admin()).await.json().await.unwrap();
        assert_eq!(&events["items"][0]["detail"]["identity_policy"], policy, "{trigger}");
    }
}
