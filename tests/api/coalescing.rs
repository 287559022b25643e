//! Requests answered in batches (group commit) keep every guarantee of requests answered
//! one by one: identities, isolation of a bad row, and who may see which run.
//!
//! To make batches certain rather than likely, each test holds a table lock while its
//! requests arrive: the executors block on it with the first requests, the rest queue up
//! (`opsrun_db_queued_requests` says how many), and releasing the lock lets the queue go
//! as one batch.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::{sql_query, Connection, PgConnection, RunQueryDsl};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};

use crate::helpers::{
    claims, fresh_database, ids, inventory_sync, mint, post_keyed, replayed, spawn_all, started_run, TestApp, TestUser,
};

/// Requests of `kind` the instance has taken so far: answered or in a batch, or queued.
async fn arrived(app: &TestApp, kind: &str) -> usize {
    let taken = app.metric(&format!("opsrun_db_batched_requests_total{{kind=\"{kind}\"}}")).await;
    (taken + queued(app, kind).await as f64) as usize
}

async fn queued(app: &TestApp, kind: &str) -> usize {
    app.metric(&format!("opsrun_db_queued_requests{{kind=\"{kind}\"}}")).await as usize
}

/// Backends of the test's database waiting for a lock.
fn lock_waiters(app: &TestApp) -> i64 {
    sql_query(
        "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .get_result::<Count>(&mut app.db())
    .unwrap()
    .n
}

/// Waits until `count` requests of `kind` have reached the instance and an executor is
/// blocked on the lock: an executor leaves only once the queue is empty, so at most two
/// batches (one per executor) went ahead, and whatever else arrived waits as one batch.
async fn until_arrived(app: &TestApp, kind: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let arrived = arrived(app, kind).await;
        if arrived >= count && lock_waiters(app) >= 1 {
            return;
        }
        assert!(Instant::now() < deadline, "only {arrived} of {count} {kind} requests arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A transaction holding `mode` on `operation_runs` until the connection is dropped.
fn lock_runs(app: &TestApp, mode: &str) -> PgConnection {
    let mut conn = app.db();
    conn.batch_execute(&format!("BEGIN; LOCK TABLE operation_runs IN {mode} MODE")).unwrap();
    conn
}

/// Mean size of the batches of `kind` run so far.
async fn mean_batch(app: &TestApp, kind: &str) -> f64 {
    let requests = app.metric(&format!("opsrun_db_batched_requests_total{{kind=\"{kind}\"}}")).await;
    let batches = app.metric(&format!("opsrun_db_batches_total{{kind=\"{kind}\"}}")).await;
    requests / batches
}

/// The answers of requests already sent, in the order they were sent.
async fn in_order<T>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut answers = Vec::with_capacity(handles.len());
    for handle in handles {
        answers.push(handle.await.unwrap());
    }
    answers
}

/// Sends the starts at once, spread over `apps`; the answers, in `bodies`' order.
fn post_all(apps: &[&TestApp], bodies: Vec<Value>) -> impl std::future::Future<Output = Vec<(u16, Value)>> + 'static {
    let handles: Vec<_> = bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| {
            let app = apps[i % apps.len()].clone_client();
            tokio::spawn(async move {
                let response = app.post("/v1/runs", &TestUser::admin(), body).await;
                (response.status().as_u16(), response.json::<Value>().await.unwrap())
            })
        })
        .collect();
    in_order(handles)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_identical_starts_batched_on_two_instances_create_one_run_and_name_it_31_times() {
    let first = TestApp::spawn().await;
    let second = first.second_instance().await;
    let lock = lock_runs(&first, "EXCLUSIVE");
    let bodies = vec![inventory_sync(9, "hot"); 32];
    let answers = {
        let apps = [&first, &second];
        let racing = post_all(&apps, bodies);
        tokio::pin!(racing);
        // Sixteen starts on each instance: some in its two blocked executors, the rest queued.
        tokio::select! {
            answers = &mut racing => panic!("answered under the lock: {answers:?}"),
            () = async { until_arrived(&first, "start", 16).await; until_arrived(&second, "start", 16).await } => {}
        }
        drop(lock);
        racing.await
    };
    let created: Vec<i64> = answers.iter().filter(|(s, _)| *s == 201).map(|(_, b)| b["id"].as_i64().unwrap()).collect();
    assert_eq!(created.len(), 1, "{answers:?}");
    let refused: Vec<&Value> = answers.iter().filter(|(s, _)| *s == 409).map(|(_, b)| b).collect();
    assert_eq!(refused.len(), 31, "{answers:?}");
    assert!(refused.iter().all(|p| p["code"] == "duplicate_run" && p["existing_run_id"] == created[0]), "{refused:?}");
    for app in [&first, &second] {
        assert!(mean_batch(app, "start").await > 2.0, "the queued starts went as batches");
    }
    let runs: i64 =
        sql_query("SELECT count(*) AS n FROM operation_runs").get_result::<Count>(&mut first.db()).unwrap().n;
    assert_eq!(runs, 1);
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_start_the_database_refuses_fails_alone_in_its_batch() {
    let app = TestApp::spawn().await;
    // A row opsrun accepts and the database does not: only this test's database has it.
    app.db()
        .batch_execute(
            "ALTER TABLE operation_runs ADD CONSTRAINT refuses_poison CHECK (NOT context ? 'poison') NOT VALID",
        )
        .unwrap();
    let lock = lock_runs(&app, "EXCLUSIVE");
    let mut bodies: Vec<Value> = (0..31).map(|i| inventory_sync(1 + i % 3, &format!("valid-{i}"))).collect();
    let mut poisoned = inventory_sync(2, "poisoned");
    poisoned["context"] = json!({ "poison": true });
    bodies.insert(13, poisoned);
    let racing = post_all(&[&app], bodies);
    until_arrived(&app, "start", 32).await;
    drop(lock);
    let answers = racing.await;
    assert!(mean_batch(&app, "start").await > 2.0, "the starts went as batches");

    for (i, (status, body)) in answers.iter().enumerate() {
        if i == 13 {
            assert_eq!(*status, 500, "{body}");
            assert_eq!(body["code"], "internal_error", "{body}");
        } else {
            assert_eq!(*status, 201, "start {i}: {body}");
        }
    }
    let ids: HashSet<i64> = answers.iter().filter(|(s, _)| *s == 201).map(|(_, b)| b["id"].as_i64().unwrap()).collect();
    assert_eq!(ids.len(), 31);
    // Each created run has its one `created` event; the refused one left nothing.
    let mut conn = app.db();
    let runs = sql_query("SELECT count(*) AS n FROM operation_runs").get_result::<Count>(&mut conn).unwrap().n;
    let events = sql_query("SELECT count(*) AS n FROM operation_run_events WHERE kind = 'created'")
        .get_result::<Count>(&mut conn)
        .unwrap()
        .n;
    assert_eq!((runs, events), (31, 31));
}

/// The batch itself, without HTTP's timing: one start the database refuses among 31 it
/// takes, in one call of the executor's work.
/// A start of the two tests below: by `batcher-{i}`, of selection `selection`.
fn planned_start(i: usize, selection: &str, context: Value) -> opsrun::use_cases::start::PlannedStart {
    use opsrun::domain::access::{Principal, TenantScope};
    use opsrun::domain::ids::WorkspaceId;
    use opsrun::use_cases::start::{plan_start, OnConflict, StartRequest};

    let principal = Principal {
        subject: "7".into(),
        user_id: Some(7),
        initiator_name: format!("batcher-{i}"),
        workspace_id: WorkspaceId(1),
        tenants: TenantScope::All,
        capabilities: ["inventory.sync".to_owned()].into(),
        valid_until: i64::MAX,
    };
    let request = StartRequest {
        type_name: "inventory_sync".into(),
        tenant_id: Some(1),
        inputs: json!({ "selection_hash": selection }).as_object().unwrap().clone(),
        context,
        on_conflict: OnConflict::Reject,
    };
    plan_start(&principal, request).unwrap()
}

fn selection_of(run: &opsrun::db::models::OperationRunRow) -> Value {
    serde_json::from_str::<Value>(run.context.as_str()).unwrap()["selection_hash"].clone()
}

/// Created events whose run or content is not their start's: made by its caller, naming
/// its identity policy; and how many created events there are.
fn created_events_astray(conn: &mut PgConnection) -> (i64, i64) {
    let astray = sql_query(
        "SELECT count(*) AS n FROM operation_runs o JOIN operation_run_events e ON e.run_id = o.id AND e.kind = 'created'
         WHERE e.actor <> o.initiator_name OR e.actor <> 'batcher-' || substr(o.context ->> 'selection_hash', 3)
            OR e.detail <> '{\"identity_policy\": \"dedupe_active\"}' OR e.to_status <> o.status",
    )
    .get_result::<Count>(conn)
    .unwrap()
    .n;
    let created = sql_query("SELECT count(*) AS n FROM operation_run_events WHERE kind = 'created'")
        .get_result::<Count>(conn)
        .unwrap()
        .n;
    (astray, created)
}

#[tokio::test]
async fn a_batch_of_32_with_one_refused_row_creates_the_other_31() {
    use opsrun::use_cases::start::{start_batch, Started};

    let app = TestApp::spawn().await;
    let mut conn = app.db();
    conn.batch_execute(
        "ALTER TABLE operation_runs ADD CONSTRAINT refuses_poison CHECK (NOT context ? 'poison') NOT VALID",
    )
    .unwrap();
    let batch = (0..32)
        .map(|i| {
            let poison = if i == 13 { json!({ "poison": true }) } else { json!({}) };
            planned_start(i, &format!("s-{i}"), poison)
        })
        .collect();
    let answers = start_batch(&mut conn, batch).unwrap();
    assert_eq!(answers.len(), 32);
    for (i, answer) in answers.iter().enumerate() {
        match (i, answer) {
            (13, Err(_)) => {}
            (13, other) => panic!("the refused row: {other:?}"),
            (i, Ok(Started::Created(run))) => assert_eq!(selection_of(run), format!("s-{i}")),
            (i, other) => panic!("start {i}: {other:?}"),
        }
    }
    let runs = sql_query("SELECT count(*) AS n FROM operation_runs").get_result::<Count>(&mut conn).unwrap().n;
    assert_eq!(runs, 31);
    assert_eq!(created_events_astray(&mut conn), (0, 31));
}

#[tokio::test]
async fn a_batch_answers_each_start_with_its_own_run_or_the_run_holding_its_identity() {
    use opsrun::use_cases::start::{start_batch, Started};

    let app = TestApp::spawn().await;
    let mut conn = app.db();
    let Ok(Started::Created(held)) =
        start_batch(&mut conn, vec![planned_start(0, "s-0", json!({}))]).unwrap().remove(0)
    else {
        panic!("the first start creates its run")
    };
    // Start 7 repeats the run started before; start 21 repeats start 20 of this batch.
    let selection = |i: usize| match i {
        7 => "s-0".to_owned(),
        21 => "s-20".to_owned(),
        i => format!("s-{i}"),
    };
    let batch = (1..=32).map(|i| planned_start(i, &selection(i), json!({}))).collect();
    let answers = start_batch(&mut conn, batch).unwrap();
    let mut created = HashSet::new();
    for (i, answer) in (1..=32).zip(answers) {
        match (i, answer.unwrap()) {
            (7, Started::Held { existing_run_id }) => assert_eq!(existing_run_id, held.id),
            (21, Started::Held { existing_run_id }) => assert!(created.contains(&existing_run_id)),
            (i, Started::Created(run)) if i != 7 && i != 21 => {
                assert_eq!(selection_of(&run), format!("s-{i}"), "start {i} is answered with its own run");
                created.insert(run.id);
            }
            (i, other) => panic!("start {i}: {other:?}"),
        }
    }
    assert_eq!(created.len(), 30);
    assert_eq!(created_events_astray(&mut conn), (0, 31));
}

/// A principal of the property below: its workspace, tenants (`None`: all) and the
/// types whose view capability it holds.
#[derive(Clone, Debug)]
struct Viewer {
    workspace: i64,
    tenants: Option<Vec<i64>>,
    may_view: Vec<bool>,
}

/// A run of the property below.
#[derive(Clone, Debug)]
struct SeededRun {
    workspace: i64,
    tenant: i64,
    type_index: usize,
}

/// Tenant-scoped types, and the capability that lets a caller view each.
const TYPES: [(&str, &str); 3] =
    [("inventory_sync", "inventory.sync"), ("policy_sync", "policies.sync"), ("restore_execute", "restore.execute")];

/// What the contract says the view of `run` answers `viewer`: outside the workspace or
/// the tenants 404, inside without the capability 403, else 200.
fn expected(viewer: &Viewer, run: &SeededRun) -> u16 {
    let tenant_visible = viewer.tenants.as_ref().is_none_or(|tenants| tenants.contains(&run.tenant));
    match (viewer.workspace == run.workspace && tenant_visible, viewer.may_view[run.type_index]) {
        (false, _) => 404,
        (true, false) => 403,
        (true, true) => 200,
    }
}

fn viewers() -> impl Strategy<Value = Viewer> {
    (1..=2i64, proptest::option::of(proptest::sample::subsequence(vec![1i64, 2, 3], 0..=3)), [any::<bool>(); 3])
        .prop_map(|(workspace, tenants, may_view)| Viewer { workspace, tenants, may_view: may_view.to_vec() })
}

fn seeded_runs() -> impl Strategy<Value = SeededRun> {
    (1..=2i64, 1..=3i64, 0..TYPES.len()).prop_map(|(workspace, tenant, type_index)| SeededRun {
        workspace,
        tenant,
        type_index,
    })
}

fn token_for(viewer: &Viewer) -> String {
    let caps: Vec<&str> =
        TYPES.iter().zip(&viewer.may_view).filter(|(_, may)| **may).map(|((_, cap), _)| *cap).collect();
    let tenants = viewer.tenants.as_ref().map_or(json!("*"), |tenants| json!(tenants));
    mint(&claims(viewer.workspace, tenants, &caps))
}

fn insert_runs(conn: &mut PgConnection, runs: &[SeededRun]) -> Vec<i64> {
    #[derive(diesel::QueryableByName)]
    struct Id {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        id: i64,
    }
    runs.iter()
        .map(|run| {
            sql_query(format!(
                "INSERT INTO operation_runs (workspace_id, tenant_id, initiator_name, type, run_identity_hash, identity_policy)
                 VALUES ({}, {}, 'seed', '{}', encode(sha256(gen_random_uuid()::text::bytea), 'hex'), 'unique_per_click')
                 RETURNING id",
                run.workspace, run.tenant, TYPES[run.type_index].0
            ))
            .get_result::<Id>(conn)
            .unwrap()
            .id
        })
        .collect()
}

/// Views answered in one batch (`WHERE id = ANY`) are filtered per caller exactly as a
/// lone view: over random callers and runs, every answer is the contract's, and no body
/// holds a run its caller may not see.
#[test]
fn batched_views_answer_each_caller_exactly_as_a_lone_view_would() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
    let app = runtime.block_on(TestApp::spawn());
    let mut runner = TestRunner::new(Config { cases: 12, failure_persistence: None, ..Config::default() });
    let case = (proptest::collection::vec(viewers(), 1..=4), proptest::collection::vec(seeded_runs(), 1..=10));
    runner
        .run(&case, |(viewers, runs)| {
            let ids = insert_runs(&mut app.db(), &runs);
            let asks: Vec<(usize, usize)> =
                (0..viewers.len()).flat_map(|v| (0..runs.len()).map(move |r| (v, r))).collect();
            let answers = runtime.block_on(async {
                // Reads wait behind ACCESS EXCLUSIVE: the views queue and go as batches.
                let lock = lock_runs(&app, "ACCESS EXCLUSIVE");
                let futures = asks
                    .iter()
                    .map(|&(v, r)| {
                        let (app, token, id) = (app.clone_client(), token_for(&viewers[v]), ids[r]);
                        async move {
                            let response = app.get(&format!("/v1/runs/{id}"), &token).await;
                            let status = response.status().as_u16();
                            (status, response.json::<Value>().await.unwrap())
                        }
                    })
                    .collect();
                let before = arrived(&app, "view").await;
                let racing = spawn_all(futures);
                tokio::pin!(racing);
                tokio::select! {
                    answers = &mut racing => panic!("answered under the lock: {answers:?}"),
                    () = until_arrived(&app, "view", before + asks.len()) => {}
                }
                drop(lock);
                racing.await
            });
            for (&(v, r), (status, body)) in asks.iter().zip(&answers) {
                prop_assert_eq!(
                    *status,
                    expected(&viewers[v], &runs[r]),
                    "{:?} viewing {:?}: {}",
                    viewers[v],
                    runs[r],
                    body
                );
                if *status == 200 {
                    prop_assert_eq!(body["id"].as_i64(), Some(ids[r]));
                    prop_assert_eq!(body["workspace_id"].as_i64(), Some(runs[r].workspace));
                } else {
                    prop_assert!(body.get("workspace_id").is_none() && body.get("tenant_id").is_none(), "{}", body);
                }
            }
            Ok(())
        })
        .unwrap();
    let mean = runtime.block_on(mean_batch(&app, "view"));
    assert!(mean > 2.0, "views went as batches (mean {mean})");
}

/// A progress report of the property below: on which seeded run, by which worker, adding
/// how much, with how many failures.
#[derive(Clone, Debug)]
struct Report {
    run: usize,
    worker: usize,
    processed: i64,
    failures: usize,
}

/// The workers of the property below: every tenant of workspace 1; tenant 1 only; a
/// viewer without `operations.execute`; workspace 2's.
fn workers() -> Vec<opsrun::domain::access::Principal> {
    use opsrun::domain::access::{Principal, TenantScope};
    use opsrun::domain::ids::{TenantId, WorkspaceId};
    let worker = |name: &str, workspace, tenants, capability: &str| Principal {
        subject: name.into(),
        user_id: None,
        initiator_name: name.into(),
        workspace_id: WorkspaceId(workspace),
        tenants,
        capabilities: [capability.to_owned()].into(),
        valid_until: i64::MAX,
    };
    vec![
        worker("all-tenants", 1, TenantScope::All, "operations.execute"),
        worker("tenant-1", 1, TenantScope::Only([TenantId(1)].into()), "operations.execute"),
        worker("viewer", 1, TenantScope::All, "inventory.sync"),
        worker("workspace-2", 2, TenantScope::All, "operations.execute"),
    ]
}

/// Four runs: running in tenant 1, running in tenant 2, queued in tenant 1, running in
/// workspace 2. Their ids, in that order.
fn seed_hot_runs(conn: &mut PgConnection) -> Vec<i64> {
    #[derive(diesel::QueryableByName)]
    struct Id {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        id: i64,
    }
    [(1, 1, "running"), (1, 2, "running"), (1, 1, "queued"), (2, 1, "running")]
        .iter()
        .map(|(workspace, tenant, status)| {
            sql_query(format!(
                "INSERT INTO operation_runs (workspace_id, tenant_id, initiator_name, type, status, run_identity_hash,
                     identity_policy, summary_counts, started_at)
                 VALUES ({workspace}, {tenant}, 'seed', 'inventory_sync', '{status}', md5(random()::text) || md5(random()::text),
                     'unique_per_click', '{{\"processed\": 7}}', CASE WHEN '{status}' = 'running' THEN now() END)
                 RETURNING id"
            ))
            .get_result::<Id>(conn)
            .unwrap()
            .id
        })
        .collect()
}

