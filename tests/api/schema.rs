//! The migrations build what SPEC §2 asks for, and the database itself refuses bad rows.

use diesel::sql_types::{Bool, Text};
use diesel::{sql_query, QueryableByName, RunQueryDsl};
use diesel_migrations::MigrationHarness;

use crate::helpers::{fresh_database, TestApp};

#[derive(QueryableByName)]
struct IndexRow {
    #[diesel(sql_type = Text)]
    indexname: String,
    #[diesel(sql_type = Text)]
    indexdef: String,
}

fn indexes(conn: &mut diesel::PgConnection) -> Vec<IndexRow> {
    sql_query("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'operation_runs'").load(conn).unwrap()
}

#[tokio::test]
async fn migrations_create_every_index_the_spec_names() {
    let app = TestApp::spawn().await;
    let found = indexes(&mut app.db());
    let definition = |name: &str| {
        found
            .iter()
            .find(|i| i.indexname == name)
            .map(|i| i.indexdef.clone())
            .unwrap_or_else(|| panic!("no index {name}"))
    };
    let expected = [
        ("operation_runs_workspace_created_idx", "(workspace_id, created_at DESC, id DESC)", None),
        (
            "operation_runs_workspace_scoped_created_idx",
            "(workspace_id, created_at DESC, id DESC)",
            Some("(tenant_id IS NULL)"),
        ),
        ("operation_runs_workspace_type_created_idx", "(workspace_id, type, created_at DESC, id DESC)", None),
        ("operation_runs_workspace_tenant_created_idx", "(workspace_id, tenant_id, created_at DESC, id DESC)", None),
        ("operation_runs_active_tenant_identity_key", "UNIQUE INDEX", Some("(tenant_id IS NOT NULL)")),
        ("operation_runs_active_workspace_identity_key", "UNIQUE INDEX", Some("(tenant_id IS NULL)")),
        ("operation_runs_strict_once_identity_key", "UNIQUE INDEX", Some("'strict_once'")),
        (
            "operation_runs_backup_schedule_history_idx",
            "(workspace_id, backup_schedule_id, created_at DESC, id DESC)",
            None,
        ),
    ];
    for (name, shape, predicate) in expected {
        let def = definition(name);
        assert!(def.contains(shape), "{name}: {def}");
        if let Some(predicate) = predicate {
            assert!(def.contains(predicate), "{name}: {def}");
        }
    }
    for unique in found.iter().filter(|i| i.indexdef.contains("UNIQUE") && !i.indexname.ends_with("_pkey")) {
        assert!(unique.indexdef.contains("USING btree (workspace_id"), "workspace_id must lead: {}", unique.indexdef);
    }
    for active in ["operation_runs_active_tenant_identity_key", "operation_runs_active_workspace_identity_key"] {
        let def = definition(active);
        assert!(def.contains("'queued'") && def.contains("'running'") && !def.contains("'completed'"), "{def}");
    }
}

fn insert_raw(
    conn: &mut diesel::PgConnection,
    status: &str,
    outcome: &str,
    completed: bool,
) -> Result<usize, diesel::result::Error> {
    sql_query(format!(
        "INSERT INTO operation_runs (workspace_id, tenant_id, initiator_name, type, status, outcome, run_identity_hash, identity_policy, completed_at)
         VALUES (1, 1, 'x', 'inventory_sync', '{status}', '{outcome}', repeat('a', 64), 'dedupe_active', {})",
        if completed { "now()" } else { "NULL" }
    ))
    .execute(conn)
}

#[tokio::test]
async fn check_constraints_refuse_bad_status_and_outcome_pairs() {
    let app = TestApp::spawn().await;
    let mut conn = app.db();
    for (status, outcome, completed) in [
        ("completed", "pending", true),
        ("queued", "succeeded", false),
        ("running", "failed", false),
        ("finished", "pending", false),
        ("queued", "great", false),
        ("completed", "succeeded", false),
    ] {
        let error = insert_raw(&mut conn, status, outcome, completed)
            .expect_err(&format!("{status}/{outcome} must be refused"));
        assert!(error.to_string().contains("check constraint"), "{error}");
    }
    insert_raw(&mut conn, "completed", "succeeded", true).expect("a consistent row is accepted");
    insert_raw(&mut conn, "queued", "pending", false).expect("a consistent row is accepted");
}

#[tokio::test]
async fn the_timeline_is_append_only() {
    let app = TestApp::spawn().await;
    let token = crate::helpers::admin_token();
    app.start(&token, crate::helpers::inventory_sync(1, "a")).await;
    let mut conn = app.db();
    for statement in ["UPDATE operation_run_events SET actor = 'x'", "DELETE FROM operation_run_events"] {
        let error = sql_query(statement).execute(&mut conn).unwrap_err();
        assert!(error.to_string().contains("append-only"), "{error}");
    }
}

#[derive(QueryableByName)]
struct Exists {
    #[diesel(sql_type = Bool)]
    exists: bool,
}

#[tokio::test]
async fn migrations_revert_cleanly_and_apply_again() {
    let mut conn = diesel::Connection::establish(&fresh_database()).unwrap();
    let conn: &mut diesel::PgConnection = &mut conn;
    conn.revert_all_migrations(opsrun::db::MIGRATIONS).expect("down.sql reverts");
    let table_exists = |conn: &mut diesel::PgConnection| {
        sql_query("SELECT to_regclass('operation_runs') IS NOT NULL AS exists")
            .get_result::<Exists>(conn)
            .unwrap()
            .exists
    };
    assert!(!table_exists(conn));
    opsrun::db::migrate(conn).expect("migrations apply again");
    assert!(table_exists(conn));
}
