//! `opsrun legacy`: backfill maps every legacy status as docs/LEGACY.md says, is
//! idempotent, verify tells before from after, drop archives and restores, and a start
//! racing the backfill never yields two active runs for one identity.

use std::process::{Command, Output};

use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::{sql_query, Connection, PgConnection, QueryableByName, RunQueryDsl};
use serde_json::{json, Value};

use crate::helpers::process::stdout;
use crate::helpers::{assert_problem, fresh_database, TestApp, TestUser};

pub const LEGACY_SCHEMA: &str = include_str!("../fixtures/legacy-schema.sql");

pub const LEGACY_ROWS: &str = r#"
INSERT INTO inventory_sync_runs (id, tenant_id, user_id, selection_hash, status, error_codes, items_observed_count,
                                 items_upserted_count, errors_count, started_at, finished_at, created_at, updated_at) VALUES
  (1, 1, 10, 'sel-a', 'pending', NULL, 0, 0, 0, NULL, NULL, '2026-01-01 10:00', '2026-01-01 10:00'),
  (2, 1, 10, 'sel-b', 'running', NULL, 5, 2, 0, '2026-01-01 10:01', NULL, '2026-01-01 10:00', '2026-01-01 10:01'),
  (3, 1, NULL, 'sel-a', 'success', '[]', 40, 40, 0, '2026-01-01 09:00', '2026-01-01 09:05', '2026-01-01 09:00', '2026-01-01 09:05'),
  (4, 2, 999, 'sel-a', 'partial', '["graph.403", "graph.429"]', 40, 38, 2, '2026-01-02 09:00', '2026-01-02 09:05', '2026-01-02 09:00', '2026-01-02 09:05'),
  (5, 2, 11, 'sel-c', 'failed', '{"not": "an array"}', 1, 0, 1, '2026-01-03 09:00', '2026-01-03 09:01', '2026-01-03 09:00', '2026-01-03 09:01'),
  (6, 1, 10, 'sel-d', 'skipped', NULL, 0, 0, 0, NULL, '2026-01-04 09:00', '2026-01-04 09:00', '2026-01-04 09:00'),
  (7, 1, 10, 'sel-e', 'exploded', NULL, 0, 0, 0, NULL, NULL, '2026-01-05 09:00', NULL),
  (8, 1, 10, 'sel-a', 'running', NULL, 0, 0, 0, '2026-01-06 09:00', NULL, '2026-01-06 09:00', '2026-01-06 09:00');
INSERT INTO entra_group_sync_runs (id, tenant_id, selection_key, slot_key, status, error_code, error_category, error_summary,
                                   pages_fetched, items_observed_count, items_upserted_count, error_count, initiator_user_id,
                                   finished_at, created_at, updated_at) VALUES
  (1, 1, 'all-groups', 'slot-1', 'pending', NULL, NULL, NULL, 0, 0, 0, 0, NULL, NULL, '2026-01-01', '2026-01-01'),
  (2, 1, 'all-groups', 'slot-2', 'succeeded', NULL, NULL, NULL, 3, 300, 300, 0, 10, '2026-01-01 01:00', '2026-01-01', '2026-01-01'),
  (3, 2, 'all-groups', 'slot-1', 'failed', 'graph.throttled', 'provider_throttled', 'Bearer abc.def.ghi was refused', 1, 0, 0, 1, NULL, '2026-01-02 01:00', '2026-01-02', '2026-01-02'),
  (4, 2, 'all-groups', 'slot-2', 'partial', NULL, NULL, NULL, 2, 10, 8, 2, 11, '2026-01-03 01:00', '2026-01-03', '2026-01-03');
