//! `opsrun adopt` on the platform's own operation_runs (tests/fixtures/platform-schema.sql):
//! `--check` reports every kind of row exactly; adopt refuses, changing nothing, while a
//! row needs a person; once decided, it converts the table so that the API serves the
//! platform's runs and their identities hold; an adopt killed at any point completes
//! when run again; a second adopt changes nothing; the legacy cut-over then works.

use std::collections::BTreeMap;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::sql_types::Text;
use diesel::{sql_query, Connection, PgConnection, QueryableByName, RunQueryDsl};
use serde_json::{json, Value};

use crate::helpers::process::{stderr, stdout};
use crate::helpers::{empty_database, inventory_sync, TestApp, TestUser};
use crate::legacy::{LEGACY_ROWS, LEGACY_SCHEMA};

const PLATFORM_SCHEMA: &str = include_str!("../fixtures/platform-schema.sql");

/// One row of every kind; rows 1–13 can be fixed by a rule, rows 14–20 need a decision.
const PLATFORM_ROWS: &str = include_str!("../fixtures/platform-rows.sql");

/// What a person decides for rows 14–20: here, that they go.
const DECISIONS: &str = "DELETE FROM operation_runs WHERE id BETWEEN 14 AND 20";

fn platform_database(rows: &str) -> String {
    let url = empty_database();
    let mut conn = PgConnection::establish(&url).unwrap();
    conn.batch_execute(PLATFORM_SCHEMA).unwrap();
    conn.batch_execute(LEGACY_SCHEMA).unwrap();
    conn.batch_execute(rows).unwrap();
    url
}

fn opsrun(url: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_opsrun"));
    command.args(args).arg("--database-url").arg(url);
    command
}

fn adopt(url: &str, extra: &[&str]) -> Output {
    let mut args = vec!["adopt", "--timezone", "Europe/Berlin"];
    args.extend(extra);
    opsrun(url, &args).output().unwrap()
}

fn migrate(url: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_opsrun"))
        .arg("migrate")
        .env("DATABASE_URL", url)
        .env("OPSRUN_JWT_SECRET", "unused-for-migrations-only-0123456789")
        .output()
        .unwrap()
}

/// The findings table of a report: finding → rows.
fn findings(report: &str) -> BTreeMap<String, u64> {
    let names = opsrun::commands::adopt::Finding::ALL.map(|f| f.name());
    report
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let name = words.next()?;
            let rows = words.next()?.parse().ok()?;
            names.contains(&name).then(|| (name.to_owned(), rows))
        })
        .collect()
}

#[derive(QueryableByName)]
struct Fingerprint {
    #[diesel(sql_type = Text)]
    fingerprint: String,
}

/// Every column, constraint, index and trigger of operation_runs, and md5 of its rows.
fn fingerprint(url: &str) -> (String, String) {
    let mut conn = PgConnection::establish(url).unwrap();
    let schema: Fingerprint = sql_query(
        "SELECT string_agg(x, E'\\n' ORDER BY x) AS fingerprint FROM (
           SELECT 'column ' || attname || ' ' || format_type(atttypid, atttypmod) || ' ' || attnotnull || ' ' || attidentity::text AS x
             FROM pg_attribute WHERE attrelid = 'operation_runs'::regclass AND attnum > 0 AND NOT attisdropped
           UNION ALL SELECT 'constraint ' || conname || ' ' || convalidated || ' ' || pg_get_constraintdef(oid)
             FROM pg_constraint WHERE conrelid = 'operation_runs'::regclass
           UNION ALL SELECT 'index ' || pg_get_indexdef(indexrelid) || ' ' || indisvalid FROM pg_index
            WHERE indrelid = 'operation_runs'::regclass
           UNION ALL SELECT 'trigger ' || tgname FROM pg_trigger WHERE tgrelid = 'operation_runs'::regclass AND NOT tgisinternal
           UNION ALL SELECT 'table ' || relname FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'
           UNION ALL SELECT 'schema ' || nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg_%' AND nspname <> 'information_schema'
         ) s",
    )
    .get_result(&mut conn)
    .unwrap();
    let rows: Fingerprint = sql_query(
        "SELECT md5(coalesce(string_agg(concat_ws('|', id, workspace_id, tenant_id, type, status, outcome, run_identity_hash,
                    summary_counts::text, failure_summary::text, context::text, started_at, completed_at, created_at,
                    updated_at, to_jsonb(r) ->> 'identity_policy', to_jsonb(r) ->> 'revision'), E'\\n' ORDER BY id), '')) AS fingerprint
           FROM operation_runs r",
    )
    .get_result(&mut conn)
    .unwrap();
    (schema.fingerprint, rows.fingerprint)
}