/// A run's state and its `progressed` events (actor and detail), to compare two databases.
fn progress_state(conn: &mut PgConnection, run: i64) -> (Value, Vec<String>) {
    #[derive(diesel::QueryableByName)]
    struct Text {
        #[diesel(sql_type = diesel::sql_types::Text)]
        text: String,
    }
    let state = sql_query(format!(
        "SELECT json_build_object('status', status, 'counts', summary_counts, 'failures', failure_summary)::text AS text
         FROM operation_runs WHERE id = {run}"
    ))
    .get_result::<Text>(conn)
    .unwrap()
    .text;
    let state = serde_json::from_str(&state).unwrap();
    let events = sql_query(format!(
        "SELECT actor || ' ' || detail::text AS text FROM operation_run_events
         WHERE run_id = {run} AND kind = 'progressed' ORDER BY id"
    ))
    .load::<Text>(conn)
    .unwrap();
    (state, events.into_iter().map(|event| event.text).collect())
}

/// Progress reports applied as one batch leave every run exactly as the same reports
/// applied one after another: the same counters, the same failures (the first 100 kept,
/// the rest counted), one event per report with its own detail, in order; and every
/// report gets the same verdict (404 outside the worker's workspace or tenants, 403
/// without `operations.execute`, 409 on a run that is not running).
#[test]
fn a_batch_of_progress_reports_leaves_each_run_as_the_reports_one_after_another() {
    use opsrun::domain::failures::{ReasonCode, ReportedFailure};
    use opsrun::domain::ids::RunId;
    use opsrun::domain::status::Transition;
    use opsrun::use_cases::moves::{move_run, progress_batch, ProgressReport, RunMove};
    use opsrun::use_cases::RunError;

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let apps = runtime.block_on(async { (TestApp::spawn().await, TestApp::spawn().await) });
    let workers = workers();
    let reports = (0..4usize, 0..4usize, 0..5i64, 0..40usize).prop_map(|(run, worker, processed, failures)| Report {
        run,
        worker,
        processed,
        failures,
    });
    let config = Config { cases: 24, failure_persistence: None, ..Default::default() };
    TestRunner::new(config)
        .run(&proptest::collection::vec(reports, 1..=40), |reports| {
            let verdict = |answer: &Result<_, RunError>| match answer {
                Ok(_) => 200,
                Err(RunError::NotFound) => 404,
                Err(RunError::Forbidden(_)) => 403,
                Err(RunError::Refused { .. }) => 409,
                Err(other) => panic!("{other:?}"),
            };
            let jobs = |ids: &[i64]| -> Vec<ProgressReport> {
                reports
                    .iter()
                    .enumerate()
                    .map(|(i, report)| {
                        let counts = json!({ "processed": report.processed }).as_object().unwrap().clone();
                        let failures = (0..report.failures)
                            .map(|f| ReportedFailure {
                                code: format!("r{i}.f{f}"),
                                reason_code: ReasonCode::NotFound,
                                message: format!("report {i}, failure {f}"),
                                item: None,
                            })
                            .collect();
                        ProgressReport {
                            principal: workers[report.worker].clone(),
                            run_id: RunId(ids[report.run]),
                            report: RunMove::reported(Transition::Progress, &counts, failures).unwrap(),
                        }
                    })
                    .collect()
            };
            let (mut batched, mut one_by_one) = (apps.0.db(), apps.1.db());
            let (batched_ids, lone_ids) = (seed_hot_runs(&mut batched), seed_hot_runs(&mut one_by_one));
            let answers = progress_batch(&mut batched, jobs(&batched_ids)).unwrap();
            let lone: Vec<u16> = jobs(&lone_ids)
                .iter()
                .map(|job| verdict(&move_run(&mut one_by_one, &job.principal, job.run_id, &job.report)))
                .collect();
            prop_assert_eq!(answers.iter().map(verdict).collect::<Vec<_>>(), lone);
            for run in 0..4 {
                let (batched_state, batched_events) = progress_state(&mut batched, batched_ids[run]);
                let (lone_state, lone_events) = progress_state(&mut one_by_one, lone_ids[run]);
                prop_assert_eq!((&batched_state, &batched_events), (&lone_state, &lone_events), "run {}", run);
                // Every report accepted in the batch is answered with the run as it left it.
                for (report, answer) in reports.iter().zip(&answers) {
                    if let (true, Ok(moved)) = (report.run == run, answer) {
                        let counts = serde_json::from_str::<Value>(moved.summary_counts.as_str()).unwrap();
                        prop_assert_eq!(&counts, &batched_state["counts"]);
                    }
                }
            }
            Ok(())
        })
        .unwrap();
}