INSERT INTO backup_schedule_runs (id, backup_schedule_id, tenant_id, scheduled_for, status, summary, error_code, error_message,
                                  backup_set_id, user_id, started_at, finished_at, created_at, updated_at) VALUES
  (1, 7, 1, '2026-01-01 02:00:00', 'running', NULL, NULL, NULL, NULL, NULL, '2026-01-01 02:00', NULL, '2026-01-01 02:00', '2026-01-01 02:00'),
  (2, 7, 1, '2026-01-02 02:00:00', 'success', '{"total_policies": 12, "backed_up": 12, "errors": 0}', NULL, NULL, 501, NULL, '2026-01-02 02:00', '2026-01-02 02:03', '2026-01-02 02:00', '2026-01-02 02:03'),
  (3, 7, 1, '2026-01-03 02:00:30', 'partial', '{"total_policies": 12, "backed_up": 10, "errors": 2}', 'policy.unreadable', 'password=hunter2 in the way', 502, 10, '2026-01-03 02:00', '2026-01-03 02:03', '2026-01-03 02:00', '2026-01-03 02:03'),
  (4, 7, 1, '2026-01-04 02:00:00', 'failed', '{broken json', 'backup.failed', 'it broke', NULL, NULL, NULL, '2026-01-04 02:01', '2026-01-04 02:00', '2026-01-04 02:01'),
  (5, 8, 2, '2026-01-04 02:00:00', 'canceled', NULL, NULL, NULL, NULL, NULL, NULL, '2026-01-04 02:01', '2026-01-04 02:00', '2026-01-04 02:01'),
  (6, 8, 2, '2026-01-05 02:00:00', 'skipped', NULL, NULL, NULL, NULL, NULL, NULL, '2026-01-05 02:00', '2026-01-05 02:00', '2026-01-05 02:00');
INSERT INTO restore_runs (id, tenant_id, backup_set_id, requested_by, is_dry_run, status, results, failure_reason,
                          started_at, completed_at, created_at, updated_at) VALUES
  (1, 1, 501, 'Ada', false, 'draft', NULL, NULL, NULL, NULL, '2026-01-01', '2026-01-01'),
  (2, 1, 501, 'Ada', false, 'scoped', NULL, NULL, NULL, NULL, '2026-01-01', '2026-01-01'),
  (3, 1, 501, 'Ada', true, 'previewed', NULL, NULL, NULL, NULL, '2026-01-01', '2026-01-01'),
  (4, 1, 501, 'Ada', false, 'queued', NULL, NULL, NULL, NULL, '2026-01-02', '2026-01-02'),
  (5, 1, 501, 'Ada', false, 'running', NULL, NULL, '2026-01-02 01:00', NULL, '2026-01-02', '2026-01-02'),
  (6, 2, 502, 'Someone Unknown', false, 'completed', '{"items": [{"ok": true}, {"ok": true}, {"ok": false}]}', NULL, '2026-01-03 01:00', '2026-01-03 01:10', '2026-01-03', '2026-01-03'),
  (7, 2, 502, NULL, false, 'completed_with_errors', '[{"ok": true}, {"ok": false}]', 'one item failed', '2026-01-04 01:00', '2026-01-04 01:10', '2026-01-04', '2026-01-04'),
  (8, 2, 502, 'Grace', false, 'Aborted', NULL, 'aborted by admin', '2026-01-05 01:00', '2026-01-05 01:10', '2026-01-05', '2026-01-05'),
  (9, 2, 502, 'Grace', false, 'cancelled', NULL, NULL, NULL, '2026-01-06 01:10', '2026-01-06', '2026-01-06');
INSERT INTO findings (baseline_run_id, current_run_id) VALUES (3, 4), (4, NULL);
INSERT INTO inventory_items (last_seen_run_id) VALUES (3), (5);
"#;

fn legacy_database() -> String {
    let url = fresh_database();
    let mut conn = PgConnection::establish(&url).unwrap();
    use diesel::connection::SimpleConnection;
    conn.batch_execute(LEGACY_SCHEMA).unwrap();
    conn.batch_execute(LEGACY_ROWS).unwrap();
    url
}

fn legacy(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_opsrun")).arg("legacy").args(args).arg("--database-url").arg(url).output().unwrap()
}

#[derive(QueryableByName, Debug)]
struct MappedRow {
    #[diesel(sql_type = Text)]
    source: String,
    #[diesel(sql_type = BigInt)]
    legacy_id: i64,
    #[diesel(sql_type = Text)]
    run: String,
}

