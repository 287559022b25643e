//! `GET /v1/runs/stream`: live run events across instances, in order, resumable without
//! gap or duplicate, never showing a run the caller may not view, dropping a reader too
//! slow to keep up, and ending cleanly on shutdown and token expiry.

use std::io::Write;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::{sql_query, RunQueryDsl};
use opsrun::http::auth::mint_token;
use opsrun::http::startup::Application;
use serde_json::{json, Value};

use crate::helpers::sse::{Sse, SseReader};
use crate::helpers::{
    assert_problem, claims, fresh_database, inventory_sync, mint, started_run, TestApp, TestUser, SECRET,
};

fn kinds(events: &[Sse]) -> Vec<&str> {
    events.iter().map(|e| e.event.as_str()).collect()
}

fn event_ids(events: &[Sse]) -> Vec<i64> {
    events.iter().map(|e| e.id.unwrap()).collect()
}

async fn progress(app: &TestApp, id: i64, processed: i64) {
    let response = app
        .post(&format!("/v1/runs/{id}/progress"), &TestUser::worker(), json!({"counts": {"processed": processed}}))
        .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_run_moved_through_one_instance_streams_in_order_from_another() {
    let writer = TestApp::spawn().await;
    let reader_instance = writer.second_instance().await;
    let mut stream = SseReader::open(&reader_instance, "", &TestUser::admin(), None).await;

    let id = started_run(&writer).await;
    for _ in 0..3 {
        progress(&writer, id, 40).await;
    }
    let done = writer
        .post(
            &format!("/v1/runs/{id}/complete"),
            &TestUser::worker(),
            json!({"outcome": "succeeded", "counts": {"total": 120}}),
        )
        .await;
    assert_eq!(done.status(), 200);

    let events = stream.take(6).await;
    assert_eq!(kinds(&events), ["created", "started", "progressed", "progressed", "progressed", "completed"]);
    let ids = event_ids(&events);
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "in id order: {ids:?}");
    let timeline: Value = writer.get(&format!("/v1/runs/{id}/events"), &TestUser::admin()).await.json().await.unwrap();
    let timeline_ids: Vec<i64> =
        timeline["items"].as_array().unwrap().iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, timeline_ids, "the stream is the timeline");
    for event in &events {
        assert_eq!(event.data["run"]["id"], id);
        assert_eq!(event.data["run"]["type"], "inventory_sync");
        assert_eq!(event.data["run"]["tenant_id"], 1);
        assert_eq!(event.data["event"]["kind"], event.event);
    }
    assert_eq!(events[2].data["event"]["detail"]["counts"], json!({"processed": 40}));
    assert_eq!(events[5].data["run"]["status"], "completed");
    assert_eq!(events[5].data["run"]["outcome"], "succeeded");
    stream.assert_quiet().await;
}

#[tokio::test]
async fn a_resumed_stream_gets_exactly_the_missed_events_then_live_ones() {
    let app = TestApp::spawn().await;
    let mut first = SseReader::open(&app, "", &TestUser::admin(), None).await;
    let id = started_run(&app).await;
    let seen = first.take(2).await;
    let last_seen = seen[1].id.unwrap();
    drop(first);

    for processed in 1..=10 {
        progress(&app, id, processed).await;
    }
    let mut resumed = SseReader::open(&app, "", &TestUser::admin(), Some(last_seen)).await;
    let missed = resumed.take(10).await;
    progress(&app, id, 100).await;
    progress(&app, id, 200).await;
    let live = resumed.take(2).await;

    let timeline: Value =
        app.get(&format!("/v1/runs/{id}/events?after={last_seen}"), &TestUser::admin()).await.json().await.unwrap();
    let expected: Vec<i64> = timeline["items"].as_array().unwrap().iter().map(|e| e["id"].as_i64().unwrap()).collect();
    let received: Vec<i64> = event_ids(&missed).into_iter().chain(event_ids(&live)).collect();
    assert_eq!(received, expected, "no gap, no duplicate");
    let counts: Vec<i64> = missed
        .iter()
        .chain(&live)
        .map(|e| e.data["event"]["detail"]["counts"]["processed"].as_i64().unwrap())
        .collect();
    assert_eq!(counts, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 100, 200]);
    resumed.assert_quiet().await;

    // `after` does what `Last-Event-ID` does, for clients that cannot set the header.
    let mut by_query = SseReader::open(&app, &format!("?after={last_seen}"), &TestUser::admin(), None).await;
    assert_eq!(event_ids(&by_query.take(12).await), expected);
}

