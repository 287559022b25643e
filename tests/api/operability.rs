//! Operating it: database outages answer 503 and recover without a restart, stale runs
//! are reaped exactly once across instances, metrics and request ids are there.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel::{sql_query, Connection, PgConnection};
use opsrun::commands::embedded_pg::{EmbeddedOptions, EmbeddedPostgres};
use opsrun::domain::staleness::StaleLimits;
use serde_json::{json, Value};

use crate::helpers::sse::SseReader;
use crate::helpers::{assert_problem, click, fresh_database, inventory_sync, metric_sum, spawn_all, TestApp, TestUser};

fn own_data_dir(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("opsrun-test-{}.{name}", std::process::id()))
}

/// A cluster of the test's own, so stopping it disturbs no other test.
fn own_cluster(name: &str, port: Option<u16>) -> EmbeddedPostgres {
    EmbeddedPostgres::start(&EmbeddedOptions { data_dir: own_data_dir(name), durable: false, port })
        .expect("the cluster starts")
}

/// Removes a test's own cluster files when the test ends, passed or failed.
struct RemovedAtEnd(std::path::PathBuf);

impl Drop for RemovedAtEnd {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        let _ = std::fs::remove_file(self.0.with_extension("log"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_outage_answers_503_loses_no_acknowledged_run_and_heals_without_restart() {
    // Declared first, so it is dropped last: after the cluster has stopped.
    let _files = RemovedAtEnd(own_data_dir("fault"));
    let mut cluster = own_cluster("fault", None);
    let port = cluster.port();
    let mut admin = PgConnection::establish(&cluster.url("postgres")).unwrap();
    sql_query("CREATE DATABASE opsrun").execute(&mut admin).unwrap();
    drop(admin);
    opsrun::db::migrate(&mut PgConnection::establish(&cluster.url("opsrun")).unwrap()).unwrap();
    let app = Arc::new(
        TestApp::spawn_with(cluster.url("opsrun"), |config| {
            config.pool.checkout_timeout = Duration::from_millis(500);
            config.pool.work_timeout = Duration::from_secs(5);
        })
        .await,
    );

    // Four clients start runs in a loop until told to stop, noting every answer.
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::new()));
    let clients = (0..4)
        .map(|_| {
            let (app, stop, answers) = (app.clone(), stop.clone(), answers.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let status = app.post("/v1/runs", &TestUser::admin(), click(1)).await.status().as_u16();
                    answers.lock().unwrap().push((status, started.elapsed()));
                }
            }
        })
        .collect();
    let load = tokio::spawn(spawn_all(clients));

    tokio::time::sleep(Duration::from_millis(700)).await;
    tokio::task::spawn_blocking(move || cluster.stop()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ready = app.request(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned()), Some("2".into()));
    assert_problem(ready, 503, "service_unavailable").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let cluster = tokio::task::spawn_blocking(move || own_cluster("fault", Some(port))).await.unwrap();

    // Healed without a restart: a start succeeds again within a few seconds.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if app.post("/v1/runs", &TestUser::admin(), click(1)).await.status() == 201 {
            break;
        }
        assert!(Instant::now() < deadline, "the service did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert_eq!(app.request(reqwest::Method::GET, "/readyz", None, None).await.status(), 200);

    let answers = answers.lock().unwrap().clone();
    let created = answers.iter().filter(|(s, _)| *s == 201).count() as i64 + 1; // + the recovery probe
    let unavailable = answers.iter().filter(|(s, _)| *s == 503).count();
    let other: Vec<_> = answers.iter().filter(|(s, _)| *s != 201 && *s != 503).collect();
    assert!(other.is_empty(), "only 201 or 503 during an outage: {other:?}");
    assert!(unavailable > 0 && created > 1, "the load spanned the outage: {created} created, {unavailable} refused");
    let slowest = answers.iter().map(|(_, took)| *took).max().unwrap();
    println!("outage: {created} runs created, {unavailable} answered 503, slowest answer {slowest:?}");
    assert!(slowest < Duration::from_secs(5), "answers stayed prompt; slowest took {slowest:?}");

    let rows: i64 = opsrun::db::schema::operation_runs::table
        .count()
        .get_result(&mut PgConnection::establish(&cluster.url("opsrun")).unwrap())
        .unwrap();
    assert_eq!(rows, created, "every acknowledged run is stored, and nothing else");
}