#[test]
fn check_reports_every_kind_of_row_exactly_and_changes_nothing() {
    let url = platform_database(PLATFORM_ROWS);
    let before = fingerprint(&url);
    let output = adopt(&url, &["--check"]);
    let report = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "rows need a decision: {report}");
    let expected: BTreeMap<String, u64> = [
        ("dotted_type", 3),
        ("identity_hash_differs", 7),
        ("completed_without_completed_at", 1),
        ("json_null", 2),
        ("platform_failures", 14),
        ("malformed_identity_hash", 1),
        ("strict_once_repeat", 1),
        ("active_duplicate_identity", 1),
        ("unknown_type", 1),
        ("unknown_status_or_outcome", 1),
        ("status_outcome_mismatch", 1),
        ("active_with_completed_at", 1),
        ("json_not_object", 1),
        ("scope_mismatch", 1),
        ("identity_not_computable", 1),
    ]
    .into_iter()
    .map(|(name, rows)| (name.to_owned(), rows))
    .collect();
    assert_eq!(findings(&report), expected, "{report}");
    assert!(report.contains("operation_runs: 20 row(s)"), "{report}");
    // Each refused row is named with its reason; the duplicate with the run that keeps the identity.
    for example in [
        "run 14: type `inventory.sync_v2`",
        "run 18: summary_counts is a JSON array",
        "run 11: shares its identity with run 12",
    ] {
        assert!(report.contains(example), "{example}: {report}");
    }
    assert!(stderr(&output).contains("need a decision"), "{}", stderr(&output));
    // Without --check it refuses the same way, and neither changed a thing.
    let output = adopt(&url, &[]);
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    assert_eq!(fingerprint(&url), before);
}

#[tokio::test]
async fn an_adopted_table_serves_the_api_and_its_identities_hold() {
    let url = platform_database(PLATFORM_ROWS);
    PgConnection::establish(&url).unwrap().batch_execute(DECISIONS).unwrap();
    let output = adopt(&url, &["--keep-duplicates-apart"]);
    assert!(output.status.success(), "{}\n{}", stdout(&output), stderr(&output));
    // serve migrates at start: it must find nothing to do.
    let app = TestApp::spawn_on(url.clone(), crate::helpers::test_auth()).await;
    let admin = TestUser::admin();

    let page: Value = app.get("/v1/runs?limit=100", &admin).await.json().await.unwrap();
    let ids: Vec<i64> = page["items"].as_array().unwrap().iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, (1..=13).rev().collect::<Vec<_>>(), "{page}");

    let run: Value = app.get("/v1/runs/2", &admin).await.json().await.unwrap();
    assert_eq!(run["type"], "inventory_sync");
    // 10:02 wall-clock time in Berlin is 09:02 UTC.
    assert_eq!(run["created_at"], "2026-03-01T09:02:00Z", "{run}");

    let refused = [
        (inventory_sync(1, "live"), 2),
        (inventory_sync(3, "dup"), 12), // the newest of two active runs kept the identity
        (json!({"type": "restore_execute", "tenant_id": 1, "inputs": {"restore_run_id": 77}}), 9),
        (
            json!({"type": "backup_schedule_run", "tenant_id": 1,
                   "inputs": {"backup_schedule_id": 7, "trigger": "scheduled", "scheduled_for": "2026-03-01T02:00:00Z"}}),
            13,
        ),
    ];
    for (start, holder) in refused {
        let response = app.post("/v1/runs", &admin, start.clone()).await;
        assert_eq!(response.status(), 409, "{start}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["existing_run_id"], holder, "{start}: {body}");
    }
    let new = app.start(&admin, inventory_sync(1, "new")).await;
    assert!(new > 20, "new runs continue after the platform's ids: {new}");

    // The dotted retry spelling joined its schedule's history, trigger kept.
    let history: Value = app.get("/v1/backup-schedules/7/runs", &admin).await.json().await.unwrap();
    let retry = history["items"].as_array().unwrap().iter().find(|r| r["id"] == 3).expect("run 3 in the history");
    assert_eq!(retry["context"]["trigger"], "retry", "{history}");
    assert_eq!(retry["context"]["adopted"]["platform_type"], "backup_schedule.retry");
}

