//! Retrying safely: `Idempotency-Key` on every write, and `on_conflict: use_existing` on
//! starts — correct under races, across instances, and when an answer is lost.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use diesel::{sql_query, Connection, RunQueryDsl};
use serde_json::{json, Value};

use crate::helpers::{
    assert_problem, claims, click, inventory_sync, mint, post_keyed, replayed, spawn_all, started_run, TestApp,
    TestUser,
};

fn count(app: &TestApp, sql: &str) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    sql_query(sql).get_result::<Count>(&mut app.db()).unwrap().n
}

fn runs(app: &TestApp) -> i64 {
    count(app, "SELECT count(*) AS n FROM operation_runs")
}

#[tokio::test]
async fn a_retry_with_the_same_key_replays_the_first_answer_exactly() {
    let app = TestApp::spawn().await;
    let first = post_keyed(&app, "/v1/runs", &TestUser::admin(), &click(3), "retry-1").await;
    assert_eq!(first.status(), 201);
    assert!(!replayed(&first));
    let location = first.headers().get("location").unwrap().clone();
    let body = first.text().await.unwrap();

    let retry = post_keyed(&app, "/v1/runs", &TestUser::admin(), &click(3), "retry-1").await;
    assert_eq!(retry.status(), 201);
    assert!(replayed(&retry));
    assert_eq!(retry.headers().get("location"), Some(&location));
    assert_eq!(retry.text().await.unwrap(), body, "the same bytes");
    assert_eq!(runs(&app), 1);

    // Another key is another request; no key at all is never deduplicated.
    assert_eq!(post_keyed(&app, "/v1/runs", &TestUser::admin(), &click(3), "retry-2").await.status(), 201);
    app.start(&TestUser::admin(), click(3)).await;
    assert_eq!(runs(&app), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_concurrent_keyed_starts_take_effect_once_across_two_instances() {
    let first = TestApp::spawn().await;
    let second = first.second_instance().await;
    let apps = [std::sync::Arc::new(first), std::sync::Arc::new(second)];
    let attempts = (0..32)
        .map(|i| {
            let app = apps[i % 2].clone();
            async move {
                let response = post_keyed(&app, "/v1/runs", &TestUser::admin(), &click(3), "one-effect").await;
                let (status, was_replayed) = (response.status().as_u16(), replayed(&response));
                let body: Value = response.json().await.unwrap();
                (status, was_replayed, body)
            }
        })
        .collect();
    let answers = spawn_all(attempts).await;
    let fresh: Vec<_> = answers.iter().filter(|(status, was_replayed, _)| *status == 201 && !was_replayed).collect();
    assert_eq!(fresh.len(), 1, "exactly one request took effect");
    let id = &fresh[0].2["id"];
    for (status, was_replayed, body) in &answers {
        match status {
            201 => assert!(body["id"] == *id && (*was_replayed || body == &fresh[0].2), "{body}"),
            409 => assert_eq!(body["code"], "idempotency_key_in_flight"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(runs(&apps[0]), 1, "never a second run");
    let retry = post_keyed(&apps[1], "/v1/runs", &TestUser::admin(), &click(3), "one-effect").await;
    assert!(retry.status() == 201 && replayed(&retry));
}

/// The client sends its start and vanishes before reading the answer (a dropped
/// connection): its retry with the same key gets that answer, not a second run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_lost_answer_replays_it() {
    let app = TestApp::spawn().await;
    let address = app.address.strip_prefix("http://").unwrap().to_owned();
    let body = serde_json::to_vec(&click(3)).unwrap();
    let mut stream = TcpStream::connect(&address).unwrap();
    write!(
        stream,
        "POST /v1/runs HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\nIdempotency-Key: lost-answer\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        TestUser::admin(),
        body.len()
    )
    .unwrap();
    stream.write_all(&body).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while runs(&app) == 0 {
        assert!(Instant::now() < deadline, "the first request was never processed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(stream); // the answer is never read

    let retry = post_keyed(&app, "/v1/runs", &TestUser::admin(), &click(3), "lost-answer").await;
    assert_eq!(retry.status(), 201);
    assert!(replayed(&retry), "the stored answer, not a new run");
    let run: Value = retry.json().await.unwrap();
    assert_eq!(runs(&app), 1);
    assert_eq!(count(&app, &format!("SELECT count(*) AS n FROM operation_runs WHERE id = {}", run["id"])), 1);
}

#[tokio::test]
async fn a_key_names_one_request_of_one_caller() {
    let app = TestApp::spawn().await;
    assert_eq!(post_keyed(&app, "/v1/runs", &TestUser::admin(), &click(3), "mine").await.status(), 201);
    let other_body = json!({"type": "backup_schedule_run", "tenant_id": 1, "inputs": {"backup_schedule_id": 4, "trigger": "run_now"}});
    let reused = post_keyed(&app, "/v1/runs", &TestUser::admin(), &other_body, "mine").await;
    assert_problem(reused, 422, "idempotency_key_reused").await;
    let id = started_run(&app).await;
    let elsewhere = post_keyed(&app, &format!("/v1/runs/{id}/progress"), &TestUser::admin(), &json!({}), "mine").await;
    assert_problem(elsewhere, 422, "idempotency_key_reused").await;

    // Spacing and key order do not make another request.
    let reordered = app
        .client
        .post(format!("{}/v1/runs", app.address))
        .bearer_auth(TestUser::admin())
        .header("Idempotency-Key", "mine")
        .header("content-type", "application/json")
        .body(r#"{ "inputs": {"trigger": "run_now", "backup_schedule_id": 3}, "tenant_id": 1, "type": "backup_schedule_run" }"#)
        .send()
        .await
        .unwrap();
    assert!(reordered.status() == 201 && replayed(&reordered));

    // Another caller's key of the same name is theirs.
    let mut someone_else = claims(1, json!("*"), &["backup_schedules.run"]);
    someone_else.sub = "2002".into();
    let theirs = post_keyed(&app, "/v1/runs", &mint(&someone_else), &other_body, "mine").await;
    assert!(theirs.status() == 201 && !replayed(&theirs));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_progress_retries_with_one_key_count_once() {
    let app = std::sync::Arc::new(TestApp::spawn().await);
    let id = started_run(&app).await;
    let report = json!({"counts": {"processed": 7, "failed": 1}});
    let retries = (0..50)
        .map(|_| {
            let (app, report) = (app.clone(), report.clone());
            async move {
                let path = format!("/v1/runs/{id}/progress");
                let response = post_keyed(&app, &path, &TestUser::worker(), &report, "report-1").await;
                (response.status().as_u16(), response.json::<Value>().await.unwrap())
            }
        })
        .collect();
    for (status, body) in spawn_all(retries).await {
        match status {
            200 => assert_eq!(body["summary_counts"]["processed"], 7, "every answer is the one report's"),
            409 => assert_eq!(body["code"], "idempotency_key_in_flight"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    let run: Value = app.get(&format!("/v1/runs/{id}"), &TestUser::admin()).await.json().await.unwrap();
    assert_eq!(run["summary_counts"], json!({"processed": 7, "failed": 1}), "counted once");
    let progressed =
        format!("SELECT count(*) AS n FROM operation_run_events WHERE run_id = {id} AND kind = 'progressed'");
    assert_eq!(count(&app, &progressed), 1);
}

/// A keyed move whose answer the database refuses to store is rolled back whole: the run
/// did not move, and `/metrics` does not count it. A keyed move that commits counts once,
/// and its replay not again.
#[tokio::test]
async fn a_keyed_move_counts_once_it_commits_and_never_for_a_replay() {
    let app = TestApp::spawn().await;
    let mut poisoned = inventory_sync(1, "poisoned");
    poisoned["context"] = json!({ "note": "poisoned-answer" });
    let poisoned = app.start(&TestUser::admin(), poisoned).await;
    let plain = app.start(&TestUser::admin(), inventory_sync(1, "plain")).await;
    sql_query(
        "ALTER TABLE idempotency_keys ADD CONSTRAINT refuses_poisoned_answer \
         CHECK (response_body NOT LIKE '%poisoned-answer%') NOT VALID",
    )
    .execute(&mut app.db())
    .unwrap();
    let moves = || app.metric("opsrun_transitions_total{kind=\"started\"}");

    let refused =
        post_keyed(&app, &format!("/v1/runs/{poisoned}/start"), &TestUser::worker(), &json!({}), "move").await;
    assert_problem(refused, 500, "internal_error").await;
    let run: Value = app.get(&format!("/v1/runs/{poisoned}"), &TestUser::admin()).await.json().await.unwrap();
    assert_eq!(run["status"], "queued", "rolled back with its answer");
    assert_eq!(moves().await, 0.0);

    for attempt in 0..2 {
        let moved = post_keyed(&app, &format!("/v1/runs/{plain}/start"), &TestUser::worker(), &json!({}), "move").await;
        assert_eq!((moved.status().as_u16(), replayed(&moved)), (200, attempt == 1));
    }
    assert_eq!(moves().await, 1.0);
}

/// While the first request with a key is still running (here: waiting on a row another
/// session holds), a retry is told at once to come back later, then gets the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_while_the_first_is_in_flight_is_told_to_retry_later() {
    let app = std::sync::Arc::new(TestApp::spawn().await);
    let id = started_run(&app).await;
    let mut holder = app.db();
    holder.begin_test_transaction().unwrap();
    sql_query(format!("SELECT id FROM operation_runs WHERE id = {id} FOR UPDATE")).execute(&mut holder).unwrap();
    let report = json!({"counts": {"processed": 3}});
    let path = format!("/v1/runs/{id}/progress");
    let first = {
        let (app, report, path) = (app.clone(), report.clone(), path.clone());
        tokio::spawn(async move { post_keyed(&app, &path, &TestUser::worker(), &report, "slow").await.status() })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    let early = post_keyed(&app, &path, &TestUser::worker(), &report, "slow").await;
    assert!(started.elapsed() < Duration::from_secs(2), "answered at once, not after the first");
    assert!(early.headers().contains_key("retry-after"));
    assert_problem(early, 409, "idempotency_key_in_flight").await;

    drop(holder);
    assert_eq!(first.await.unwrap(), 200);
    let later = post_keyed(&app, &path, &TestUser::worker(), &report, "slow").await;
    assert!(later.status() == 200 && replayed(&later));
}

#[tokio::test]
async fn keys_are_1_to_255_visible_characters() {
    let app = TestApp::spawn().await;
    for bad in ["", &"k".repeat(256)] {
        let response = post_keyed(&app, "/v1/runs", &TestUser::admin(), &click(3), bad).await;
        assert_problem(response, 400, "invalid_idempotency_key").await;
    }
    assert_eq!(runs(&app), 0, "a refused key takes no effect");
    assert_eq!(post_keyed(&app, "/v1/runs", &TestUser::admin(), &click(3), &"k".repeat(255)).await.status(), 201);
}

/// A refusal of the caller (here: a missing capability) is not stored: once the caller
/// may, the same key takes effect.
#[tokio::test]
async fn refusals_before_any_effect_are_not_replayed() {
    let app = TestApp::spawn().await;
    let unable = TestUser::with(json!("*"), &["inventory.sync"]);
    assert_problem(post_keyed(&app, "/v1/runs", &unable, &click(3), "later").await, 403, "forbidden").await;
    let able = TestUser::with(json!("*"), &["backup_schedules.run"]);
    let response = post_keyed(&app, "/v1/runs", &able, &click(3), "later").await;
    assert!(response.status() == 201 && !replayed(&response));
}

/// After 24 hours a key is forgotten: its answer is purged, and a request with it is new.
#[tokio::test]
async fn keys_expire_after_24_hours_and_are_purged() {
    let app = TestApp::spawn().await;
    assert_eq!(post_keyed(&app, "/v1/runs", &TestUser::admin(), &click(3), "old").await.status(), 201);
    assert_eq!(post_keyed(&app, "/v1/runs", &TestUser::admin(), &click(3), "fresh").await.status(), 201);
    sql_query("UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'old'")
        .execute(&mut app.db())
        .unwrap();

    let again = post_keyed(&app, "/v1/runs", &TestUser::admin(), &click(3), "old").await;
    assert!(again.status() == 201 && !replayed(&again), "an expired key is a new request");
    assert_eq!(runs(&app), 3);

    sql_query("UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'old'")
        .execute(&mut app.db())
        .unwrap();
    assert_eq!(opsrun::use_cases::idempotency::purge_expired(&mut app.db()).unwrap(), 1);
    let keys = count(&app, "SELECT count(*) AS n FROM idempotency_keys");
    assert_eq!(keys, 1, "the fresh key stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn use_existing_under_32_concurrent_starts_answers_one_201_and_31_200s_naming_it() {
    let first = TestApp::spawn().await;
    let second = first.second_instance().await;
    let apps = [std::sync::Arc::new(first), std::sync::Arc::new(second)];
    let mut body = inventory_sync(1, "shared");
    body["on_conflict"] = json!("use_existing");
    let starts = (0..32)
        .map(|i| {
            let (app, body) = (apps[i % 2].clone(), body.clone());
            async move {
                let response = app.post("/v1/runs", &TestUser::admin(), body).await;
                let status = response.status().as_u16();
                let location = response.headers().get("location").map(|v| v.to_str().unwrap().to_owned());
                (status, location, response.json::<Value>().await.unwrap())
            }
        })
        .collect();
    let answers = spawn_all(starts).await;
    let created: Vec<_> = answers.iter().filter(|(status, _, _)| *status == 201).collect();
    assert_eq!(created.len(), 1, "{answers:?}");
    let id = created[0].2["id"].as_i64().unwrap();
    for (status, location, body) in &answers {
        assert!(*status == 201 || *status == 200, "{status} {body}");
        assert_eq!(body["id"], id);
        assert_eq!(body["created"], *status == 201);
        assert_eq!(location.as_deref(), Some(format!("/v1/runs/{id}").as_str()));
    }
    assert_eq!(runs(&apps[0]), 1);
}

#[tokio::test]
async fn use_existing_answers_a_strict_once_identity_with_its_completed_run() {
    let app = TestApp::spawn().await;
    let restore = json!({"type": "restore_execute", "tenant_id": 1, "inputs": {"restore_run_id": 9}});
    let id = app.start(&TestUser::admin(), restore.clone()).await;
    let complete = json!({"outcome": "succeeded"});
    assert_eq!(app.post(&format!("/v1/runs/{id}/complete"), &TestUser::worker(), complete).await.status(), 200);

    assert_problem(app.post("/v1/runs", &TestUser::admin(), restore.clone()).await, 409, "duplicate_run").await;
    let mut use_existing = restore;
    use_existing["on_conflict"] = json!("use_existing");
    let answer = app.post("/v1/runs", &TestUser::admin(), use_existing).await;
    assert_eq!(answer.status(), 200);
    let run: Value = answer.json().await.unwrap();
    assert_eq!((run["id"].as_i64(), &run["status"], &run["created"]), (Some(id), &json!("completed"), &json!(false)));
}

/// A caller who may start but not view a type learns only the holder's id, as with
/// `reject`: `use_existing` never shows a run its caller may not view.
#[tokio::test]
async fn use_existing_shows_no_run_the_caller_may_not_view() {
    let app = TestApp::spawn().await;
    let manager = TestUser::with(json!("*"), &["provider_connections.manage"]);
    let check = json!({"type": "provider_connection_verify", "tenant_id": 1, "inputs": {"provider_connection_id": 5}, "on_conflict": "use_existing"});
    assert_eq!(app.post("/v1/runs", &manager, check.clone()).await.status(), 201);
    let problem = assert_problem(app.post("/v1/runs", &manager, check).await, 409, "duplicate_run").await;
    assert!(problem["existing_run_id"].is_i64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_and_key_conflicts_are_counted() {
    let app = TestApp::spawn().await;
    let metric = |text: &str, series: &str| -> f64 {
        text.lines().find(|l| l.starts_with(series)).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(-1.0)
    };
    let before = app.metrics_text_blocking();
    assert_eq!(metric(&before, "opsrun_idempotent_replays_total{kind=\"created\"}"), 0.0);
    assert_eq!(metric(&before, "opsrun_idempotency_key_conflicts_total{code=\"idempotency_key_reused\"}"), 0.0);
    post_keyed(&app, "/v1/runs", &TestUser::admin(), &click(3), "counted").await;
    post_keyed(&app, "/v1/runs", &TestUser::admin(), &click(3), "counted").await;
    post_keyed(&app, "/v1/runs", &TestUser::admin(), &inventory_sync(1, "other"), "counted").await;
    let after = app.metrics_text_blocking();
    assert_eq!(metric(&after, "opsrun_idempotent_replays_total{kind=\"created\"}"), 1.0);
    assert_eq!(metric(&after, "opsrun_idempotency_key_conflicts_total{code=\"idempotency_key_reused\"}"), 1.0);
}