#[tokio::test]
async fn runs_the_caller_may_not_view_never_appear() {
    let app = TestApp::spawn().await;
    // Tenant 1 of workspace 1, able to view inventory syncs only.
    let viewer = TestUser::with(json!([1]), &["inventory.sync"]);
    let mut stream = SseReader::open(&app, "", &viewer, None).await;

    let mut other_workspace =
        claims(2, json!("*"), &opsrun::http::auth::all_capabilities().iter().map(String::as_str).collect::<Vec<_>>());
    other_workspace.sub = "9".into();
    app.start(&mint(&other_workspace), inventory_sync(1, "foreign")).await;
    app.start(&TestUser::admin(), inventory_sync(2, "other tenant")).await;
    app.start(
        &TestUser::admin(),
        json!({"type": "directory_groups_sync", "tenant_id": 1, "inputs": {"selection_key": "all"}}),
    )
    .await;
    let visible = app.start(&TestUser::admin(), inventory_sync(1, "visible")).await;

    let event = stream.next().await;
    assert_eq!(event.data["run"]["id"], visible, "only the visible run appears: {:?}", event.data);
    stream.assert_quiet().await;

    // The catch-up applies the same rule.
    let mut replay = SseReader::open(&app, "?after=0", &viewer, None).await;
    assert_eq!(replay.next().await.data["run"]["id"], visible);
    replay.assert_quiet().await;
}

#[tokio::test]
async fn filters_narrow_the_stream() {
    let app = TestApp::spawn().await;
    let first = app.start(&TestUser::admin(), inventory_sync(1, "a")).await;
    let second = app.start(&TestUser::admin(), inventory_sync(2, "b")).await;
    let mut by_run = SseReader::open(&app, &format!("?after=0&run_id={second}"), &TestUser::admin(), None).await;
    assert_eq!(by_run.next().await.data["run"]["id"], second);
    by_run.assert_quiet().await;
    let mut by_tenant =
        SseReader::open(&app, "?after=0&tenant_id=1&type=inventory_sync", &TestUser::admin(), None).await;
    assert_eq!(by_tenant.next().await.data["run"]["id"], first);
    by_tenant.assert_quiet().await;
    for bad in ["?type=inventory.sync", "?run_id=0", "?after=-1", "?colour=blue"] {
        let response = app
            .client
            .get(format!("{}/v1/runs/stream{bad}", app.address))
            .bearer_auth(TestUser::admin())
            .send()
            .await
            .unwrap();
        assert_problem(response, 400, "invalid_query").await;
    }
    let response = app
        .client
        .get(format!("{}/v1/runs/stream", app.address))
        .bearer_auth(TestUser::admin())
        .header("Last-Event-ID", "yesterday")
        .send()
        .await
        .unwrap();
    assert_problem(response, 400, "bad_request").await;
}