#[test]
fn a_second_adopt_changes_nothing() {
    let url = platform_database(PLATFORM_ROWS);
    PgConnection::establish(&url).unwrap().batch_execute(DECISIONS).unwrap();
    assert!(adopt(&url, &["--keep-duplicates-apart"]).status.success());
    let adopted = fingerprint(&url);
    for extra in [&[][..], &["--keep-duplicates-apart"][..]] {
        let output = adopt(&url, extra);
        assert!(output.status.success(), "{}", stderr(&output));
        assert!(stdout(&output).contains("nothing to do"), "{}", stdout(&output));
        assert_eq!(fingerprint(&url), adopted);
    }
    // And migrate agrees that the schema is its own.
    let output = migrate(&url);
    assert!(stdout(&output).contains("applied 0 migration(s)"), "{}{}", stdout(&output), stderr(&output));
}

#[test]
fn migrate_refuses_the_platforms_table_and_points_at_adopt() {
    let url = platform_database(PLATFORM_ROWS);
    let before = fingerprint(&url);
    let output = migrate(&url);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("opsrun adopt --check"), "{}", stderr(&output));
    assert_eq!(fingerprint(&url), before, "migrate left the platform's database as it was");
    let output = opsrun(&url, &["adopt", "--check", "--timezone", "Mars/Olympus"]).output().unwrap();
    assert!(stderr(&output).contains("not a time zone"), "{}", stderr(&output));
}

