//! The migrations build the data model of docs/CONTRACT.md, and the database itself refuses bad rows.

use diesel::sql_types::{Bool, Text};
use diesel::{sql_query, QueryableByName, RunQueryDsl};
use diesel_migrations::MigrationHarness;

use crate::helpers::{fresh_database, TestApp, TestUser};

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
        // A selective filter over a skewed history is a range of its own index.
        ("operation_runs_workspace_status_created_idx", "(workspace_id, status, created_at DESC, id DESC)", None),
        ("operation_runs_workspace_outcome_created_idx", "(workspace_id, outcome, created_at DESC, id DESC)", None),
        ("operation_runs_workspace_user_created_idx", "(workspace_id, user_id, created_at DESC, id DESC)", None),
        (
            "operation_runs_backup_schedule_status_idx",
            "(workspace_id, backup_schedule_id, status, created_at DESC, id DESC)",
            Some("(backup_schedule_id IS NOT NULL)"),
        ),
        (
            "operation_runs_backup_schedule_outcome_idx",
            "(workspace_id, backup_schedule_id, outcome, created_at DESC, id DESC)",
            Some("(backup_schedule_id IS NOT NULL)"),
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
    let token = TestUser::admin();
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

#[derive(QueryableByName)]
struct Definition {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    definition: String,
}

/// The quoted literals in a constraint, index or expression definition, sorted.
fn literals(definition: &str) -> Vec<String> {
    let mut found: Vec<String> = definition.split('\'').skip(1).step_by(2).map(str::to_owned).collect();
    found.sort();
    found
}

fn sorted(names: impl IntoIterator<Item = &'static str>) -> Vec<String> {
    let mut names: Vec<String> = names.into_iter().map(str::to_owned).collect();
    names.sort();
    names
}

#[tokio::test]
async fn the_database_spells_each_fixed_set_exactly_as_the_code_does() {
    use opsrun::domain::catalog::{RunType, BACKUP_SCHEDULE_TYPES};
    use opsrun::domain::identity::IdentityPolicy;
    use opsrun::domain::status::{EventKind, Outcome, RunStatus};

    let app = TestApp::spawn().await;
    let mut conn = app.db();
    let definitions: Vec<Definition> = sql_query(
        "SELECT conname::text AS name, pg_get_constraintdef(oid) AS definition FROM pg_constraint
          WHERE contype = 'c' AND conrelid IN ('operation_runs'::regclass, 'operation_run_events'::regclass)
         UNION ALL
         SELECT indexname::text, indexdef FROM pg_indexes WHERE tablename = 'operation_runs'
         UNION ALL
         SELECT proname::text, pg_get_functiondef(oid) FROM pg_proc WHERE proname = 'opsrun_backup_schedule_id'",
    )
    .load(&mut conn)
    .unwrap();
    let of = |name: &str| -> Vec<String> {
        let found = definitions.iter().find(|d| d.name == name).unwrap_or_else(|| panic!("no {name}"));
        literals(&found.definition)
    };

    let statuses = sorted(RunStatus::ALL.map(RunStatus::as_str));
    let outcomes = sorted(Outcome::ALL.map(Outcome::as_str));
    assert_eq!(of("operation_runs_status_check"), statuses);
    assert_eq!(of("operation_runs_outcome_check"), outcomes);
    assert_eq!(of("operation_runs_identity_policy_check"), sorted(IdentityPolicy::ALL.map(IdentityPolicy::as_str)));
    assert_eq!(of("operation_run_events_kind_check"), sorted(EventKind::ALL.map(EventKind::as_str)));
    assert_eq!(of("operation_run_events_from_status_check"), statuses);
    assert_eq!(of("operation_run_events_to_status_check"), statuses);
    assert_eq!(of("operation_run_events_outcome_check"), outcomes);
    let active = sorted(RunStatus::ACTIVE.map(RunStatus::as_str));
    assert_eq!(of("operation_runs_active_tenant_identity_key"), active);
    assert_eq!(of("operation_runs_active_workspace_identity_key"), active);
    assert_eq!(of("operation_runs_active_updated_idx"), active);
    assert_eq!(of("operation_runs_strict_once_identity_key"), sorted([IdentityPolicy::StrictOnce.as_str()]));
    // Besides the types, the function that fills backup_schedule_id names the context key
    // it reads and the shape of an id.
    let mut schedule_types = of("opsrun_backup_schedule_id");
    schedule_types.retain(|literal| literal != "backup_schedule_id" && literal != "^[0-9]{1,18}$");
    assert_eq!(schedule_types, sorted(BACKUP_SCHEDULE_TYPES.map(RunType::as_str)));
}

/// `opsrun seed` writes its rows in SQL of its own; reading them back through the typed
/// rows (where an unknown spelling fails to decode) keeps its literals equal to the enums.
#[tokio::test]
async fn seeded_runs_use_only_the_codes_spellings_and_cover_them() {
    use diesel::prelude::*;
    use opsrun::commands::seed::{seed, SeedPlan};
    use opsrun::db::models::{OperationRunRow, RunEventRow};
    use opsrun::db::schema::{operation_run_events, operation_runs};
    use opsrun::domain::status::{Outcome, RunStatus};

    let app = TestApp::spawn().await;
    let mut conn = app.db();
    let plan =
        SeedPlan { runs: 3000, workspaces: 1, tenants_per_workspace: 3, schedules_per_workspace: 5, batch: 1000 };
    assert_eq!(seed(&mut conn, plan).unwrap(), 3000);
    let runs: Vec<OperationRunRow> =
        operation_runs::table.select(OperationRunRow::as_select()).load(&mut conn).expect("every run decodes");
    let events: Vec<RunEventRow> =
        operation_run_events::table.select(RunEventRow::as_select()).load(&mut conn).expect("every event decodes");
    assert_eq!(runs.len(), 3000);
    assert!(events.len() >= runs.len());
    for status in RunStatus::ALL {
        assert!(runs.iter().any(|r| r.status == status), "no {status:?} run");
    }
    for outcome in Outcome::ALL {
        assert!(runs.iter().any(|r| r.outcome == outcome), "no {outcome:?} run");
    }
}
