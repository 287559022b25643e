//! On the high-availability lab (`scripts/ha-lab.sh`): a primary killed under load, a
//! read replica, and the figures docs/DEPLOYMENT.md quotes. Ignored by default, since
//! they need the lab; `scripts/ha-test.sh` brings it up, runs them, and takes it down.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::sql_types::{BigInt, Text};
use diesel::{sql_query, Connection, OptionalExtension, PgConnection, QueryableByName, RunQueryDsl};
use serde_json::{json, Value};

use crate::helpers::sse::SseReader;
use crate::helpers::{click, spawn_all, TestApp, TestUser};

/// The lab's URLs, as `scripts/ha-lab.sh urls` prints them.
struct Lab {
    urls: BTreeMap<String, String>,
}

impl Lab {
    fn running() -> Lab {
        let output = Command::new("scripts/ha-lab.sh").arg("urls").output().expect("scripts/ha-lab.sh runs");
        let text = String::from_utf8(output.stdout).unwrap();
        let urls = text.lines().filter_map(|line| line.split_once('=')).map(|(k, v)| (k.into(), v.into())).collect();
        Lab { urls }
    }

    /// `key`'s URL with its database replaced by `database`.
    fn url(&self, key: &str, database: &str) -> String {
        let url = &self.urls[key];
        let (server, rest) = url.rsplit_once('/').unwrap();
        let query = rest.split_once('?').map_or(String::new(), |(_, query)| format!("?{query}"));
        format!("{server}/{database}{query}")
    }

    /// The multi-host URL of `database` with the current primary's host first.
    ///
    /// libpq moves on to a URL's next host when a connection fails, but not when a server
    /// refuses the startup itself, as a standby does for a database it has not replayed
    /// yet (after the API suite the standbys' replay can lag far behind). With the
    /// primary first, a new database is reachable at once, and a failover still moves on.
    fn primary_first(&self, database: &str) -> String {
        let (scheme_and_user, rest) = self.urls["DATABASE_URL"].split_once('@').unwrap();
        let (hosts, query) = rest.split_once('/').unwrap();
        let query = query.split_once('?').map_or(String::new(), |(_, query)| format!("?{query}"));
        let mut hosts: Vec<&str> = hosts.split(',').collect();
        let is_primary = |host: &&str| {
            PgConnection::establish(&format!("{scheme_and_user}@{host}/postgres")).is_ok_and(|mut conn| {
                sql_query("SELECT NOT pg_is_in_recovery() AS primary")
                    .get_result::<Primary>(&mut conn)
                    .is_ok_and(|p| p.primary)
            })
        };
        hosts.sort_by_key(|host| !is_primary(host));
        format!("{scheme_and_user}@{}/{database}{query}", hosts.join(","))
    }

    /// A new, migrated database on the primary; returns its multi-host URL, primary first.
    /// Returns once the read replica holds it too (its replay may lag after the suite).
    fn database(&self, name: &str) -> String {
        // After a failover test the node killed last may still be rejoining.
        self.whole();
        let mut admin = PgConnection::establish(&self.primary_first("postgres")).unwrap();
        sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin).unwrap();
        sql_query(format!("CREATE DATABASE {name}")).execute(&mut admin).unwrap();
        let created = database_oid(&mut admin, name).unwrap();
        let replica = self.url("DATABASE_READ_URL", "postgres");
        let replayed = || {
            PgConnection::establish(&replica)
                .is_ok_and(|mut conn| database_oid(&mut conn, name).is_ok_and(|oid| oid == created))
        };
        let deadline = Instant::now() + Duration::from_secs(300);
        while !replayed() {
            assert!(Instant::now() < deadline, "the replica has not replayed CREATE DATABASE {name}");
            std::thread::sleep(Duration::from_millis(200));
        }
        let url = self.primary_first(name);
        let mut conn = PgConnection::establish(&url).unwrap();
        opsrun::db::migrate(&mut conn).unwrap();
        sql_query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements").execute(&mut conn).unwrap();
        url
    }

    /// Kills the primary hard; returns once the other node takes writes.
    fn fail_over(&self) {
        let status = Command::new("scripts/ha-lab.sh").arg("failover").status().unwrap();
        assert!(status.success(), "scripts/ha-lab.sh failover failed");
    }

    /// Waits until the node killed last has rejoined as the secondary.
    fn whole(&self) {
        let status = Command::new("scripts/ha-lab.sh").arg("ready").status().unwrap();
        assert!(status.success(), "the formation did not become whole again");
    }
}