/// Thirty-two workers reporting on one hot run at once: their reports go as batches, each
/// batch one update of the run, and nothing is lost: every increment is in the counters,
/// every report has its event, every worker its `200`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_progress_reports_on_one_run_are_summed_in_batches_and_lose_nothing() {
    let app = TestApp::spawn().await;
    let run = started_run(&app).await;
    let lock = lock_runs(&app, "EXCLUSIVE");
    let reports: Vec<_> = (1..=32)
        .map(|i| {
            let app = app.clone_client();
            tokio::spawn(async move {
                let body = json!({ "counts": { "processed": i } });
                app.post(&format!("/v1/runs/{run}/progress"), &TestUser::worker(), body).await.status().as_u16()
            })
        })
        .collect();
    until_arrived(&app, "progress", 32).await;
    drop(lock);
    for report in reports {
        assert_eq!(report.await.unwrap(), 200);
    }
    assert!(mean_batch(&app, "progress").await > 2.0, "the queued reports went as batches");
    let view: Value = app.get(&format!("/v1/runs/{run}"), &TestUser::admin()).await.json().await.unwrap();
    assert_eq!(view["summary_counts"]["processed"], (1..=32).sum::<i64>(), "{view}");
    let events = sql_query(format!(
        "SELECT count(*) AS n FROM operation_run_events WHERE run_id = {run} AND kind = 'progressed'"
    ))
    .get_result::<Count>(&mut app.db())
    .unwrap()
    .n;
    assert_eq!(events, 32);
}

