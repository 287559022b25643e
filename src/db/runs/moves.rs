//! Finding runs and moving one, guarded on the status it was decided from.

use diesel::dsl::{now, sql};
use diesel::prelude::*;
use diesel::sql_types::{Jsonb, Nullable, Timestamptz};
use serde_json::{json, Value};

use crate::db::models::OperationRunRow;
use crate::db::schema::operation_runs::dsl::*;
use crate::domain::ids::{RunId, WorkspaceId};
use crate::domain::status::{Outcome, RunStatus};

/// The run with this id in this workspace; other workspaces' runs do not exist here.
pub fn find(conn: &mut PgConnection, workspace: WorkspaceId, run: RunId) -> QueryResult<Option<OperationRunRow>> {
    operation_runs
        .filter(workspace_id.eq(workspace))
        .filter(id.eq(run))
        .select(OperationRunRow::as_select())
        .first(conn)
        .optional()
}

/// [`find`] for many `(workspace, run)` at once, in one statement: each answer is the run
/// only if it is in the asker's workspace, exactly as [`find`] would answer it.
pub fn find_each(
    conn: &mut PgConnection,
    wanted: &[(WorkspaceId, RunId)],
) -> QueryResult<Vec<Option<OperationRunRow>>> {
    let ids: Vec<RunId> = wanted.iter().map(|(_, run)| *run).collect();
    let found: Vec<OperationRunRow> =
        operation_runs.filter(id.eq_any(ids)).select(OperationRunRow::as_select()).load(conn)?;
    let found: std::collections::HashMap<RunId, &OperationRunRow> = found.iter().map(|row| (row.id, row)).collect();
    Ok(wanted
        .iter()
        .map(|(workspace, run)| found.get(run).filter(|row| row.workspace_id == *workspace).map(|row| (*row).clone()))
        .collect())
}

/// One move of a run, as the statement applies it.
#[derive(Clone, Debug, Default)]
pub struct Change {
    /// Counters added to the stored ones, in SQL.
    pub increments: Option<Value>,
    /// Counters that replace the stored ones.
    pub final_counts: Option<Value>,
    /// Sanitized failure entries to append.
    pub failures: Vec<Value>,
}

/// Moves the run from `from` to (`to`, `to_outcome`), guarded on its status still being
/// `from`. Returns `None` when another request moved it first.
pub fn update(
    conn: &mut PgConnection,
    run: RunId,
    from: RunStatus,
    to: RunStatus,
    to_outcome: Outcome,
    change: &Change,
) -> QueryResult<Option<OperationRunRow>> {
    let increments = change.increments.clone().unwrap_or_else(|| json!({}));
    let final_counts = change.final_counts.clone().unwrap_or_else(|| json!({}));
    let failures = Value::Array(change.failures.clone());
    let starting = from == RunStatus::Queued && to == RunStatus::Running;
    let completing = to == RunStatus::Completed;
    diesel::update(operation_runs.filter(id.eq(run)).filter(status.eq(from)))
        .set((
            status.eq(to),
            outcome.eq(to_outcome),
            summary_counts.eq(sql::<Jsonb>("opsrun_add_counts(summary_counts, ")
                .bind::<Jsonb, _>(increments)
                .sql(") || ")
                .bind::<Jsonb, _>(final_counts)),
            failure_summary.eq(sql::<Jsonb>("CASE WHEN jsonb_array_length(")
                .bind::<Jsonb, _>(failures.clone())
                .sql(") = 0 THEN failure_summary ELSE opsrun_append_failures(failure_summary, ")
                .bind::<Jsonb, _>(failures)
                .sql(") END")),
            started_at.eq(sql::<Nullable<Timestamptz>>(if starting { "now()" } else { "started_at" })),
            completed_at.eq(sql::<Nullable<Timestamptz>>(if completing { "now()" } else { "completed_at" })),
            updated_at.eq(now),
        ))
        .returning(OperationRunRow::as_returning())
        .get_result(conn)
        .optional()
}
