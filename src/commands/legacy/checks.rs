//! What the legacy tables hold (analyze) and whether the cut-over is complete (verify,
//! docs/LEGACY.md, step 3). Every check is one SQL count that must be zero.

use diesel::sql_query;
use diesel::{PgConnection, QueryResult, RunQueryDsl};

use super::backfill::REFERENCES;
use super::lookups::OptionalId;
use super::mapping::LegacyTable;
use crate::db::shape::{column_exists, table_exists};

fn count(conn: &mut PgConnection, sql: &str) -> QueryResult<i64> {
    Ok(sql_query(sql).get_result::<OptionalId>(conn)?.id.unwrap_or(0))
}

/// The rows of a table that are executions (restore wizard states are not).
fn executions(table: LegacyTable) -> String {
    match table {
        LegacyTable::RestoreRuns => format!(
            "lower(regexp_replace(coalesce(status::text, ''), '[^A-Za-z0-9]', '', 'g')) NOT IN ({})",
            LegacyTable::RESTORE_WIZARD_STATES.map(|s| format!("'{s}'")).join(", ")
        ),
        _ => "true".into(),
    }
}

/// One legacy table at a glance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSummary {
    pub table: LegacyTable,
    pub present: bool,
    pub rows: i64,
    pub linked: i64,
    pub unlinked: i64,
    /// Unlinked rows that backfill would turn into runs (wizard states excluded).
    pub to_backfill: i64,
}

pub fn analyze(conn: &mut PgConnection) -> QueryResult<Vec<TableSummary>> {
    let mut summaries = Vec::new();
    for table in LegacyTable::ALL {
        let name = table.name();
        if !table_exists(conn, name)? {
            summaries.push(TableSummary { table, present: false, rows: 0, linked: 0, unlinked: 0, to_backfill: 0 });
            continue;
        }
        let rows = count(conn, &format!("SELECT count(*)::bigint AS id FROM {name}"))?;
        let linked = count(conn, &format!("SELECT count(operation_run_id)::bigint AS id FROM {name}"))?;
        let to_backfill = count(
            conn,
            &format!(
                "SELECT count(*)::bigint AS id FROM {name} WHERE operation_run_id IS NULL AND {}",
                executions(table)
            ),
        )?;
        summaries.push(TableSummary { table, present: true, rows, linked, unlinked: rows - linked, to_backfill });
    }
    Ok(summaries)
}

/// One verification: a count that must be zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The legacy table it is about, if any.
    pub table: Option<LegacyTable>,
    pub name: String,
    pub failing: i64,
}

impl Check {
    pub fn passed(&self) -> bool {
        self.failing == 0
    }
}

/// The checks for one legacy table.
pub fn table_checks(conn: &mut PgConnection, table: LegacyTable) -> QueryResult<Vec<Check>> {
    let name = table.name();
    if !table_exists(conn, name)? {
        return Ok(Vec::new());
    }
    let run_type = table.run_type().as_str();
    let mut checks = vec![
        (
            "no unlinked rows",
            format!("SELECT count(*)::bigint AS id FROM {name} WHERE operation_run_id IS NULL AND {}", executions(table)),
        ),
        (
            "every link names an existing run",
            format!(
                "SELECT count(*)::bigint AS id FROM {name} t
                 WHERE t.operation_run_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM operation_runs o WHERE o.id = t.operation_run_id)"
            ),
        ),
        (
            "one operation run per legacy row",
            format!("SELECT (count(operation_run_id) - count(DISTINCT operation_run_id))::bigint AS id FROM {name}"),
        ),
        (
            "linked runs have the canonical type",
            format!(
                "SELECT count(*)::bigint AS id FROM {name} t JOIN operation_runs o ON o.id = t.operation_run_id
                 WHERE o.type <> '{run_type}'"
            ),
        ),
        (
            "backfilled runs and legacy rows agree (counts by type match)",
            format!(
                "SELECT count(*)::bigint AS id FROM operation_runs o
                 WHERE o.context -> 'legacy' ->> 'source' = '{name}'
                   AND NOT EXISTS (SELECT 1 FROM {name} t
                                   WHERE t.id::text = o.context -> 'legacy' ->> 'id' AND t.operation_run_id = o.id)"
            ),
        ),
    ];
    if table == LegacyTable::InventorySyncRuns {
        for (referencing, legacy_column, canonical_column) in REFERENCES {
            if !table_exists(conn, referencing)? || !column_exists(conn, referencing, legacy_column)? {
                continue;
            }
            let unresolved = if column_exists(conn, referencing, canonical_column)? {
                format!("r.{canonical_column} IS NULL")
            } else {
                "true".into()
            };
            checks.push((
                "references re-pointed where resolvable",
                format!(
                    "SELECT count(*)::bigint AS id FROM {referencing} r JOIN {name} t ON r.{legacy_column} = t.id
                     JOIN operation_runs o ON o.id = t.operation_run_id WHERE {unresolved}"
                ),
            ));
        }
    }
    checks
        .into_iter()
        .map(|(check, sql)| Ok(Check { table: Some(table), name: check.into(), failing: count(conn, &sql)? }))
        .collect()
}

/// Every check: each legacy table's, and no dotted types left in operation_runs.
pub fn verify(conn: &mut PgConnection) -> QueryResult<Vec<Check>> {
    let mut checks = Vec::new();
    for table in LegacyTable::ALL {
        checks.extend(table_checks(conn, table)?);
    }
    checks.push(Check {
        table: None,
        name: "no dotted legacy types in operation_runs".into(),
        failing: count(conn, "SELECT count(*)::bigint AS id FROM operation_runs WHERE type LIKE '%.%'")?,
    });
    Ok(checks)
}