#[test]
fn an_adopt_killed_at_any_point_completes_when_run_again() {
    let rows = "SELECT generate_platform_runs(30000)";
    let clean = platform_database(rows);
    let interrupted = platform_database(rows);
    assert!(adopt(&clean, &[]).status.success());

    let mut kills = 0;
    for delay_ms in [150, 400, 700, 1000, 1400, 1900, 2500] {
        let mut child = opsrun(&interrupted, &["adopt", "--timezone", "Europe/Berlin"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_millis(delay_ms);
        while Instant::now() < deadline && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(5));
        }
        if child.try_wait().unwrap().is_some() {
            break; // it finished before this delay
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
    }
    assert!(kills >= 2, "adopt finished before it could be interrupted twice ({kills})");
    let output = adopt(&interrupted, &[]);
    assert!(output.status.success(), "{}\n{}", stdout(&output), stderr(&output));
    assert_eq!(fingerprint(&interrupted), fingerprint(&clean), "after {kills} kills");
}

#[test]
fn the_legacy_cut_over_runs_on_the_adopted_table() {
    let url = platform_database(PLATFORM_ROWS);
    let mut conn = PgConnection::establish(&url).unwrap();
    conn.batch_execute(DECISIONS).unwrap();
    conn.batch_execute(LEGACY_ROWS).unwrap();
    let output = opsrun(&url, &["legacy", "analyze"]).output().unwrap();
    assert!(!output.status.success(), "legacy refuses a table it has not adopted");
    assert!(adopt(&url, &["--keep-duplicates-apart"]).status.success());
    for step in [&["legacy", "backfill"][..], &["legacy", "verify"], &["legacy", "drop", "inventory_sync_runs"]] {
        let output = opsrun(&url, step).output().unwrap();
        assert!(output.status.success(), "{step:?}: {}\n{}", stdout(&output), stderr(&output));
    }
    let backfilled: Fingerprint =
        sql_query("SELECT count(*)::text AS fingerprint FROM operation_runs WHERE context ? 'legacy'")
            .get_result(&mut conn)
            .unwrap();
    assert!(backfilled.fingerprint.parse::<i64>().unwrap() > 10, "{}", backfilled.fingerprint);
}

#[test]
fn a_report_piped_into_a_reader_that_leaves_ends_quietly() {
    let url = platform_database(PLATFORM_ROWS);
    let mut child = opsrun(&url, &["adopt", "--check", "--timezone", "UTC"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader goes away at once, as `| head -1` does in the end
    let output = child.wait_with_output().unwrap();
    assert!(!stderr(&output).contains("panicked"), "{}", stderr(&output));
}

/// An adopt (or migrate) that waits for the lock while a killed adopt's session still
/// builds an index must wait, not deadlock: `CREATE INDEX CONCURRENTLY` waits for every
/// older snapshot, and a session queued on `pg_advisory_lock` holds one.
#[test]
fn waiting_for_the_migration_lock_never_deadlocks_the_holders_index_build() {
    let url = empty_database();
    let mut holder = PgConnection::establish(&url).unwrap();
    holder.batch_execute("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) AS g").unwrap();
    let (held, holding) = std::sync::mpsc::channel();
    let building = std::thread::spawn(move || {
        opsrun::db::with_migration_lock(&mut holder, |conn| {
            held.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(500)); // the waiter is waiting by now
            conn.batch_execute("CREATE INDEX CONCURRENTLY t_id_idx ON t (id)")?;
            Ok(())
        })
    });
    holding.recv().unwrap();
    let mut waiter = PgConnection::establish(&url).unwrap();
    let waited = opsrun::db::with_migration_lock(&mut waiter, |_| Ok(()));
    let built = building.join().unwrap();
    assert!(built.is_ok() && waited.is_ok(), "index build: {built:?}; waiter: {waited:?}");
}

/// The platform's normal shapes (tests/fixtures/platform-shapes.sql).
const PLATFORM_SHAPES: &str = include_str!("../fixtures/platform-shapes.sql");

#[tokio::test]
async fn the_platforms_own_shapes_need_no_decision_and_serve_as_a_workers_would() {
    let url = platform_database(PLATFORM_SHAPES);
    let output = adopt(&url, &["--check"]);
    assert_eq!(output.status.code(), Some(0), "normal platform data needs no decision: {}", stdout(&output));
    let output = adopt(&url, &[]);
    assert!(output.status.success(), "{}\n{}", stdout(&output), stderr(&output));
    let app = TestApp::spawn_on(url.clone(), crate::helpers::test_auth()).await;
    let admin = TestUser::admin();

    let run: Value = app.get("/v1/runs/1", &admin).await.json().await.unwrap();
    assert_eq!(run["type"], "inventory_sync");
    assert_eq!(run["summary_counts"], json!({"processed": 40, "failed": 1}), "{run}");
    assert_eq!(run["context"]["adopted"]["summary_counts"], json!({"pages": 4}), "set aside, not dropped: {run}");
    assert_eq!(
        run["failure_summary"],
        json!({"items": [{"code": "graph.403", "reason_code": "provider_permission_denied", "message": "Graph answered 403"}], "dropped": 0})
    );
    assert_eq!(run["created_at"], "2026-03-01T08:59:00Z", "Berlin wall-clock time: {run}");

    let run: Value = app.get("/v1/runs/2", &admin).await.json().await.unwrap();
    assert_eq!(run["type"], "policy_sync", "a dotted spelling of a canonical type: {run}");
    assert_eq!(run["summary_counts"], json!({}));
    assert_eq!(
        run["failure_summary"]["items"],
        json!([
            {"code": "graph.401", "reason_code": "unknown", "platform_reason_code": "graph_unauthorized",
             "message": "Authorization: Bearer [redacted] rejected"},
            {"code": "unknown", "reason_code": "unknown", "message": "no code"},
            {"code": "unknown", "reason_code": "unknown", "message": "a bare string"},
        ]),
        "{run}"
    );

    let run: Value = app.get("/v1/runs/3", &admin).await.json().await.unwrap();
    assert_eq!(run["summary_counts"], json!({"total": 12, "succeeded": 12}), "{run}");
    assert_eq!(run["context"]["adopted"]["summary_counts"], json!({"ratio": 0.5}));
    let history: Value = app.get("/v1/backup-schedules/7/runs", &admin).await.json().await.unwrap();
    assert_eq!(history["items"][0]["id"], 3, "{history}");

    // The active ones hold their identities against the API.
    let refused = app.post("/v1/runs", &admin, json!({"type": "workspace_audit_export", "inputs": {}})).await;
    assert_eq!(refused.status(), 409);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["existing_run_id"], 4, "{body}");
    let refused = app
        .post(
            "/v1/runs",
            &admin,
            json!({"type": "provider_connection_verify", "tenant_id": 2, "inputs": {"provider_connection_id": 4}}),
        )
        .await;
    assert_eq!(refused.status(), 409);

    // What --check expects of every row, the database's conversion did: nothing is left.
    let output = adopt(&url, &["--check"]);
    assert!(stdout(&output).contains("nothing to do"), "{}", stdout(&output));
}

/// A writer of the platform's kind: inserts runs in its shapes (no identity_policy, dotted
/// types, `[]` for empty JSON, zoneless timestamps) and completes them with a failure list
/// and string counters, timing every statement.
struct PlatformWriter {
    ids: Vec<i64>,
    errors: Vec<String>,
    longest: Duration,
    writes: usize,
}

fn platform_writer(url: String, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> PlatformWriter {
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        id: i64,
    }
    let mut conn = PgConnection::establish(&url).unwrap();
    let mut writer = PlatformWriter { ids: Vec::new(), errors: Vec::new(), longest: Duration::ZERO, writes: 0 };
    let mut n = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        n += 1;
        let began = Instant::now();
        let inserted: Result<Id, _> = sql_query(format!(
            "INSERT INTO operation_runs (workspace_id, tenant_id, user_id, initiator_name, type, status, outcome,
                                         run_identity_hash, summary_counts, failure_summary, context, created_at, updated_at)
             VALUES (3, 5, 10, 'Ada', 'inventory.sync', 'queued', 'pending', md5('{n}') || md5('{n}'), '[]', '[]',
                     '{{\"selection_hash\": \"writer-{n}\"}}', '2026-12-01 10:00:00', '2026-12-01 10:00:00') RETURNING id"
        ))
        .get_result(&mut conn);
        writer.longest = writer.longest.max(began.elapsed());
        let id = match inserted {
            Ok(row) => row.id,
            Err(error) => {
                writer.errors.push(format!("insert {n}: {error}"));
                continue;
            }
        };
        writer.ids.push(id);
        let began = Instant::now();
        let completed = sql_query(format!(
            "UPDATE operation_runs SET status = 'completed', outcome = 'failed', completed_at = '2026-12-01 10:05:00',
                    updated_at = '2026-12-01 10:05:00', summary_counts = '{{\"processed\": \"3\", \"pages\": 2}}',
                    failure_summary = '[{{\"code\": \"graph.403\", \"reason_code\": \"graph_forbidden\", \"message\": \"no\"}}]'
              WHERE id = {id}"
        ))
        .execute(&mut conn);
        writer.longest = writer.longest.max(began.elapsed());
        if let Err(error) = completed {
            writer.errors.push(format!("complete {id}: {error}"));
        }
        writer.writes += 2;
    }
    writer
}