#[derive(QueryableByName)]
struct Primary {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    primary: bool,
}

/// The oid of the database called `name` on `conn`'s server, if it holds one.
fn database_oid(conn: &mut PgConnection, name: &str) -> diesel::QueryResult<Option<i64>> {
    #[derive(QueryableByName)]
    struct Oid {
        #[diesel(sql_type = BigInt)]
        oid: i64,
    }
    let query = sql_query("SELECT oid::bigint AS oid FROM pg_database WHERE datname = $1").bind::<Text, _>(name);
    Ok(query.get_result::<Oid>(conn).optional()?.map(|row| row.oid))
}

/// One answer a client got.
#[derive(Clone, Debug)]
struct Answer {
    at: Duration,
    status: u16,
    retry_after: bool,
}

/// What the clients of one round saw, and the runs they were told exist.
#[derive(Default)]
struct Round {
    answers: Vec<Answer>,
    /// Runs answered `201`, and whether their completion was acknowledged too.
    acknowledged: BTreeMap<i64, bool>,
    /// Starts answered 503: they may or may not have committed.
    unanswered_starts: usize,
}

/// Sends `path` until the service answers something other than 503, noting each answer.
async fn until_answered(app: &TestApp, path: &str, token: &str, body: Value, round: &Mutex<Round>, t0: Instant) -> u16 {
    loop {
        let response = app.post(path, token, body.clone()).await;
        let answer = Answer {
            at: t0.elapsed(),
            status: response.status().as_u16(),
            retry_after: response.headers().contains_key("retry-after"),
        };
        round.lock().unwrap().answers.push(answer.clone());
        if answer.status != 503 {
            return answer.status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A client that starts runs and, as their worker, moves each to completed, until told to
/// stop. A start answered 503 is not retried (it may have committed: that is what the
/// count of unanswered starts bounds); a move answered 503 is, until it is answered.
async fn client(app: Arc<TestApp>, stop: Arc<AtomicBool>, round: Arc<Mutex<Round>>, t0: Instant) {
    while !stop.load(Ordering::Relaxed) {
        let response = app.post("/v1/runs", &TestUser::admin(), click(1)).await;
        let status = response.status().as_u16();
        let retry_after = response.headers().contains_key("retry-after");
        let body: Value = response.json().await.unwrap_or(Value::Null);
        round.lock().unwrap().answers.push(Answer { at: t0.elapsed(), status, retry_after });
        if status == 503 {
            round.lock().unwrap().unanswered_starts += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        assert_eq!(status, 201, "a start answered {status}: {body}");
        let id = body["id"].as_i64().unwrap();
        round.lock().unwrap().acknowledged.insert(id, false);
        let worker = TestUser::worker();
        // 409 after a 503: the move had committed before its answer was lost.
        let started = until_answered(&app, &format!("/v1/runs/{id}/start"), &worker, json!({}), &round, t0).await;
        assert!(matches!(started, 200 | 409), "start work answered {started}");
        let done = json!({"outcome": "succeeded"});
        let completed = until_answered(&app, &format!("/v1/runs/{id}/complete"), &worker, done, &round, t0).await;
        assert!(matches!(completed, 200 | 409), "complete answered {completed}");
        round.lock().unwrap().acknowledged.insert(id, true);
    }
}

#[derive(QueryableByName)]
struct RunState {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    status: String,
}

#[derive(QueryableByName)]
struct EventId {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the HA lab: scripts/ha-test.sh"]
async fn a_killed_primary_loses_no_acknowledged_run_and_opsrun_heals_without_restart() {
    let lab = Lab::running();
    let url = lab.database("ha_failover");
    let app = Arc::new(
        TestApp::spawn_with(url.clone(), |config| {
            config.pool.checkout_timeout = Duration::from_millis(1000);
            config.pool.work_timeout = Duration::from_secs(5);
        })
        .await,
    );
    // A client following every event through all three failovers.
    let mut stream = SseReader::open(&app, "", &TestUser::admin(), None).await;
    let streamed = Arc::new(Mutex::new(Vec::<i64>::new()));
    let following = {
        let streamed = Arc::clone(&streamed);
        tokio::spawn(async move {
            while let Some(event) = stream.next_within(Duration::from_secs(60)).await {
                streamed.lock().unwrap().push(event.id.unwrap());
            }
        })
    };

    let mut report = String::new();
    for round_number in 1..=3 {
        tokio::task::spawn_blocking({
            let lab = Lab { urls: lab.urls.clone() };
            move || lab.whole()
        })
        .await
        .unwrap();
        let t0 = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let round = Arc::new(Mutex::new(Round::default()));
        let clients = (0..4).map(|_| client(app.clone(), stop.clone(), round.clone(), t0)).collect();
        let load = tokio::spawn(spawn_all(clients));
        // An orchestrator's readiness probe, every 100 ms.
        let probe = {
            let (app, stop) = (app.clone(), stop.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let ready = app.request(reqwest::Method::GET, "/readyz", None, None).await.status().as_u16();
                    seen.push((t0.elapsed(), ready));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                seen
            })
        };
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let killed_at = t0.elapsed();
        tokio::task::spawn_blocking({
            let lab = Lab { urls: lab.urls.clone() };
            move || lab.fail_over()
        })
        .await
        .unwrap();
        // Served again without a restart: a start answered 201 after the new primary is up.
        let promoted_at = t0.elapsed();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !round.lock().unwrap().answers.iter().any(|a| a.at > promoted_at && a.status == 201) {
            assert!(Instant::now() < deadline, "round {round_number}: no 201 within 30s of the promotion");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        stop.store(true, Ordering::Relaxed);
        load.await.unwrap();
        // Readiness told the truth: not ready while no primary took writes, ready after.
        let probes = probe.await.unwrap();
        let unready: Vec<Duration> = probes.iter().filter(|(_, status)| *status != 200).map(|(at, _)| *at).collect();
        assert!(probes.iter().all(|(_, status)| matches!(status, 200 | 503)), "{probes:?}");
        assert!(
            unready.iter().any(|at| *at > killed_at && *at < promoted_at),
            "round {round_number}: /readyz never said 503 during the outage"
        );
        assert_eq!(probes.last().map(|(_, status)| *status), Some(200), "round {round_number}: not ready after");

        let round = Arc::try_unwrap(round).ok().unwrap().into_inner().unwrap();
        let failed: Vec<&Answer> = round.answers.iter().filter(|a| !(200..300).contains(&a.status)).collect();
        for answer in &failed {
            assert!(
                matches!(answer.status, 503 | 409) && (answer.status != 503 || answer.retry_after),
                "round {round_number}: {answer:?}: only a 503 with Retry-After may answer during a failover"
            );
        }
        let unavailable: Vec<&&Answer> = failed.iter().filter(|a| a.status == 503).collect();
        let (first, last) = (unavailable.first().map(|a| a.at), unavailable.last().map(|a| a.at));

        // Every acknowledged run is on the new primary, completed if its completion was.
        let mut conn = PgConnection::establish(&url).unwrap();
        let ids: Vec<i64> = round.acknowledged.keys().copied().collect();
        let found: Vec<RunState> = sql_query(format!(
            "SELECT id, status::text AS status FROM operation_runs WHERE id IN ({})",
            ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
        ))
        .load(&mut conn)
        .unwrap();
        let found: BTreeMap<i64, String> = found.into_iter().map(|run| (run.id, run.status)).collect();
        let lost: Vec<&i64> = round.acknowledged.keys().filter(|id| !found.contains_key(id)).collect();
        let uncompleted: Vec<&i64> = round
            .acknowledged
            .iter()
            .filter(|(id, done)| **done && found[id] != "completed")
            .map(|(id, _)| id)
            .collect();
        assert!(lost.is_empty(), "round {round_number}: acknowledged runs lost: {lost:?}");
        assert!(uncompleted.is_empty(), "round {round_number}: acknowledged completions lost: {uncompleted:?}");
        // None invented: besides the acknowledged ones, only starts whose answer was lost.
        let (low, high) = (ids[0], *ids.last().unwrap());
        let all: Vec<EventId> = sql_query(format!("SELECT id FROM operation_runs WHERE id BETWEEN {low} AND {high}"))
            .load(&mut conn)
            .unwrap();
        let unacknowledged = all.iter().filter(|run| !round.acknowledged.contains_key(&run.id)).count();
        assert!(
            unacknowledged <= round.unanswered_starts,
            "round {round_number}: {unacknowledged} runs nobody was told of, from {} unanswered starts",
            round.unanswered_starts
        );

        let line = format!(
            "round {round_number}: {} answers; {} runs acknowledged, all found, 0 lost; {} completions acknowledged, all \
             completed; {} answers 503 (all with Retry-After), {} other refusals (409 after a 503), 0 500s; outage \
             as clients saw it: first 503 at +{} ms, last at +{} ms ({} ms); kill at +{} ms, writes back on the \
             node at +{} ms; /readyz 503 from +{} ms to +{} ms; {} unacknowledged runs from {} unanswered starts",
            round.answers.len(),
            round.acknowledged.len(),
            round.acknowledged.values().filter(|done| **done).count(),
            unavailable.len(),
            failed.len() - unavailable.len(),
            first.map_or(0, |at| at.as_millis()),
            last.map_or(0, |at| at.as_millis()),
            first.zip(last).map_or(0, |(first, last)| (last - first).as_millis()),
            killed_at.as_millis(),
            promoted_at.as_millis(),
            unready.first().map_or(0, |at| at.as_millis()),
            unready.last().map_or(0, |at| at.as_millis()),
            unacknowledged,
            round.unanswered_starts,
        );
        println!("{line}");
        report.push_str(&line);
        report.push('\n');
    }

    // The stream, connected throughout, got every committed event once, in order.
    let mut conn = PgConnection::establish(&url).unwrap();
    let events: Vec<EventId> = sql_query("SELECT id FROM operation_run_events ORDER BY id").load(&mut conn).unwrap();
    let expected: Vec<i64> = events.iter().map(|event| event.id).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while streamed.lock().unwrap().len() < expected.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    following.abort();
    let streamed = streamed.lock().unwrap().clone();
    let unique: BTreeSet<i64> = streamed.iter().copied().collect();
    assert_eq!(unique.len(), streamed.len(), "the stream repeated an event");
    assert!(streamed.windows(2).all(|pair| pair[0] < pair[1]), "the stream's events are out of order");
    assert_eq!(streamed, expected, "the stream missed events across the failovers");
    let line = format!("stream: {} events through three failovers, none missed, none repeated", streamed.len());
    println!("{line}");
    report.push_str(&line);
    report.push('\n');
    std::fs::write("target/ha-failover-figures.txt", report).unwrap();
}

/// Calls of statements that read `operation_runs` pages on the server at `url`.
fn list_calls(url: &str) -> i64 {
    #[derive(QueryableByName)]
    struct Calls {
        #[diesel(sql_type = BigInt)]
        calls: i64,
    }
    let mut conn = PgConnection::establish(url).unwrap();
    let calls: Calls = sql_query(
        "SELECT coalesce(sum(calls), 0)::bigint AS calls FROM pg_stat_statements \
         WHERE query LIKE 'SELECT%FROM \"operation_runs\"%ORDER BY%' AND dbid = \
         (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .get_result(&mut conn)
    .unwrap();
    calls.calls
}

async fn replica_used(app: &TestApp) -> bool {
    let ready: Value = app.request(reqwest::Method::GET, "/readyz", None, None).await.json().await.unwrap();
    ready["replica"]["used"] == true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the HA lab: scripts/ha-test.sh"]
async fn reads_go_to_a_fresh_replica_and_always_include_the_callers_own_writes() {
    let lab = Lab::running();
    let url = lab.database("ha_replica");
    let replica_url = lab.url("DATABASE_READ_URL", "ha_replica");
    let app = TestApp::spawn_with(url.clone(), |config| {
        config.database.read_url = Some(replica_url.clone().into());
        config.database.max_replica_lag = Duration::from_millis(500);
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !replica_used(&app).await {
        assert!(Instant::now() < deadline, "the replica is never fresh enough");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A start's Location, read at once, never misses the run (with and without the token).
    let (replica_before, primary_before) = (list_calls(&replica_url), list_calls(&url));
    for _ in 0..100 {
        let started = app.post("/v1/runs", &TestUser::admin(), click(1)).await;
        assert_eq!(started.status(), 201);
        let location = started.headers()["location"].to_str().unwrap().to_owned();
        let token = started.headers()["opsrun-read-after"].to_str().unwrap().to_owned();
        assert_eq!(app.get(&location, &TestUser::admin()).await.status(), 200, "{location} without the token");
        let with_token = app
            .client
            .get(format!("{}{location}", app.address))
            .bearer_auth(TestUser::admin())
            .header("Opsrun-Read-After", &token)
            .send()
            .await
            .unwrap();
        assert_eq!(with_token.status(), 200, "{location} with the token");
        // The list is a replica read: it may lag, but within the bound.
        assert_eq!(app.get("/v1/runs?limit=5", &TestUser::admin()).await.status(), 200);
    }
    let on_replica = list_calls(&replica_url) - replica_before;
    let on_primary = list_calls(&url) - primary_before;
    println!("100 list reads: {on_replica} on the replica, {on_primary} on the primary");
    assert!(
        on_replica >= 90,
        "list reads landed on the replica {on_replica} times of 100 ({on_primary} on the primary)"
    );

    // A stream resuming from the start catches up from the replica as far as it is known
    // to hold, and from the primary after that: every event, once, in order.
    let mut conn = PgConnection::establish(&url).unwrap();
    let events: Vec<EventId> = sql_query("SELECT id FROM operation_run_events ORDER BY id").load(&mut conn).unwrap();
    let mut stream = SseReader::open(&app, "", &TestUser::admin(), Some(0)).await;
    let caught_up: Vec<i64> = stream.take(events.len()).await.iter().map(|event| event.id.unwrap()).collect();
    assert_eq!(caught_up, events.iter().map(|event| event.id).collect::<Vec<_>>());
    stream.assert_quiet().await;

    // A token makes a read include its write: a move read back at once shows it.
    let id = app.start(&TestUser::admin(), click(1)).await;
    let moved = app.post(&format!("/v1/runs/{id}/start"), &TestUser::worker(), json!({})).await;
    let token = moved.headers()["opsrun-read-after"].to_str().unwrap().to_owned();
    let read: Value = app
        .client
        .get(format!("{}/v1/runs/{id}", app.address))
        .bearer_auth(TestUser::admin())
        .header("Opsrun-Read-After", token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read["status"], "running");

    // A replica that stops replaying is bypassed once its lag passes the bound.
    let mut replica = PgConnection::establish(&replica_url).unwrap();
    sql_query("SELECT pg_wal_replay_pause()").execute(&mut replica).unwrap();
    let newest = app.start(&TestUser::admin(), click(1)).await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    let bypassed = !replica_used(&app).await;
    let page: Value = app.get("/v1/runs?limit=1", &TestUser::admin()).await.json().await.unwrap();
    sql_query("SELECT pg_wal_replay_resume()").execute(&mut replica).unwrap();
    assert!(bypassed, "a replica paused past the lag bound is still used");
    assert_eq!(page["items"][0]["id"], newest, "a list read served stale data from a lagging replica");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !replica_used(&app).await {
        assert!(Instant::now() < deadline, "the replica is not used again after catching up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
