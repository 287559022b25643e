//! The append-only run timeline.

use diesel::prelude::*;

use super::models::{NewRunEvent, RunEventRow};
use super::schema::operation_run_events::dsl::*;

pub fn append(conn: &mut PgConnection, event: &NewRunEvent) -> QueryResult<()> {
    diesel::insert_into(operation_run_events).values(event).execute(conn).map(drop)
}

/// A run's timeline, oldest first.
pub fn for_run(conn: &mut PgConnection, run: i64) -> QueryResult<Vec<RunEventRow>> {
    operation_run_events.filter(run_id.eq(run)).order(id.asc()).select(RunEventRow::as_select()).load(conn)
}