#[test]
fn a_platform_writer_goes_on_through_adopt_and_after_it_with_no_failed_or_long_write() {
    let url = platform_database("SELECT generate_platform_runs(20000)");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (url, stop) = (url.clone(), stop.clone());
        std::thread::spawn(move || platform_writer(url, stop))
    };
    std::thread::sleep(Duration::from_millis(300));
    let output = adopt(&url, &["--batch", "500"]);
    assert!(output.status.success(), "{}\n{}", stdout(&output), stderr(&output));
    std::thread::sleep(Duration::from_millis(500)); // the platform goes on writing after adopt
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let writer = writer.join().unwrap();

    assert!(writer.errors.is_empty(), "{} failed writes, first: {:?}", writer.errors.len(), writer.errors.first());
    assert!(writer.writes > 100, "the writer wrote all along ({})", writer.writes);
    assert!(writer.longest < Duration::from_secs(1), "a write waited {:?}", writer.longest);
    // Every run it wrote is an opsrun run, in opsrun's shapes.
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        runs: i64,
    }
    let mut conn = PgConnection::establish(&url).unwrap();
    let written: Count = sql_query(
        "SELECT count(*) AS runs FROM operation_runs
          WHERE id = ANY($1) AND type = 'inventory_sync' AND identity_policy = 'dedupe_active'
            AND status = 'completed' AND summary_counts = '{\"processed\": 3}'
            AND context -> 'adopted' -> 'summary_counts' = '{\"pages\": 2}'
            AND failure_summary = '{\"items\": [{\"code\": \"graph.403\", \"reason_code\": \"unknown\",
                                    \"platform_reason_code\": \"graph_forbidden\", \"message\": \"no\"}], \"dropped\": 0}'
            AND completed_at = '2026-12-01 10:05:00 Europe/Berlin'::timestamptz",
    )
    .bind::<diesel::sql_types::Array<diesel::sql_types::BigInt>, _>(&writer.ids)
    .get_result(&mut conn)
    .unwrap();
    assert_eq!(written.runs as usize, writer.ids.len(), "of {} runs written", writer.ids.len());
}

