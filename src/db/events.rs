//! The append-only run timeline. Every change to a run writes exactly one event, and
//! [`record_each`] is the one place that writes them, but for a creation's event, which
//! is written by the statement creating the run ([`super::runs::create_each`]). Work
//! that writes runs runs through [`super::Database::write`] or a write coalescer, which
//! tell the instances' listeners once it commits (`crate::live`).

use diesel::dsl::exists;
use diesel::prelude::*;
use serde_json::Value;

use super::models::{NewRunEvent, OperationRunRow, RunEventRow};
use super::schema::operation_run_events::dsl::*;
use crate::domain::ids::RunId;
use crate::domain::status::{EventKind, RunStatus};

/// Appends the event of one change to a run: `run` as the change left it, and the
/// status it left (`None` for its creation).
pub fn record(
    conn: &mut PgConnection,
    run: &OperationRunRow,
    left: Option<RunStatus>,
    by: &str,
    what: EventKind,
    details: &Value,
) -> QueryResult<()> {
    record_each(conn, [(run, left, details, by)], what)
}

/// Appends one event per change, in one statement (runs created together): the run as
/// the change left it, the status it left, the event's detail and who made the change.
pub fn record_each<'a>(
    conn: &mut PgConnection,
    changes: impl IntoIterator<Item = (&'a OperationRunRow, Option<RunStatus>, &'a Value, &'a str)>,
    what: EventKind,
) -> QueryResult<()> {
    let events: Vec<NewRunEvent> = changes
        .into_iter()
        .map(|(run, left, details, by)| NewRunEvent {
            run_id: run.id,
            workspace_id: run.workspace_id,
            actor: by,
            kind: what,
            from_status: left,
            to_status: run.status,
            outcome: run.outcome,
            detail: details,
        })
        .collect();
    if events.is_empty() {
        return Ok(());
    }
    diesel::insert_into(operation_run_events).values(&events).execute(conn)?;
    Ok(())
}

/// A run's timeline after the event `after` (`0`: all of it), oldest first.
pub fn for_run(conn: &mut PgConnection, run: RunId, after: i64) -> QueryResult<Vec<RunEventRow>> {
    operation_run_events
        .filter(run_id.eq(run))
        .filter(id.gt(after))
        .order(id.asc())
        .select(RunEventRow::as_select())
        .load(conn)
}

/// Whether the run's timeline holds an event of this kind.
pub fn has(conn: &mut PgConnection, run: RunId, wanted: EventKind) -> QueryResult<bool> {
    diesel::select(exists(operation_run_events.filter(run_id.eq(run)).filter(kind.eq(wanted)))).get_result(conn)
}
