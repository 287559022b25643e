//! Worker moves: the state machine, atomic counters, sanitized and capped failures,
//! and a timeline event for each mutation.

use serde_json::{json, Value};

use crate::helpers::{assert_problem, inventory_sync, spawn_all, started_run, TestApp, TestUser};

#[tokio::test]
async fn a_run_moves_queued_running_completed_and_records_each_move() {
    let app = TestApp::spawn().await;
    let id = started_run(&app).await;
    let worker = TestUser::worker();
    let progressed: Value = app
        .post(&format!("/v1/runs/{id}/progress"), &worker, json!({"counts": {"processed": 4, "total": 10}}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(progressed["summary_counts"], json!({"processed": 4, "total": 10}));
    let done: Value = app
        .post(
            &format!("/v1/runs/{id}/complete"),
            &worker,
            json!({"outcome": "partially_succeeded", "counts": {"processed": 10, "failed": 1}}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(done["status"], "completed");
    assert_eq!(done["outcome"], "partially_succeeded");
    assert_eq!(done["summary_counts"], json!({"processed": 10, "total": 10, "failed": 1}));
    assert!(done["started_at"].is_string() && done["completed_at"].is_string());
    assert!(done["duration_seconds"].as_f64().unwrap() >= 0.0);

    let events: Value = app.get(&format!("/v1/runs/{id}/events"), &TestUser::admin()).await.json().await.unwrap();
    let kinds: Vec<&str> = events["items"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["created", "started", "progressed", "completed"]);
    let last = &events["items"][3];
    assert_eq!((last["from_status"].as_str(), last["to_status"].as_str()), (Some("running"), Some("completed")));

    // `after` reads only what is newer than the event a client holds.
    let ids: Vec<i64> = events["items"].as_array().unwrap().iter().map(|e| e["id"].as_i64().unwrap()).collect();
    for held in 0..ids.len() {
        let later: Value = app
            .get(&format!("/v1/runs/{id}/events?after={}", ids[held]), &TestUser::admin())
            .await
            .json()
            .await
            .unwrap();
        let later_ids: Vec<i64> =
            later["items"].as_array().unwrap().iter().map(|e| e["id"].as_i64().unwrap()).collect();
        assert_eq!(later_ids, ids[held + 1..], "after event {}", ids[held]);
    }
    let problem = assert_problem(
        app.get(&format!("/v1/runs/{id}/events?after=-1"), &TestUser::admin()).await,
        400,
        "invalid_query",
    )
    .await;
    assert!(problem["detail"].as_str().unwrap().contains("`after`"), "{problem}");
}

#[tokio::test]
async fn completed_runs_are_immutable_and_illegal_moves_are_409() {
    let app = TestApp::spawn().await;
    let worker = TestUser::worker();
    let queued = app.start(&TestUser::admin(), inventory_sync(1, "q")).await;
    let problem = assert_problem(
        app.post(&format!("/v1/runs/{queued}/progress"), &worker, json!({})).await,
        409,
        "invalid_transition",
    )
    .await;
    assert!(problem["detail"].as_str().unwrap().contains("queued"));

    let id = started_run(&app).await;
    assert_problem(app.post(&format!("/v1/runs/{id}/start"), &worker, json!({})).await, 409, "invalid_transition")
        .await;
    assert_eq!(app.post(&format!("/v1/runs/{id}/cancel"), &worker, json!({})).await.status(), 200);
    for (verb, body) in [
        ("start", json!({})),
        ("progress", json!({})),
        ("complete", json!({"outcome": "succeeded"})),
        ("cancel", json!({})),
    ] {
        let problem =
            assert_problem(app.post(&format!("/v1/runs/{id}/{verb}"), &worker, body).await, 409, "invalid_transition")
                .await;
        assert!(problem["detail"].as_str().unwrap().contains("completed"), "{problem}");
    }
    let run: Value = app.get(&format!("/v1/runs/{id}"), &TestUser::admin()).await.json().await.unwrap();
    assert_eq!(run["outcome"], "cancelled");
}

#[tokio::test]
async fn complete_needs_a_final_outcome_and_names_the_choices() {
    let app = TestApp::spawn().await;
    let id = started_run(&app).await;
    for outcome in ["pending", "cancelled", "fabulous"] {
        let response =
            app.post(&format!("/v1/runs/{id}/complete"), &TestUser::worker(), json!({"outcome": outcome})).await;
        let problem = assert_problem(response, 422, "invalid_body").await;
        assert!(problem["detail"].as_str().unwrap().contains("partially_succeeded"), "{problem}");
    }
    let run: Value = app.get(&format!("/v1/runs/{id}"), &TestUser::admin()).await.json().await.unwrap();
    assert_eq!(run["status"], "running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_progress_reports_lose_nothing() {
    let app = TestApp::spawn().await;
    let id = started_run(&app).await;
    let second = app.second_instance().await;
    let reports = (0..50)
        .map(|i| {
            let target = if i % 2 == 0 { &app } else { &second };
            let (client, url) = (target.client.clone(), format!("{}/v1/runs/{id}/progress", target.address));
            async move {
                client
                    .post(url)
                    .bearer_auth(TestUser::worker())
                    .json(&json!({"counts": {"processed": 1}}))
                    .send()
                    .await
                    .unwrap()
                    .status()
            }
        })
        .collect();
    let statuses = spawn_all(reports).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let run: Value = app.get(&format!("/v1/runs/{id}"), &TestUser::admin()).await.json().await.unwrap();
    assert_eq!(run["summary_counts"]["processed"], 50);
    let events: Value = app.get(&format!("/v1/runs/{id}/events"), &TestUser::admin()).await.json().await.unwrap();
    assert_eq!(events["items"].as_array().unwrap().iter().filter(|e| e["kind"] == "progressed").count(), 50);
}

#[tokio::test]
async fn failure_messages_are_sanitized_and_cut_to_120_characters() {
    let app = TestApp::spawn().await;
    let id = started_run(&app).await;
    let jwt = TestUser::admin();
    let message = format!(
        "GET failed: Authorization: Bearer sk_live_abc123 with {jwt} and password=hunter2 \u{7}\n{}",
        "x".repeat(300)
    );
    let body = json!({"failures": [{"code": "graph.403", "reason_code": "provider_permission_denied", "message": message, "item": "policy-1"}]});
    let run: Value =
        app.post(&format!("/v1/runs/{id}/progress"), &TestUser::worker(), body).await.json().await.unwrap();
    let stored = run["failure_summary"]["items"][0]["message"].as_str().unwrap();
    for secret in ["sk_live_abc123", jwt.as_str(), "hunter2", "\u{7}", "\n"] {
        assert!(!stored.contains(secret), "{secret:?} survived in {stored:?}");
    }
    assert!(stored.chars().count() <= 120, "{stored}");
    assert_eq!(run["failure_summary"]["items"][0]["reason_code"], "provider_permission_denied");
}

#[tokio::test]
async fn a_run_keeps_the_first_100_failures_and_counts_the_rest() {
    let app = TestApp::spawn().await;
    let id = started_run(&app).await;
    let failure = |i: usize| json!({"code": "e", "reason_code": "timeout", "message": format!("failure {i}")});
    for batch in 0..3 {
        let failures: Vec<Value> = (0..45).map(|i| failure(batch * 45 + i)).collect();
        let response =
            app.post(&format!("/v1/runs/{id}/progress"), &TestUser::worker(), json!({"failures": failures})).await;
        assert_eq!(response.status(), 200);
    }
    let run: Value = app.get(&format!("/v1/runs/{id}"), &TestUser::admin()).await.json().await.unwrap();
    let items = run["failure_summary"]["items"].as_array().unwrap();
    assert_eq!(items.len(), 100);
    assert_eq!(run["failure_summary"]["dropped"], 35);
    assert_eq!(items[0]["message"], "failure 0");
    assert_eq!(items[99]["message"], "failure 99");
}

#[tokio::test]
async fn bad_counters_and_failures_are_refused_with_their_codes() {
    let app = TestApp::spawn().await;
    let id = started_run(&app).await;
    let path = format!("/v1/runs/{id}/progress");
    for counts in [json!({"bogus": 1}), json!({"processed": -1}), json!({"processed": 1.5}), json!({"processed": "3"})]
    {
        assert_problem(app.post(&path, &TestUser::worker(), json!({"counts": counts})).await, 422, "invalid_counts")
            .await;
    }
    let bad_code = json!({"failures": [{"code": "has space", "reason_code": "timeout", "message": "m"}]});
    assert_problem(app.post(&path, &TestUser::worker(), bad_code).await, 422, "invalid_failure").await;
    let bad_reason = json!({"failures": [{"code": "x", "reason_code": "gremlins", "message": "m"}]});
    assert_problem(app.post(&path, &TestUser::worker(), bad_reason).await, 422, "invalid_body").await;
    let run: Value = app.get(&format!("/v1/runs/{id}"), &TestUser::admin()).await.json().await.unwrap();
    assert_eq!(run["summary_counts"], json!({}), "refused reports change nothing");
}

#[tokio::test]
async fn a_worker_that_reports_stale_timeout_itself_is_not_told_its_run_was_reaped() {
    let app = TestApp::spawn().await;
    let id = started_run(&app).await;
    let worker = TestUser::worker();
    let failure =
        json!({"code": "upstream.stale", "reason_code": "stale_timeout", "message": "upstream data was stale"});
    let completed = app
        .post(&format!("/v1/runs/{id}/complete"), &worker, json!({"outcome": "failed", "failures": [failure]}))
        .await;
    assert_eq!(completed.status(), 200);

    let again = app.post(&format!("/v1/runs/{id}/complete"), &worker, json!({"outcome": "succeeded"})).await;
    let problem = assert_problem(again, 409, "invalid_transition").await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("completed (failed)") && !detail.contains("reaped"), "{detail}");
}