#[derive(QueryableByName, Debug)]
struct Converted {
    #[diesel(sql_type = Text)]
    run_type: String,
    #[diesel(sql_type = Text)]
    run_identity_hash: String,
    #[diesel(sql_type = Text)]
    identity_policy: String,
    #[diesel(sql_type = Text)]
    summary_counts: String,
    #[diesel(sql_type = Text)]
    failure_summary: String,
    #[diesel(sql_type = Text)]
    context: String,
}

fn platform_rows() -> impl proptest::strategy::Strategy<Value = opsrun::commands::adopt::PlatformRow> {
    use proptest::prelude::*;
    let types = prop::sample::select(vec![
        "inventory_sync",
        "inventory.sync",
        "policy.sync",
        "directory_groups.sync",
        "backup_schedule.scheduled",
        "backup_schedule.run_now",
        "backup_schedule_run",
        "restore_execute",
        "restore.execute",
        "workspace_audit_export",
        "provider_connection.verify",
        "no_such.type",
    ]);
    let states = prop::sample::select(vec![
        ("queued", "pending"),
        ("running", "pending"),
        ("completed", "succeeded"),
        ("completed", "failed"),
        ("completed", "pending"),
        ("Completed", "succeeded"),
    ]);
    let contexts = prop::sample::select(vec![
        "{}",
        "[]",
        "null",
        "[1]",
        r#"{"selection_hash": "a"}"#,
        r#"{"selection_hash": "  "}"#,
        r#"{"selection_key": "k", "restore_run_id": 3.0}"#,
        r#"{"restore_run_id": -1}"#,
        r#"{"provider_connection_id": 4, "target_scope": {"x": 1}}"#,
        r#"{"backup_schedule_id": 7, "scheduled_for": "2026-03-01T02:00:59+01:00"}"#,
        r#"{"backup_schedule_id": 7, "scheduled_for": "2026-03-01 02:00:00Z", "trigger": "scheduled"}"#,
        r#"{"backup_schedule_id": 7, "trigger": "run_now", "note": "x"}"#,
        r#"{"backup_schedule_id": 7, "trigger": "retry", "scheduled_for": "2026-03-01T02:00:00Z"}"#,
        r#"{"selection_hash": "a", "adopted": {"summary_counts": {"old": 1}}}"#,
    ]);
    let counts = prop::sample::select(vec![
        None,
        Some("null"),
        Some("[]"),
        Some("[1, 2]"),
        Some("{}"),
        Some(r#"{"processed": "3", "failed": 2.0, "pages": 1}"#),
        Some(r#"{"total": -1, "skipped": "x", "items": 9007199254740992, "created": 5}"#),
    ]);
    let failures = prop::sample::select(vec![
        None,
        Some("null"),
        Some("[]"),
        Some("{}"),
        Some(r#"{"items": [], "dropped": 0}"#),
        Some(r#"{"items": [{"code": "c", "reason_code": "timeout", "message": "m"}], "dropped": 3}"#),
        Some(r#"{"code": "graph.403", "message": "one failure as an object"}"#),
        Some(r#"{"unrelated": true}"#),
        Some(r#""a string""#),
        Some(
            r#"[{"code": "graph.403", "reason_code": "provider_permission_denied", "message": "Graph answered 403", "item": "p-1"},
                {"code": 42, "reason_code": "graph_forbidden", "message": "password=hunter2 & token: abc\u0007 eyJa.eyJb.c"},
                {"reason_code": null, "message": null, "item": "  "}, "bare \n text", 17, null,
                {"code": "x", "reason_code": 5, "message": "Authorization: Bearer abc.DEF-1= done", "extra": "dropped"}]"#,
        ),
    ]);
    let hashes = prop::sample::select(vec!["f".repeat(64), "F".repeat(64), "abc".to_owned()]);
    (types, states, contexts, counts, failures, hashes, prop::option::of(1..4i64), 1..1000i64).prop_map(
        |(run_type, (status, outcome), context, counts, failures, hash, tenant, id)| {
            opsrun::commands::adopt::PlatformRow {
                id,
                workspace_id: 1,
                tenant_id: tenant,
                run_type: run_type.into(),
                status: status.into(),
                outcome: outcome.into(),
                run_identity_hash: hash,
                has_completed_at: status == "completed",
                summary_counts: counts.map(Into::into),
                failure_summary: failures.map(Into::into),
                context: Some(context.into()),
                identity_policy: None,
            }
        },
    )
}

/// `adopt --check` judges rows in Rust; the database converts them in SQL. For any row,
/// both refuse it, or the database stores exactly what the judgement expects.
#[test]
fn the_database_converts_every_row_as_adopt_check_expects() {
    use diesel::sql_types::{BigInt, Nullable};
    use proptest::test_runner::{Config, TestRunner};

    let conn = std::cell::RefCell::new(PgConnection::establish(&empty_database()).unwrap());
    conn.borrow_mut().batch_execute(&opsrun::commands::adopt::conversion_functions_sql()).unwrap();
    let json =
        |text: &Option<String>| -> Value { text.as_deref().map_or(Value::Null, |t| serde_json::from_str(t).unwrap()) };
    TestRunner::new(Config { cases: 512, ..Config::default() })
        .run(&platform_rows(), |row| {
            let verdict = opsrun::commands::adopt::judge(&row);
            let converted: Result<Converted, _> = sql_query(
                "SELECT c.run_type, c.run_identity_hash, c.identity_policy, c.summary_counts::text AS summary_counts,
                        c.failure_summary::text AS failure_summary, c.context::text AS context
                   FROM opsrun_adopt_convert($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9::jsonb, $10::jsonb, NULL) AS c",
            )
            .bind::<BigInt, _>(row.id)
            .bind::<BigInt, _>(row.workspace_id)
            .bind::<Nullable<BigInt>, _>(row.tenant_id)
            .bind::<Text, _>(&row.run_type)
            .bind::<Text, _>(&row.status)
            .bind::<Text, _>(&row.outcome)
            .bind::<Text, _>(&row.run_identity_hash)
            .bind::<Nullable<Text>, _>(&row.summary_counts)
            .bind::<Nullable<Text>, _>(&row.failure_summary)
            .bind::<Nullable<Text>, _>(&row.context)
            .get_result(&mut *conn.borrow_mut());
            match (verdict.refusal(), converted) {
                (Some(_), Err(_)) => {}
                (Some((finding, reason)), Ok(c)) => {
                    panic!("{row:?}: judged {} ({reason}) but converted to {c:?}", finding.name())
                }
                (None, Err(error)) => panic!("{row:?}: judged convertible ({:?}) but refused: {error}", verdict.fix),
                (None, Ok(c)) => {
                    let fix = &verdict.fix;
                    let expected_type = fix.run_type.map_or(row.run_type.clone(), |t| t.as_str().to_owned());
                    assert_eq!(c.run_type, expected_type, "{row:?}");
                    let expected_hash = fix.run_identity_hash.clone().unwrap_or(row.run_identity_hash.clone());
                    assert_eq!(c.run_identity_hash, expected_hash, "{row:?}");
                    assert_eq!(Some(c.identity_policy.as_str()), fix.identity_policy.map(|p| p.as_str()), "{row:?}");
                    let counts = fix.summary_counts.clone().unwrap_or_else(|| json(&row.summary_counts));
                    assert_eq!(serde_json::from_str::<Value>(&c.summary_counts).unwrap(), counts, "{row:?}");
                    let failures = fix.failure_summary.clone().unwrap_or_else(|| json(&row.failure_summary));
                    assert_eq!(serde_json::from_str::<Value>(&c.failure_summary).unwrap(), failures, "{row:?}");
                    let context = fix.context.clone().unwrap_or_else(|| json(&row.context));
                    assert_eq!(serde_json::from_str::<Value>(&c.context).unwrap(), context, "{row:?}");
                }
            }
            Ok(())
        })
        .unwrap();
}

/// The database's sanitizer redacts, strips and cuts exactly as a worker's failures are.
#[test]
fn the_database_sanitizes_messages_as_the_service_does() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    let conn = std::cell::RefCell::new(PgConnection::establish(&empty_database()).unwrap());
    conn.borrow_mut().batch_execute(&opsrun::commands::adopt::conversion_functions_sql()).unwrap();
    let pieces = prop::sample::select(vec![
        "password",
        "PassWD",
        "db_password",
        "=",
        ": ",
        " ",
        "Bearer ",
        "bearer\t",
        "abc.DEF-1=",
        "eyJhbGci.eyJzdWIi.sig",
        "token",
        "api-key",
        "client_secret",
        "'quoted value'",
        "\"dq value\"",
        "&",
        ";",
        ",",
        "x",
        "Graph",
        "403",
        "\u{7}",
        "\n",
        "\r\n",
        "\u{85}",
        "é",
        "日本",
        "-",
        "_",
        "   ",
    ]);
    let messages = (prop::collection::vec(pieces, 0..14), 1..130usize);
    TestRunner::new(Config { cases: 1024, ..Config::default() })
        .run(&messages, |(pieces, limit)| {
            let message = pieces.concat();
            let expected = opsrun::domain::failures::sanitize(&message, limit);
            let sanitized: Fingerprint = sql_query("SELECT opsrun_adopt_sanitize($1, $2) AS fingerprint")
                .bind::<Text, _>(&message)
                .bind::<diesel::sql_types::Integer, _>(limit as i32)
                .get_result(&mut *conn.borrow_mut())
                .unwrap();
            prop_assert_eq!(sanitized.fingerprint, expected, "{:?}", message);
            Ok(())
        })
        .unwrap();
}

/// `adopt --finish` ends the conversion of the platform's writes: before it, a write in
/// the platform's shapes lands converted; after it, opsrun's constraints refuse it, as
/// any client's; and adopt has nothing left to do.
#[test]
fn after_finish_the_platforms_own_shapes_are_refused() {
    let url = platform_database(PLATFORM_SHAPES);
    assert!(adopt(&url, &[]).status.success());
    let mut conn = PgConnection::establish(&url).unwrap();
    let platform_insert = |selection: &str| {
        format!(
            "INSERT INTO operation_runs (workspace_id, tenant_id, initiator_name, type, status, outcome,
                                         run_identity_hash, summary_counts, failure_summary, context)
             VALUES (1, 1, 'Ada', 'inventory.sync', 'queued', 'pending', 'x', '[]', '[]', '{{\"selection_hash\": \"{selection}\"}}')"
        )
    };
    conn.batch_execute(&platform_insert("before-finish")).expect("converted on its way in");

    let output = opsrun(&url, &["adopt", "--finish"]).output().unwrap();
    assert!(output.status.success(), "{}\n{}", stdout(&output), stderr(&output));
    let refused = conn.batch_execute(&platform_insert("after-finish")).unwrap_err();
    assert!(refused.to_string().contains("identity_policy"), "{refused}");

    let output = adopt(&url, &[]);
    assert!(stdout(&output).contains("nothing to do"), "{}", stdout(&output));
}