/// Sends `count` GETs of `path` with `token` at once (before the returned future is
/// polled); the answers, in order.
fn get_all(
    app: &TestApp,
    path: &str,
    token: &str,
    count: usize,
) -> impl std::future::Future<Output = Vec<(u16, Value)>> {
    let handles: Vec<_> = (0..count)
        .map(|_| {
            let (app, path, token) = (app.clone_client(), path.to_owned(), token.to_owned());
            tokio::spawn(async move {
                let response = app.get(&path, &token).await;
                (response.status().as_u16(), response.json::<Value>().await.unwrap())
            })
        })
        .collect();
    in_order(handles)
}

async fn list_executions(app: &TestApp) -> f64 {
    app.metric("opsrun_db_batches_total{kind=\"list\"}").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identical_list_requests_that_wait_together_share_one_execution_and_each_gets_the_whole_page() {
    let app = TestApp::spawn().await;
    for i in 0..30 {
        app.start(&TestUser::admin(), inventory_sync(1 + i % 3, &format!("page-{i}"))).await;
    }
    let path = "/v1/runs?type=inventory_sync&limit=20";
    let alone = app.get(path, &TestUser::admin()).await.json::<Value>().await.unwrap();
    let executions_before = list_executions(&app).await;

    // The first execution blocks on the lock with whichever requests had arrived when it
    // began (often only the first); the rest wait for the next one.
    let lock = lock_runs(&app, "ACCESS EXCLUSIVE");
    let racing = get_all(&app, path, &TestUser::admin(), 32);
    until_arrived(&app, "list", 33).await;
    drop(lock);
    let answers = racing.await;

    for (status, page) in &answers {
        assert_eq!((*status, page), (200, &alone));
    }
    assert_eq!(ids(&alone).len(), 20);
    assert!(alone["next_cursor"].is_string());
    let executions = list_executions(&app).await - executions_before;
    assert!((1.0..=2.0).contains(&executions), "32 identical lists took {executions} executions, not one or two");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lists_of_callers_who_see_different_runs_never_share_an_answer() {
    let app = TestApp::spawn().await;
    let mut of_tenant: [Vec<i64>; 2] = Default::default();
    for i in 0..12 {
        let tenant = 1 + i % 2;
        let id = app.start(&TestUser::admin(), inventory_sync(tenant, &format!("seen-{i}"))).await;
        of_tenant[tenant as usize - 1].insert(0, id);
    }
    let tokens = [TestUser::with(json!([1]), &["inventory.sync"]), TestUser::with(json!([2]), &["inventory.sync"])];

    let lock = lock_runs(&app, "ACCESS EXCLUSIVE");
    let racing = [0, 1].map(|t| get_all(&app, "/v1/runs?limit=50", &tokens[t], 16));
    until_arrived(&app, "list", 32).await;
    drop(lock);
    let [first, second] = racing;
    for (tenant, answers) in [(0, first.await), (1, second.await)] {
        for (status, page) in answers {
            assert_eq!(status, 200, "{page}");
            assert_eq!(ids(&page), of_tenant[tenant], "tenant {}'s caller sees its runs only", tenant + 1);
        }
    }
    assert!(list_executions(&app).await <= 4.0, "each caller's lists still shared among themselves");
}

/// Read-your-writes under sharing: each client starts a run and at once lists the page
/// every client is polling. An answer from an execution that began before the client's
/// start committed would miss its run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_list_always_includes_the_callers_own_start_even_while_identical_lists_are_shared() {
    let app = TestApp::spawn().await;
    let path = "/v1/runs?type=inventory_sync&limit=50";
    let clients: Vec<_> = (0..8)
        .map(|client| {
            let app = app.clone_client();
            async move {
                for round in 0..25 {
                    let created = app.start(&TestUser::admin(), inventory_sync(1, &format!("{client}-{round}"))).await;
                    // Other clients poll the same page meanwhile, so lists overlap and share.
                    let polls = get_all(&app, path, &TestUser::admin(), 3);
                    let page = app.get(path, &TestUser::admin()).await.json::<Value>().await.unwrap();
                    assert!(ids(&page).contains(&created), "client {client} round {round}: run {created} missing");
                    polls.await;
                }
            }
        })
        .collect();
    spawn_all(clients).await;
    let shared = app.metric("opsrun_db_batched_requests_total{kind=\"list\"}").await;
    let executions = list_executions(&app).await;
    assert_eq!(shared, 8.0 * 25.0 * 4.0, "every list was answered");
    assert!(executions < shared, "some lists shared an execution ({executions} for {shared})");
}

/// Keyed starts batched: each in a savepoint with its key, so a row the database refuses
/// fails alone, a held identity is refused naming its holder, one key sent twice takes
/// effect once, and every stored answer replays.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_of_keyed_starts_answers_each_as_alone_and_fails_only_the_refused_row() {
    let app = TestApp::spawn().await;
    app.db()
        .batch_execute(
            "ALTER TABLE operation_runs ADD CONSTRAINT refuses_poison CHECK (NOT context ? 'poison') NOT VALID",
        )
        .unwrap();
    let mut requests: Vec<(String, Value)> =
        (0..28).map(|i| (format!("key-{i}"), inventory_sync(1 + i % 3, &format!("keyed-{i}")))).collect();
    let mut poisoned = inventory_sync(2, "poisoned");
    poisoned["context"] = json!({ "poison": true });
    requests.push(("key-poisoned".into(), poisoned));
    requests.push(("key-twice".into(), inventory_sync(1, "twice")));
    requests.push(("key-twice".into(), inventory_sync(1, "twice")));
    requests.push(("key-same-identity".into(), inventory_sync(1, "keyed-0")));

    let lock = lock_runs(&app, "EXCLUSIVE");
    let handles: Vec<_> = requests
        .iter()
        .cloned()
        .map(|(key, body)| {
            let app = app.clone_client();
            tokio::spawn(async move {
                let response = post_keyed(&app, "/v1/runs", &TestUser::admin(), &body, &key).await;
                let replayed = replayed(&response);
                (response.status().as_u16(), replayed, response.json::<Value>().await.unwrap())
            })
        })
        .collect();
    until_arrived(&app, "keyed_start", 32).await;
    drop(lock);
    let answers = in_order(handles).await;
    assert!(mean_batch(&app, "keyed_start").await > 2.0, "the keyed starts went as batches");

    for (i, (status, _, body)) in answers[1..28].iter().enumerate() {
        assert_eq!(*status, 201, "start {}: {body}", i + 1);
    }
    assert_eq!((answers[28].0, &answers[28].2["code"]), (500, &json!("internal_error")), "the refused row");
    let twice: Vec<_> = answers[29..31].iter().collect();
    let fresh = twice.iter().filter(|(status, replayed, _)| *status == 201 && !replayed).count();
    assert_eq!(fresh, 1, "one key twice takes effect once: {twice:?}");
    for (status, replayed, body) in &twice {
        assert!(
            (*status == 201 && (*replayed || body["id"] == twice[0].2["id"] || body["id"] == twice[1].2["id"]))
                || (*status == 409 && body["code"] == "idempotency_key_in_flight"),
            "{status} {body}"
        );
    }
    // Two keys, one identity: whichever came first created the run, the other names it.
    let mut same_identity = [&answers[0], &answers[31]];
    same_identity.sort_by_key(|(status, _, _)| *status);
    let [(created, _, run), (refused, _, holder)] = same_identity;
    assert_eq!((*created, *refused, &holder["code"]), (201, 409, &json!("duplicate_run")), "{run} {holder}");
    assert_eq!(holder["existing_run_id"], run["id"]);

    // 28 + 1 runs, each with its `created` event; every stored answer replays as given.
    let runs = sql_query("SELECT count(*) AS n FROM operation_runs").get_result::<Count>(&mut app.db()).unwrap().n;
    assert_eq!(runs, 29);
    let fresh_twice = twice.iter().find(|(status, replayed, _)| *status == 201 && !replayed).unwrap();
    for (i, (key, body)) in requests.iter().enumerate().filter(|(i, _)| *i != 28) {
        let first = if key == "key-twice" { fresh_twice } else { &answers[i] };
        let retry = post_keyed(&app, "/v1/runs", &TestUser::admin(), body, key).await;
        assert!(replayed(&retry), "{key}");
        let status = retry.status().as_u16();
        // A problem body carries each request's own id; the rest is the stored answer.
        let without_request_id = |mut body: Value| {
            body.as_object_mut().unwrap().remove("request_id");
            body
        };
        let replay = without_request_id(retry.json::<Value>().await.unwrap());
        assert_eq!((status, replay), (first.0, without_request_id(first.2.clone())), "{key}");
    }
    // The refused row stored nothing: its key is free to try again.
    let again = post_keyed(&app, "/v1/runs", &TestUser::admin(), &requests[28].1, "key-poisoned").await;
    assert!(!replayed(&again));
}