async fn wait_until_no_active_runs(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let page: Value = app.get("/v1/runs?status=active", &TestUser::admin()).await.json().await.unwrap();
        if page["items"].as_array().unwrap().is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "stale runs were not reaped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_instances_reap_each_stale_run_once_count_it_once_and_stream_it_to_all() {
    let database = fresh_database();
    let reaping = |config: &mut opsrun::http::startup::ApplicationConfig| {
        config.reaper = Some((Duration::from_millis(20), StaleLimits::default()));
    };
    let mut apps = Vec::new();
    for _ in 0..4 {
        apps.push(TestApp::spawn_with(database.clone(), reaping).await);
    }
    // A stream on every instance, following everything from before the first start.
    let mut streams = Vec::new();
    for app in &apps {
        streams.push(SseReader::open(app, "", &TestUser::admin(), None).await);
    }

    // Starts and moves spread over the instances.
    let mut stale = Vec::new();
    for i in 0..40 {
        let app = &apps[i % 4];
        let id = app.start(&TestUser::admin(), inventory_sync(1 + i as i64 % 3, &format!("sel-{i}"))).await;
        if i % 2 == 0 {
            apps[(i + 1) % 4].post(&format!("/v1/runs/{id}/start"), &TestUser::worker(), json!({})).await;
        }
        stale.push(id);
    }
    let first = &apps[0];
    let fresh = first.start(&TestUser::admin(), inventory_sync(9, "fresh")).await;
    // Silent for a day: far past every type's default limit. The fresh run stays active.
    sql_query(format!("UPDATE operation_runs SET updated_at = now() - interval '1 day' WHERE id <> {fresh}"))
        .execute(&mut first.db())
        .unwrap();
    first.post(&format!("/v1/runs/{fresh}/complete"), &TestUser::worker(), json!({"outcome": "succeeded"})).await;
    wait_until_no_active_runs(first).await;

    #[derive(QueryableByName)]
    struct Reaped {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        run_id: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        times: i64,
    }
    let reaped: Vec<Reaped> = sql_query(
        "SELECT run_id, count(*) AS times FROM operation_run_events WHERE kind = 'reaped' GROUP BY run_id ORDER BY run_id",
    )
    .load(&mut first.db())
    .unwrap();
    assert_eq!(reaped.iter().map(|r| r.run_id).collect::<Vec<_>>(), stale);
    assert!(reaped.iter().all(|r| r.times == 1), "a run reaped twice");

    let run: Value = first.get(&format!("/v1/runs/{}", stale[0]), &TestUser::admin()).await.json().await.unwrap();
    assert_eq!((run["status"].as_str(), run["outcome"].as_str()), (Some("completed"), Some("failed")));
    assert_eq!(run["failure_summary"]["items"][0]["reason_code"], "stale_timeout");

    // The worker that comes back late is told what happened.
    let late = first
        .post(&format!("/v1/runs/{}/complete", stale[0]), &TestUser::worker(), json!({"outcome": "succeeded"}))
        .await;
    let problem = assert_problem(late, 409, "invalid_transition").await;
    assert!(problem["detail"].as_str().unwrap().contains("reaped"), "{problem}");
    // And the identity is free again.
    first.start(&TestUser::admin(), inventory_sync(1, "sel-0")).await;

    // Counted once across the instances, whichever reaped it.
    let reaped_total: f64 =
        apps.iter().map(|app| metric_sum(&app.metrics_text_blocking(), "opsrun_runs_reaped_total")).sum();
    assert_eq!(reaped_total as usize, stale.len());
    let started_total: f64 =
        apps.iter().map(|app| metric_sum(&app.metrics_text_blocking(), "opsrun_runs_started_total")).sum();
    assert_eq!(started_total as usize, stale.len() + 2);

    // Every stream, on every instance, saw every event once, in order.
    #[derive(QueryableByName)]
    struct EventId {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        id: i64,
    }
    let events: Vec<EventId> =
        sql_query("SELECT id FROM operation_run_events ORDER BY id").load(&mut first.db()).unwrap();
    let expected: Vec<i64> = events.iter().map(|event| event.id).collect();
    for (instance, stream) in streams.iter_mut().enumerate() {
        let seen: Vec<i64> = stream.take(expected.len()).await.iter().map(|event| event.id.unwrap()).collect();
        assert_eq!(seen, expected, "the stream on instance {instance}");
        stream.assert_quiet().await;
    }
}

