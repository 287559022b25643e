//! A backup schedule's run history, and scheduler-safe (strict-once) scheduled runs.

use serde_json::{json, Value};

use crate::helpers::{assert_problem, claims, complete, ids, mint, spawn_all, TestApp, TestUser};

fn scheduled(schedule: i64, tenant: i64, at: &str) -> Value {
    json!({"type": "backup_schedule_run", "tenant_id": tenant,
           "inputs": {"backup_schedule_id": schedule, "trigger": "scheduled", "scheduled_for": at}})
}

fn manual(kind: &str, schedule: i64, tenant: i64) -> Value {
    match kind {
        "backup_schedule_run" => {
            json!({"type": kind, "tenant_id": tenant, "inputs": {"backup_schedule_id": schedule, "trigger": "run_now"}})
        }
        _ => json!({"type": kind, "tenant_id": tenant, "inputs": {"backup_schedule_id": schedule}}),
    }
}

#[tokio::test]
async fn the_history_holds_exactly_the_schedules_three_run_types_newest_first() {
    let app = TestApp::spawn().await;
    let admin = TestUser::admin();
    let mut expected = Vec::new();
    for minute in 0..4 {
        expected.push(app.start(&admin, scheduled(7, 1, &format!("2026-03-01T10:0{minute}:00Z"))).await);
        let retention = app.start(&admin, manual("backup_schedule_retention", 7, 1)).await;
        complete(&app, retention, "succeeded").await;
        expected.push(retention);
        let purge = app.start(&admin, manual("backup_schedule_purge", 7, 1)).await;
        complete(&app, purge, "succeeded").await;
        expected.push(purge);
    }
    // Noise that must never appear.
    app.start(&admin, scheduled(8, 1, "2026-03-01T10:00:00Z")).await; // another schedule
    app.start(&admin, json!({"type": "inventory_sync", "tenant_id": 1, "inputs": {"selection_hash": "a"}, "context": {"backup_schedule_id": 7}})).await;
    app.start(&mint(&claims(2, json!("*"), &["backup_schedules.run"])), scheduled(7, 1, "2026-03-01T10:00:00Z")).await;
    app.start(&admin, scheduled(7, 2, "2026-03-01T10:00:00Z")).await; // tenant 2, hidden from the reader below

    let reader = TestUser::with(json!([1]), &["backup_schedules.run", "backup_schedules.manage", "inventory.sync"]);
    let mut seen = Vec::new();
    let mut path = "/v1/backup-schedules/7/runs?limit=5".to_owned();
    loop {
        let page: Value = app.get(&path, &reader).await.json().await.unwrap();
        for run in page["items"].as_array().unwrap() {
            assert_eq!(run["context"]["backup_schedule_id"], 7);
            assert_eq!(run["links"]["backup_schedule_runs"], "/v1/backup-schedules/7/runs");
        }
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/backup-schedules/7/runs?limit=5&cursor={cursor}"),
            None => break,
        }
    }
    expected.reverse();
    assert_eq!(seen, expected);

    // Without the manage capability only backup_schedule_run appears.
    let runner = TestUser::with(json!([1]), &["backup_schedules.run"]);
    let page: Value = app.get("/v1/backup-schedules/7/runs?limit=200", &runner).await.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn history_filters_by_type_outcome_trigger_and_scheduled_time() {
    let app = TestApp::spawn().await;
    let admin = TestUser::admin();
    let early = app.start(&admin, scheduled(3, 1, "2026-03-01T10:00:00Z")).await;
    let late = app.start(&admin, scheduled(3, 1, "2026-03-01T11:00:00Z")).await;
    let clicked = app.start(&admin, manual("backup_schedule_run", 3, 1)).await;
    let retention = app.start(&admin, manual("backup_schedule_retention", 3, 1)).await;
    complete(&app, early, "succeeded").await;
    complete(&app, late, "failed").await;

    let query = |q: &str| {
        let (app, admin, q) = (&app, admin.clone(), q.to_owned());
        async move {
            ids(&app.get(&format!("/v1/backup-schedules/3/runs?{q}"), &admin).await.json::<Value>().await.unwrap())
        }
    };
    assert_eq!(query("type=backup_schedule_retention").await, vec![retention]);
    assert_eq!(query("trigger=scheduled").await, vec![late, early]);
    assert_eq!(query("trigger=run_now").await, vec![clicked]);
    assert_eq!(query("outcome=succeeded&type=backup_schedule_run&limit=1").await, vec![early]);
    assert_eq!(query("status=active").await, vec![retention, clicked]);
    assert_eq!(query("scheduled_after=2026-03-01T10:30:00Z").await, vec![late]);
    assert_eq!(query("scheduled_before=2026-03-01T10:30:00Z").await, vec![early]);
    assert_eq!(query("scheduled_after=2026-03-01T10:00:00Z&scheduled_before=2026-03-01T11:00:00Z").await, vec![early]);

    let admin = TestUser::admin();
    for bad in ["type=inventory_sync", "trigger=whenever", "scheduled_after=noon", "outcome=meh"] {
        assert_problem(app.get(&format!("/v1/backup-schedules/3/runs?{bad}"), &admin).await, 400, "invalid_query")
            .await;
    }
    assert_problem(app.get("/v1/backup-schedules/x/runs", &admin).await, 404, "not_found").await;
}