/// A keyed batch whose answers were rendered and then rolled back (the database refused
/// to store one of them) is made again one start at a time: each start is counted once,
/// when its answer has committed, and the refused one not at all.
#[tokio::test]
async fn a_keyed_batch_made_again_counts_each_start_once() {
    let app = TestApp::spawn().await;
    app.db()
        .batch_execute(
            "ALTER TABLE idempotency_keys ADD CONSTRAINT refuses_poisoned_answer \
             CHECK (response_body NOT LIKE '%poisoned-answer%') NOT VALID",
        )
        .unwrap();
    let mut requests: Vec<(String, Value)> =
        (0..7).map(|i| (format!("key-{i}"), inventory_sync(1 + i % 3, &format!("counted-{i}")))).collect();
    let mut poisoned = inventory_sync(2, "poisoned");
    poisoned["context"] = json!({ "note": "poisoned-answer" });
    requests.push(("key-poisoned".into(), poisoned));

    let lock = lock_runs(&app, "EXCLUSIVE");
    let handles: Vec<_> = requests
        .into_iter()
        .map(|(key, body)| {
            let app = app.clone_client();
            tokio::spawn(async move {
                post_keyed(&app, "/v1/runs", &TestUser::admin(), &body, &key).await.status().as_u16()
            })
        })
        .collect();
    until_arrived(&app, "keyed_start", 8).await;
    drop(lock);
    let statuses = in_order(handles).await;
    assert!(mean_batch(&app, "keyed_start").await > 1.0, "the keyed starts went as batches");

    assert_eq!(statuses, [201, 201, 201, 201, 201, 201, 201, 500]);
    let runs = sql_query("SELECT count(*) AS n FROM operation_runs").get_result::<Count>(&mut app.db()).unwrap().n;
    assert_eq!(runs, 7, "the refused start's run was rolled back with its answer");
    assert_eq!(app.metric("opsrun_runs_started_total").await, 7.0, "each created run counted once");
}