/// Every backfilled run, as JSON, keyed by its legacy row.
fn backfilled(conn: &mut PgConnection) -> Vec<(String, i64, Value)> {
    sql_query(
        "SELECT o.context -> 'legacy' ->> 'source' AS source, (o.context -> 'legacy' ->> 'id')::bigint AS legacy_id,
                row_to_json(o)::text AS run
         FROM operation_runs o WHERE o.context ? 'legacy' ORDER BY 1, 2",
    )
    .load::<MappedRow>(conn)
    .unwrap()
    .into_iter()
    .map(|r| (r.source, r.legacy_id, serde_json::from_str(&r.run).unwrap()))
    .collect()
}

fn run_of<'a>(runs: &'a [(String, i64, Value)], source: &str, id: i64) -> &'a Value {
    &runs.iter().find(|(s, i, _)| s == source && *i == id).unwrap_or_else(|| panic!("no run for {source} {id}")).2
}

#[derive(QueryableByName)]
struct Link {
    #[diesel(sql_type = Nullable<BigInt>)]
    link: Option<i64>,
}

fn link_of(conn: &mut PgConnection, table: &str, id: i64) -> Option<i64> {
    sql_query(format!("SELECT operation_run_id AS link FROM {table} WHERE id = {id}"))
        .get_result::<Link>(conn)
        .unwrap()
        .link
}