#[tokio::test]
async fn an_event_source_may_send_its_token_in_the_query() {
    let app = TestApp::spawn().await;
    let response = app
        .client
        .get(format!("{}/v1/runs/stream?access_token={}", app.address, TestUser::admin()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let response = app.client.get(format!("{}/v1/runs/stream", app.address)).send().await.unwrap();
    assert_problem(response, 401, "unauthenticated").await;
    let response = app.client.get(format!("{}/v1/runs/stream?access_token=forged", app.address)).send().await.unwrap();
    assert_problem(response, 401, "unauthenticated").await;
}

/// A stream whose client never reads, on a socket with a small receive buffer.
fn stalled_stream(app: &TestApp) -> TcpStream {
    let address = app.address.strip_prefix("http://").unwrap();
    let socket = TcpStream::connect(address).unwrap();
    let small: libc::c_int = 4096;
    // SAFETY: setsockopt on an open socket with a valid int.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &small as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    let mut writer = &socket;
    write!(
        writer,
        "GET /v1/runs/stream HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\r\n",
        TestUser::admin()
    )
    .unwrap();
    socket
}

fn metric(app: &TestApp, name: &str) -> f64 {
    let text = app.metrics_text_blocking();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} in {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_is_dropped_while_other_streams_keep_flowing() {
    let app = TestApp::spawn_with(fresh_database(), |config| {
        config.live.stalled_client_timeout = Duration::from_secs(2);
    })
    .await;
    let id = started_run(&app).await;
    let mut reading = SseReader::open(&app, "", &TestUser::admin(), None).await;
    let _stalled = stalled_stream(&app);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(metric(&app, "opsrun_streams_open"), 2.0);

    // Far more events than the stalled stream's socket buffers and backlog can hold,
    // written straight to the timeline in batches, each announced as opsrun's writers do.
    const BATCHES: usize = 100;
    const PER_BATCH: usize = 250;
    let reader = tokio::spawn(async move {
        let mut received = 0;
        while received < BATCHES * PER_BATCH {
            // The run's own `created` and `started` may still be on their way.
            if reading.next().await.data["event"]["actor"] == "bulk" {
                received += 1;
            }
        }
        reading
    });
    let mut conn = app.db();
    for _ in 0..BATCHES {
        sql_query(format!(
            "INSERT INTO operation_run_events (run_id, workspace_id, actor, kind, from_status, to_status, outcome, detail) \
             SELECT {id}, 1, 'bulk', 'progressed', 'running', 'running', 'pending', jsonb_build_object('n', n) \
             FROM generate_series(1, {PER_BATCH}) AS n"
        ))
        .execute(&mut conn)
        .unwrap();
        opsrun::db::announce(&mut conn);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut reading =
        tokio::time::timeout(Duration::from_secs(60), reader).await.expect("the reader keeps up").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&app, "opsrun_streams_open") > 1.0 {
        assert!(Instant::now() < deadline, "the stalled stream is dropped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(metric(&app, "opsrun_streams_dropped_slow_total"), 1.0);

    // The reading stream still gets new events.
    let later = app.start(&TestUser::admin(), inventory_sync(1, "after the flood")).await;
    assert_eq!(reading.next().await.data["run"]["id"], later);
}

#[tokio::test]
async fn streams_past_the_limit_are_refused_with_503() {
    let app = TestApp::spawn_with(fresh_database(), |config| {
        config.live.max_streams = 2;
        // A departed client is noticed when a write to it fails: at the next heartbeat.
        config.live.heartbeat = Duration::from_millis(100);
    })
    .await;
    let first = SseReader::open(&app, "", &TestUser::admin(), None).await;
    let _second = SseReader::open(&app, "", &TestUser::admin(), None).await;
    let refused =
        app.client.get(format!("{}/v1/runs/stream", app.address)).bearer_auth(TestUser::admin()).send().await.unwrap();
    assert_eq!(refused.headers()["retry-after"], "2");
    let problem = assert_problem(refused, 503, "stream_limit_reached").await;
    assert!(problem["detail"].as_str().unwrap().contains("2 live streams"), "{problem}");
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&app, "opsrun_streams_open") > 1.0 {
        assert!(Instant::now() < deadline, "the departed stream's slot is freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    SseReader::open(&app, "", &TestUser::admin(), None).await;
}

#[tokio::test]
async fn a_stream_ends_when_its_token_expires() {
    let app = TestApp::spawn_with(fresh_database(), |config| config.auth.leeway = Duration::ZERO).await;
    let mut short_lived = claims(1, json!("*"), &["inventory.sync"]);
    short_lived.exp = chrono::Utc::now().timestamp() + 2;
    let token = mint_token(SECRET, &short_lived).unwrap();
    let mut stream = SseReader::open(&app, "", &token, None).await;
    let opened = Instant::now();
    let closing = stream.next_within(Duration::from_secs(5)).await.expect("a closing event");
    assert_eq!(closing.event, "closing");
    assert_eq!(closing.data["reason"], "token_expired");
    assert!(opened.elapsed() < Duration::from_secs(4), "closed at expiry, took {:?}", opened.elapsed());
    assert!(stream.next_within(Duration::from_secs(2)).await.is_none(), "the stream ends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_open_streams_finishes_well_within_the_grace_period() {
    let database_url = fresh_database();
    let mut config = crate::helpers::test_config(database_url.clone());
    config.workers = 1;
    let application = Application::build(config).unwrap();
    let app = TestApp::at(application.port(), database_url);
    let stop = Arc::new(tokio::sync::Notify::new());
    let stopper = Arc::clone(&stop);
    let running = tokio::spawn(application.run_until_stopped(move || {
        let stop = Arc::clone(&stopper);
        async move { stop.notified().await }
    }));
    let mut streams = Vec::new();
    for _ in 0..5 {
        streams.push(SseReader::open(&app, "", &TestUser::admin(), None).await);
    }
    let asked = Instant::now();
    stop.notify_one();
    for stream in &mut streams {
        let closing = stream.next_within(Duration::from_secs(5)).await.expect("a closing event");
        assert_eq!((closing.event.as_str(), closing.data["reason"].as_str()), ("closing", Some("shutdown")));
    }
    tokio::time::timeout(Duration::from_secs(10), running).await.expect("the server stops").unwrap().unwrap();
    assert!(asked.elapsed() < Duration::from_secs(3), "stopped in {:?}", asked.elapsed());
}

async fn long_poll(app: &TestApp, id: i64, etag: &str, wait: &str) -> reqwest::Response {
    app.client
        .get(format!("{}/v1/runs/{id}?wait={wait}", app.address))
        .bearer_auth(TestUser::admin())
        .header("If-None-Match", etag)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_answers_within_100_ms_of_a_change_on_another_instance() {
    let app = TestApp::spawn().await;
    let other = app.second_instance().await;
    let id = started_run(&app).await;
    let etag =
        app.get(&format!("/v1/runs/{id}"), &TestUser::admin()).await.headers()["etag"].to_str().unwrap().to_owned();

    let waiter = app.clone_client();
    let tag = etag.clone();
    let waiting = tokio::spawn(async move {
        let response = long_poll(&waiter, id, &tag, "30s").await;
        (Instant::now(), response)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "a current tag waits");
    let moved =
        other.post(&format!("/v1/runs/{id}/progress"), &TestUser::worker(), json!({"counts": {"processed": 1}})).await;
    let committed = Instant::now();
    assert_eq!(moved.status(), 200);
    let (answered, response) = waiting.await.unwrap();
    assert_eq!(response.status(), 200);
    assert_ne!(response.headers()["etag"].to_str().unwrap(), etag);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["summary_counts"]["processed"], 1);
    let lag = answered.saturating_duration_since(committed);
    assert!(lag < Duration::from_millis(100), "answered {lag:?} after the change");
}

#[tokio::test]
async fn a_long_poll_answers_304_at_its_timeout_and_refuses_bad_waits() {
    let app = TestApp::spawn().await;
    let id = started_run(&app).await;
    let etag =
        app.get(&format!("/v1/runs/{id}"), &TestUser::admin()).await.headers()["etag"].to_str().unwrap().to_owned();
    let asked = Instant::now();
    let response = long_poll(&app, id, &etag, "1s").await;
    assert_eq!(response.status(), 304);
    let waited = asked.elapsed();
    assert!(waited >= Duration::from_secs(1) && waited < Duration::from_secs(3), "waited {waited:?}");

    // A stale tag, or none, answers at once.
    let asked = Instant::now();
    assert_eq!(long_poll(&app, id, "\"run-1.0\"", "30s").await.status(), 200);
    let plain = app.get(&format!("/v1/runs/{id}?wait=30s"), &TestUser::admin()).await;
    assert_eq!(plain.status(), 200);
    assert!(asked.elapsed() < Duration::from_secs(2));

    for bad in ["61s", "soon", "-1s"] {
        let problem = assert_problem(long_poll(&app, id, &etag, bad).await, 400, "invalid_query").await;
        assert!(problem["detail"].as_str().unwrap().starts_with("`wait`"), "{problem}");
    }
    // The access rules come first: a run outside the caller's tenants is 404 at once.
    let outsider = TestUser::with(json!([2]), &["inventory.sync"]);
    let response = app
        .client
        .get(format!("{}/v1/runs/{id}?wait=30s", app.address))
        .bearer_auth(outsider)
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_problem(response, 404, "not_found").await;
}

#[tokio::test]
async fn another_instances_announcement_is_what_brings_its_events() {
    let writer = TestApp::spawn().await;
    // This listener never reads the table unasked: only an announcement makes it read, so
    // one that took the writer's `NOTIFY` for its own echo would never show the run.
    let reader = TestApp::spawn_with(writer.database_url.clone(), |config| {
        config.live.unannounced_check = Duration::from_secs(3600)
    })
    .await;
    let mut stream = SseReader::open(&reader, "", &TestUser::admin(), None).await;

    let id = started_run(&writer).await;
    let event = stream.next_within(Duration::from_secs(10)).await.expect("announced by the writer's instance");
    assert_eq!(event.data["run"]["id"], id);
    // Its own writes it announces and reads at once, echo or not.
    progress(&reader, id, 7).await;
    loop {
        let event = stream.next_within(Duration::from_secs(10)).await.expect("read after the reader's own write");
        if event.event == "progressed" {
            assert_eq!(event.data["event"]["detail"]["counts"], json!({"processed": 7}));
            break;
        }
    }
}

#[tokio::test]
async fn an_event_written_without_an_announcement_still_arrives() {
    let app = TestApp::spawn().await;
    let id = started_run(&app).await;
    let mut stream = SseReader::open(&app, &format!("?run_id={id}"), &TestUser::admin(), None).await;
    // As a writer outside opsrun (or one that crashed between commit and announcement)
    // would leave it: committed, never announced.
    sql_query(format!(
        "INSERT INTO operation_run_events (run_id, workspace_id, actor, kind, from_status, to_status, outcome) \
         VALUES ({id}, 1, 'by hand', 'progressed', 'running', 'running', 'pending')"
    ))
    .execute(&mut app.db())
    .unwrap();
    // The run's own `created` and `started` may still be on their way.
    loop {
        let event = stream.next_within(Duration::from_secs(3)).await.expect("found by the listener's own check");
        if event.data["event"]["actor"] == "by hand" {
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_commit_out_of_order_yet_every_event_arrives_once_in_id_order() {
    let app = TestApp::spawn_with(fresh_database(), |config| config.pool.size = 16).await;
    let mut stream = SseReader::open(&app, "?type=inventory_sync", &TestUser::admin(), None).await;
    const WRITERS: usize = 8;
    const EACH: usize = 25;
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let app = app.clone_client();
            tokio::spawn(async move {
                for n in 0..EACH {
                    app.start(&TestUser::admin(), inventory_sync(1 + (n % 3) as i64, &format!("race-{writer}-{n}")))
                        .await;
                }
            })
        })
        .collect();
    let events = stream.take(WRITERS * EACH).await;
    for writer in writers {
        writer.await.unwrap();
    }
    let ids = event_ids(&events);
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "strictly increasing: {ids:?}");
    #[derive(diesel::QueryableByName)]
    struct Id {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        id: i64,
    }
    let committed: Vec<i64> = sql_query("SELECT id FROM operation_run_events WHERE kind = 'created' ORDER BY id")
        .load::<Id>(&mut app.db())
        .unwrap()
        .into_iter()
        .map(|row| row.id)
        .collect();
    assert_eq!(ids, committed, "every committed event, once");
    stream.assert_quiet().await;
}

#[tokio::test]
async fn head_on_the_stream_answers_its_headers_and_holds_no_slot() {
    let app = TestApp::spawn().await;
    let response =
        app.client.head(format!("{}/v1/runs/stream", app.address)).bearer_auth(TestUser::admin()).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    drop(response);
    assert_eq!(metric(&app, "opsrun_streams_open"), 0.0);
}