#[tokio::test]
async fn the_retention_question_is_one_call() {
    let app = TestApp::spawn().await;
    let admin = TestUser::admin();
    let mut succeeded = Vec::new();
    for hour in 0..5 {
        let id = app.start(&admin, scheduled(4, 1, &format!("2026-03-0{}T02:00:00Z", hour + 1))).await;
        let outcome = if hour == 2 { "failed" } else { "succeeded" };
        let body = json!({"outcome": outcome});
        app.post(&format!("/v1/runs/{id}/complete"), &TestUser::worker(), body).await;
        if outcome == "succeeded" {
            succeeded.push(id);
        }
    }
    let page: Value = app
        .get("/v1/backup-schedules/4/runs?type=backup_schedule_run&outcome=succeeded&limit=3", &admin)
        .await
        .json()
        .await
        .unwrap();
    succeeded.reverse();
    assert_eq!(ids(&page), succeeded[..3].to_vec());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_scheduled_starts_for_one_minute_create_one_run() {
    let app = TestApp::spawn().await;
    let second = app.second_instance().await;
    let spellings =
        ["2026-03-01T10:00:00Z", "2026-03-01T10:00:30Z", "2026-03-01T12:00:00+02:00", "2026-03-01T10:00:59.999Z"];
    let starts = (0..20)
        .map(|i| {
            let target = if i % 2 == 0 { &app } else { &second };
            let (client, url) = (target.client.clone(), format!("{}/v1/runs", target.address));
            let body = scheduled(11, 1, spellings[i % spellings.len()]);
            async move {
                let response = client.post(url).bearer_auth(TestUser::admin()).json(&body).send().await.unwrap();
                (response.status().as_u16(), response.json::<Value>().await.unwrap())
            }
        })
        .collect();
    let results = spawn_all(starts).await;
    let created: Vec<&Value> = results.iter().filter(|(s, _)| *s == 201).map(|(_, b)| b).collect();
    assert_eq!(created.len(), 1, "{results:?}");
    assert_eq!(created[0]["context"]["scheduled_for"], "2026-03-01T10:00:00Z");
    let run_id = created[0]["id"].clone();
    assert!(results.iter().filter(|(s, _)| *s == 409).all(|(_, b)| b["existing_run_id"] == run_id));
    assert_eq!(results.iter().filter(|(s, _)| *s == 409).count(), 19);

    // Strict once: still refused after completion; another minute is another run.
    complete(&app, run_id.as_i64().unwrap(), "succeeded").await;
    assert_problem(
        app.post("/v1/runs", &TestUser::admin(), scheduled(11, 1, "2026-03-01T10:00:00Z")).await,
        409,
        "duplicate_run",
    )
    .await;
    app.start(&TestUser::admin(), scheduled(11, 1, "2026-03-01T10:01:00Z")).await;
}