#[test]
fn backfill_maps_every_status_as_the_report_says_and_a_second_run_changes_nothing() {
    let url = legacy_database();
    let analyzed = stdout(&legacy(&url, &["analyze"]));
    assert!(analyzed.contains("restore_runs") && analyzed.contains("to backfill"), "{analyzed}");
    let before = legacy(&url, &["verify"]);
    assert!(!before.status.success(), "verify fails before backfill:\n{}", stdout(&before));

    let dry = legacy(&url, &["backfill", "--dry-run"]);
    assert!(dry.status.success(), "{}", String::from_utf8_lossy(&dry.stderr));
    let mut conn = PgConnection::establish(&url).unwrap();
    assert!(backfilled(&mut conn).is_empty(), "a dry run changes nothing");

    let first = legacy(&url, &["backfill"]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let runs = backfilled(&mut conn);
    // 8 + 4 + 6 + 6 (three restore wizard states skipped).
    assert_eq!(runs.len(), 24, "{}", stdout(&first));

    let expect = |source: &str, id: i64, status: &str, outcome: &str| {
        let run = run_of(&runs, source, id);
        assert_eq!((run["status"].as_str(), run["outcome"].as_str()), (Some(status), Some(outcome)), "{source} {id}");
        run
    };
    expect("inventory_sync_runs", 1, "queued", "pending");
    expect("inventory_sync_runs", 2, "running", "pending");
    let success = expect("inventory_sync_runs", 3, "completed", "succeeded");
    assert_eq!(success["type"], "inventory_sync");
    assert_eq!(success["summary_counts"], json!({"total": 40, "succeeded": 40, "failed": 0}));
    assert_eq!(success["initiator_name"], "system");
    assert_eq!(success["workspace_id"], 1);
    let partial = expect("inventory_sync_runs", 4, "completed", "partially_succeeded");
    assert_eq!(partial["failure_summary"]["items"].as_array().unwrap().len(), 2);
    assert_eq!(
        (partial["user_id"].as_i64(), partial["initiator_name"].as_str()),
        (Some(999), Some("system")),
        "a missing user is kept as an id, named by default"
    );
    expect("inventory_sync_runs", 5, "completed", "failed");
    expect("inventory_sync_runs", 6, "completed", "cancelled");
    expect("inventory_sync_runs", 7, "completed", "failed"); // unknown status, reported
                                                             // Row 8 repeats row 1's active identity: row 1 keeps it, row 8 gets a run of its own.
    assert_eq!(expect("inventory_sync_runs", 1, "queued", "pending")["identity_policy"], "dedupe_active");
    assert_eq!(expect("inventory_sync_runs", 8, "running", "pending")["identity_policy"], "unique_per_click");
    assert!(stdout(&first).contains("unknown status `exploded`"), "{}", stdout(&first));
    let group = expect("entra_group_sync_runs", 3, "completed", "failed");
    assert_eq!(group["type"], "directory_groups_sync");
    assert_eq!(group["failure_summary"]["items"][0]["reason_code"], "provider_throttled");
    assert!(!group["failure_summary"]["items"][0]["message"].as_str().unwrap().contains("abc.def.ghi"));
    expect("entra_group_sync_runs", 4, "completed", "partially_succeeded");
    let scheduled = expect("backup_schedule_runs", 3, "completed", "partially_succeeded");
    assert_eq!(scheduled["type"], "backup_schedule_run");
    assert_eq!(scheduled["context"]["trigger"], "scheduled");
    assert_eq!(scheduled["context"]["scheduled_for"], "2026-01-03T02:00:00Z");
    assert_eq!(scheduled["context"]["backup_set_id"], 502);
    assert_eq!(scheduled["identity_policy"], "strict_once");
    assert!(!scheduled["failure_summary"].to_string().contains("hunter2"));
    assert_eq!(
        expect("backup_schedule_runs", 4, "completed", "failed")["summary_counts"],
        json!({}),
        "malformed summary JSON"
    );
    expect("backup_schedule_runs", 5, "completed", "cancelled");
    expect("restore_runs", 4, "queued", "pending");
    let restore = expect("restore_runs", 6, "completed", "succeeded");
    assert_eq!(restore["summary_counts"], json!({"total": 3, "succeeded": 2, "failed": 1}));
    assert_eq!(restore["initiator_name"], "Someone Unknown");
    assert_eq!(expect("restore_runs", 7, "completed", "partially_succeeded")["summary_counts"]["total"], 2);
    assert_eq!(
        expect("restore_runs", 8, "completed", "failed")["user_id"],
        11,
        "requested_by resolves to the one user of that name"
    );
    expect("restore_runs", 9, "completed", "cancelled");
    for wizard in 1..=3 {
        assert_eq!(link_of(&mut conn, "restore_runs", wizard), None, "wizard state {wizard} is not a run");
    }
    assert_eq!(link_of(&mut conn, "inventory_sync_runs", 3), run_of(&runs, "inventory_sync_runs", 3)["id"].as_i64());

    // Every backfilled run's `created` event names the legacy row it came from.
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let misnamed = sql_query(
        "SELECT count(*) AS n FROM operation_runs o
         LEFT JOIN operation_run_events e ON e.run_id = o.id AND e.kind = 'created' AND e.actor = 'opsrun legacy backfill'
             AND e.detail -> 'backfilled_from' = jsonb_build_object('source', o.context -> 'legacy' ->> 'source', 'id', (o.context -> 'legacy' ->> 'id')::bigint)
         WHERE o.context ? 'legacy' AND e.id IS NULL",
    )
    .get_result::<Count>(&mut conn)
    .unwrap();
    assert_eq!(misnamed.n, 0, "backfilled runs whose created event does not name their legacy row");

    // References are re-pointed wherever the legacy run they name is linked.
    #[derive(QueryableByName)]
    struct Refs {
        #[diesel(sql_type = Nullable<BigInt>)]
        a: Option<i64>,
        #[diesel(sql_type = Nullable<BigInt>)]
        b: Option<i64>,
    }
    let finding = sql_query(
        "SELECT baseline_operation_run_id AS a, current_operation_run_id AS b FROM findings ORDER BY id LIMIT 1",
    )
    .get_result::<Refs>(&mut conn)
    .unwrap();
    assert_eq!(
        (finding.a, finding.b),
        (link_of(&mut conn, "inventory_sync_runs", 3), link_of(&mut conn, "inventory_sync_runs", 4))
    );

    let after = legacy(&url, &["verify"]);
    assert!(after.status.success(), "verify passes after backfill:\n{}", stdout(&after));

    let second = legacy(&url, &["backfill"]);
    assert!(second.status.success());
    assert_eq!(backfilled(&mut conn).len(), 24, "a second backfill creates nothing:\n{}", stdout(&second));
}

#[test]
fn drop_refuses_while_rows_are_unlinked_then_archives_and_restore_round_trips() {
    let url = legacy_database();
    let refused = legacy(&url, &["drop", "backup_schedule_runs"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("no unlinked rows"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(!legacy(&url, &["drop", "restore_runs"]).status.success(), "restore_runs is never dropped");

    assert!(legacy(&url, &["backfill"]).status.success());
    let mut conn = PgConnection::establish(&url).unwrap();
    #[derive(QueryableByName, PartialEq, Debug)]
    struct Snapshot {
        #[diesel(sql_type = Text)]
        rows: String,
    }
    let snapshot = |conn: &mut PgConnection, table: &str| {
        sql_query(format!("SELECT coalesce(json_agg(t ORDER BY id)::text, '') AS rows FROM {table} t"))
            .get_result::<Snapshot>(conn)
            .unwrap()
    };
    let before = snapshot(&mut conn, "backup_schedule_runs");

    let dropped = legacy(&url, &["drop", "backup_schedule_runs"]);
    assert!(dropped.status.success(), "{}", String::from_utf8_lossy(&dropped.stderr));
    assert!(stdout(&dropped).contains("archived 6 rows"));
    assert_eq!(snapshot(&mut conn, "_archive_backup_schedule_runs"), before);
    assert!(sql_query("SELECT 1 FROM backup_schedule_runs").execute(&mut conn).is_err(), "the table is gone");

    let restored = legacy(&url, &["drop", "backup_schedule_runs", "--restore"]);
    assert!(restored.status.success(), "{}", String::from_utf8_lossy(&restored.stderr));
    assert_eq!(snapshot(&mut conn, "backup_schedule_runs"), before);
    assert!(
        sql_query("SELECT 1 FROM _archive_backup_schedule_runs").execute(&mut conn).is_err(),
        "the archive is consumed"
    );

    // inventory_sync_runs has findings pointing at it: drop works once they are re-pointed.
    let dropped = legacy(&url, &["drop", "inventory_sync_runs"]);
    assert!(dropped.status.success(), "{}", String::from_utf8_lossy(&dropped.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_start_racing_the_backfill_never_makes_two_active_runs_for_one_identity() {
    let url = legacy_database();
    {
        // Plenty of rows so that backfill takes a while, and one active row for the raced identity.
        let mut conn = PgConnection::establish(&url).unwrap();
        sql_query(
            "INSERT INTO inventory_sync_runs (id, tenant_id, selection_hash, status, created_at, updated_at, finished_at)
             SELECT g, 1, 'bulk-' || g, 'success', now(), now(), now() FROM generate_series(100, 3099) g",
        )
        .execute(&mut conn)
        .unwrap();
        sql_query("INSERT INTO inventory_sync_runs (id, tenant_id, selection_hash, status, created_at) VALUES (5000, 1, 'raced', 'running', now())")
            .execute(&mut conn)
            .unwrap();
    }
    let app = TestApp::spawn_on(url.clone(), crate::helpers::test_auth()).await;
    let backfill = tokio::task::spawn_blocking({
        let url = url.clone();
        move || legacy(&url, &["backfill", "--batch", "100"])
    });
    let starter = TestUser::with(json!("*"), &["inventory.sync"]);
    let body = json!({"type": "inventory_sync", "tenant_id": 1, "inputs": {"selection_hash": "raced"}});
    let (mut created, mut refused) = (0, 0);
    while !backfill.is_finished() {
        let response = app.post("/v1/runs", &starter, body.clone()).await;
        match response.status().as_u16() {
            201 => created += 1,
            409 => {
                assert_problem(response, 409, "duplicate_run").await;
                refused += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(backfill.await.unwrap().status.success());
    println!("during the backfill: {created} start(s) created, {refused} refused");
    assert!(created <= 1, "at most one start can win: {created}");
    assert!(refused > 10, "the starts ran while the backfill did");

    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let mut conn = PgConnection::establish(&url).unwrap();
    let active = sql_query(
        "SELECT count(*) AS n FROM operation_runs WHERE context ->> 'selection_hash' = 'raced' AND status IN ('queued', 'running')",
    )
    .get_result::<Count>(&mut conn)
    .unwrap();
    assert_eq!(active.n, 1, "exactly one active run holds the identity");
    let linked = link_of(&mut conn, "inventory_sync_runs", 5000).expect("the legacy row is linked");
    let holder = sql_query(
        "SELECT id AS n FROM operation_runs WHERE context ->> 'selection_hash' = 'raced' AND status IN ('queued', 'running')",
    )
        .get_result::<Count>(&mut conn)
        .unwrap();
    assert_eq!(linked, holder.n, "the legacy row links to the one active run");
}