#[tokio::test]
async fn metrics_show_every_family_after_a_short_load() {
    let app = TestApp::spawn_with(fresh_database(), |config| {
        config.reaper = Some((Duration::from_millis(20), StaleLimits::default()));
    })
    .await;
    let stale = app.start(&TestUser::admin(), json!({"type": "workspace_audit_export"})).await;
    sql_query(format!("UPDATE operation_runs SET updated_at = now() - interval '1 day' WHERE id = {stale}"))
        .execute(&mut app.db())
        .unwrap();
    wait_until_no_active_runs(&app).await;
    let run = app.start(&TestUser::admin(), inventory_sync(1, "a")).await;
    app.post("/v1/runs", &TestUser::admin(), inventory_sync(1, "a")).await;
    app.post(&format!("/v1/runs/{run}/start"), &TestUser::worker(), json!({})).await;
    app.get(&format!("/v1/runs/{run}"), &TestUser::admin()).await;
    app.get("/v1/runs/12345", &TestUser::admin()).await;

    let response = app.client.get(format!("{}/metrics", app.address)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = response.text().await.unwrap();
    for expected in [
        r#"opsrun_http_requests_total{method="POST",route="/v1/runs",status="201"} 2"#,
        r#"opsrun_http_requests_total{method="POST",route="/v1/runs",status="409"} 1"#,
        r#"opsrun_http_requests_total{method="GET",route="/v1/runs/{id}",status="404"} 1"#,
        r#"opsrun_http_request_duration_seconds_bucket{method="GET",route="/v1/runs/{id}",status="200",le="+Inf"} 1"#,
        r#"opsrun_runs_started_total{type="inventory_sync"} 1"#,
        r#"opsrun_duplicate_refusals_total{type="inventory_sync"} 1"#,
        r#"opsrun_transitions_total{kind="started"} 1"#,
        r#"opsrun_db_pool_connections{state="max"} 8"#,
        r#"opsrun_db_pool_connections{state="waiting"} 0"#,
        r#"opsrun_runs_reaped_total{type="workspace_audit_export"} 1"#,
        r#"opsrun_runs_reaped_total{type="inventory_sync"} 0"#,
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
}

#[tokio::test]
async fn request_ids_are_accepted_or_made_and_echoed_into_problems() {
    let app = TestApp::spawn().await;
    let url = format!("{}/v1/runs/424242", app.address);
    let given = app
        .client
        .get(&url)
        .bearer_auth(TestUser::admin())
        .header("x-request-id", "trace-abc.123")
        .send()
        .await
        .unwrap();
    assert_eq!(given.headers()["x-request-id"], "trace-abc.123");
    let body: Value = given.json().await.unwrap();
    assert_eq!(body["request_id"], "trace-abc.123");

    for unusable in [None, Some("has spaces and ünïcode"), Some(&*"x".repeat(200))] {
        let mut request = app.client.get(&url).bearer_auth(TestUser::admin());
        if let Some(id) = unusable {
            request = request.header("x-request-id", id);
        }
        let response = request.send().await.unwrap();
        let echoed = response.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert_eq!(echoed.len(), 32, "a fresh id replaces {unusable:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["request_id"], echoed.as_str());
    }
    let ok = app.get("/v1/runs", &TestUser::admin()).await;
    assert!(ok.headers().contains_key("x-request-id"));
}

#[test]
fn opsrun_reap_lists_with_dry_run_and_then_reaps() {
    let database_url = fresh_database();
    let mut conn = PgConnection::establish(&database_url).unwrap();
    sql_query(
        "INSERT INTO operation_runs (workspace_id, tenant_id, initiator_name, type, run_identity_hash, identity_policy, updated_at)
         VALUES (1, 1, 'x', 'policy_sync', repeat('b', 64), 'dedupe_active', now() - interval '2 hours'),
                (1, 1, 'x', 'policy_sync', repeat('c', 64), 'dedupe_active', now() - interval '10 minutes')",
    )
    .execute(&mut conn)
    .unwrap();
    let reap = |extra: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_opsrun"))
            .arg("reap")
            .args(extra)
            .env("DATABASE_URL", &database_url)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    };
    let listed = reap(&["--dry-run"]);
    assert!(listed.contains("would reap 1 stale run(s)"), "{listed}");
    assert!(listed.contains("policy_sync"), "{listed}");
    let reaped = reap(&[]);
    assert!(reaped.contains("reaped 1 stale run(s)"), "{reaped}");
    assert!(reap(&[]).contains("reaped 0 stale run(s)"), "a second pass finds nothing");
    let active: i64 = opsrun::db::schema::operation_runs::table
        .filter(diesel::dsl::sql::<diesel::sql_types::Bool>("status IN ('queued', 'running')"))
        .count()
        .get_result(&mut conn)
        .unwrap();
    assert_eq!(active, 1, "the run silent for ten minutes is within policy_sync's 45-minute limit");
}

/// A request stuck past its budget — here a move waiting on a row another session holds —
/// answers `503 request_timeout` with `Retry-After`, whichever end of the budget (the
/// client's wait or the server's statement timeout) runs out first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_budget_answers_503_request_timeout() {
    let app =
        TestApp::spawn_with(fresh_database(), |config| config.pool.work_timeout = Duration::from_millis(400)).await;
    let id = app.start(&TestUser::admin(), inventory_sync(1, "x")).await;
    let mut holder = app.db();
    holder.begin_test_transaction().unwrap();
    sql_query(format!("SELECT id FROM operation_runs WHERE id = {id} FOR UPDATE")).execute(&mut holder).unwrap();

    let started = Instant::now();
    let stuck = app.post(&format!("/v1/runs/{id}/start"), &TestUser::worker(), json!({})).await;
    assert_eq!(stuck.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned()), Some("2".into()));
    assert_problem(stuck, 503, "request_timeout").await;
    assert!(started.elapsed() < Duration::from_secs(5), "answered within its budget, not after the lock");
    drop(holder);
}

#[tokio::test]
async fn pooled_connections_carry_their_settings_without_session_state() {
    #[derive(QueryableByName)]
    struct Settings {
        #[diesel(sql_type = diesel::sql_types::Text)]
        statement_timeout: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        application_name: String,
    }
    let pool = opsrun::db::PoolConfig {
        size: 2,
        checkout_timeout: Duration::from_secs(5),
        work_timeout: Duration::from_millis(1234),
        statement_cache: false,
    };
    let db = opsrun::db::Database::connect(&fresh_database(), "opsrun-test", &pool);
    let settings: Settings = db
        .run(|conn| {
            sql_query("SELECT current_setting('statement_timeout') AS statement_timeout, current_setting('application_name') AS application_name")
                .get_result(conn)
                .map_err(opsrun::db::DbError::from)
        })
        .await
        .unwrap();
    // Set at connection start (libpq startup parameters), not by a `SET` a pooler would leak.
    assert_eq!((settings.statement_timeout.as_str(), settings.application_name.as_str()), ("1234ms", "opsrun-test"));
}