/// Backends of the database at `url` waiting for an advisory lock.
fn advisory_waiters(url: &str) -> i64 {
    sql_query(
        "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event = 'advisory'",
    )
    .get_result::<Count>(&mut PgConnection::establish(url).unwrap())
    .unwrap()
    .n
}

async fn until_advisory_waiters(url: &str, count: i64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while advisory_waiters(url) < count {
        assert!(Instant::now() < deadline, "the executors never reached the lock");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An executor stays on its thread for as long as work keeps coming. An HTTP worker's
/// request work must still find a thread: here a runtime with two blocking threads (as a
/// worker gets with two workers on a pool of four), while both executors of a coalescer
/// are busy, blocked on a lock. Were the executors on the worker's blocking threads, the
/// request would wait for one until its budget ran out, with two connections free.
#[test]
fn busy_executors_leave_a_workers_request_threads_free() {
    use opsrun::db::{Database, DbError, PoolConfig};
    let url = fresh_database();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().max_blocking_threads(2).build().unwrap();
    runtime.block_on(async {
        let config = PoolConfig {
            size: 4,
            checkout_timeout: Duration::from_secs(10),
            work_timeout: Duration::from_secs(5),
            statement_cache: true,
        };
        let db = Database::connect(&url, "opsrun-test", &config);
        let blocked = std::sync::Arc::new(db.coalescer(
            2,
            |_: &()| false,
            |conn, jobs: Vec<()>| {
                sql_query("SELECT pg_advisory_xact_lock(4242)").execute(conn)?;
                Ok(vec![(); jobs.len()])
            },
        ));
        let mut holder = PgConnection::establish(&url).unwrap();
        sql_query("SELECT pg_advisory_lock(4242)").execute(&mut holder).unwrap();
        let mut submitted = Vec::new();
        for executors in 1..=2 {
            let blocked = std::sync::Arc::clone(&blocked);
            submitted.push(tokio::spawn(async move { blocked.submit(()).await }));
            until_advisory_waiters(&url, executors).await;
        }

        let answered = db.run(|conn| sql_query("SELECT 1").execute(conn).map_err(DbError::from)).await;
        assert_eq!(answered.map_err(|e| e.to_string()), Ok(1), "a request found no thread while executors were busy");

        sql_query("SELECT pg_advisory_unlock(4242)").execute(&mut holder).unwrap();
        for submission in submitted {
            assert!(submission.await.unwrap().is_ok());
        }
    });
}
