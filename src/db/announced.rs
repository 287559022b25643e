//! What the live streams read: committed events with their runs, the catch-up of one
//! workspace after a cursor, and the snapshot checks that prove a gap in the event ids
//! will never fill (`live::sequencer`).

use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::sql_types::{Bool, Integer, Text};

use super::models::RunEventRow;
use super::schema::{operation_run_events as events, operation_runs as runs};
use super::JsonText;
use crate::domain::catalog::RunType;
use crate::domain::ids::{RunId, TenantId, WorkspaceId};
use crate::domain::status::{Outcome, RunStatus};

/// What a stream shows of an event's run, as the run stands when it is read.
#[derive(Clone, Debug, Queryable, Selectable)]
#[diesel(table_name = runs, check_for_backend(diesel::pg::Pg))]
pub struct RunGlance {
    pub id: RunId,
    pub workspace_id: WorkspaceId,
    pub tenant_id: Option<TenantId>,
    #[diesel(column_name = type_)]
    pub run_type: RunType,
    pub status: RunStatus,
    pub outcome: Outcome,
    pub summary_counts: JsonText,
    pub backup_schedule_id: Option<i64>,
}

/// A committed event and its run.
pub type AnnouncedEvent = (RunEventRow, RunGlance);

/// Events with their runs, to be narrowed by a filter.
type EventsWithRuns<'a> = diesel::dsl::IntoBoxed<'a, diesel::dsl::InnerJoin<events::table, runs::table>, Pg>;

fn events_with_runs<'a>() -> EventsWithRuns<'a> {
    events::table.inner_join(runs::table).into_boxed()
}

/// The events `query` keeps, in id order, at most `limit`.
fn load_in_order(conn: &mut PgConnection, query: EventsWithRuns<'_>, limit: i64) -> QueryResult<Vec<AnnouncedEvent>> {
    query.order(events::id.asc()).limit(limit).select((RunEventRow::as_select(), RunGlance::as_select())).load(conn)
}

/// The committed events among these ids, in id order.
pub fn with_ids(conn: &mut PgConnection, ids: &[i64]) -> QueryResult<Vec<AnnouncedEvent>> {
    load_in_order(conn, events_with_runs().filter(events::id.eq_any(ids)), ids.len() as i64)
}

/// The committed events with ids in `(after, through]`, in id order, at most `limit`:
/// what the listener reads after nearly every write. Not boxed, so diesel keeps its
/// statement by type instead of writing its SQL again on each read to look it up.
///
/// The listener's plans are generic, and the upper bound keeps them cheap even when it is
/// `i64::MAX`: for `id > $1` alone the planner guesses a third of the timeline matches and
/// plans a parallel scan (9 ms on a million events), for a range it guesses a sliver and
/// walks the index (0.04 ms).
pub fn between(conn: &mut PgConnection, after: i64, through: i64, limit: i64) -> QueryResult<Vec<AnnouncedEvent>> {
    events::table
        .inner_join(runs::table)
        .filter(events::id.gt(after).and(events::id.le(through)))
        .order(events::id.asc())
        .limit(limit)
        .select((RunEventRow::as_select(), RunGlance::as_select()))
        .load(conn)
}

/// What a stream's catch-up asks for, besides its workspace and window.
#[derive(Clone, Debug, Default)]
pub struct CatchUp {
    /// Only these types (the caller's viewable ones, narrowed by the stream's filter).
    pub types: Vec<RunType>,
    pub run_id: Option<RunId>,
    pub tenant_id: Option<TenantId>,
    pub backup_schedule_id: Option<i64>,
}

/// One page of a workspace's events in `(after, through]`, in id order.
pub fn catch_up(
    conn: &mut PgConnection,
    workspace: WorkspaceId,
    after: i64,
    through: i64,
    wanted: &CatchUp,
    limit: i64,
) -> QueryResult<Vec<AnnouncedEvent>> {
    let mut query = events_with_runs()
        .filter(events::workspace_id.eq(workspace))
        .filter(events::id.gt(after).and(events::id.le(through)))
        .filter(runs::type_.eq_any(&wanted.types));
    if let Some(run_id) = wanted.run_id {
        query = query.filter(events::run_id.eq(run_id));
    }
    if let Some(tenant_id) = wanted.tenant_id {
        query = query.filter(runs::tenant_id.eq(tenant_id));
    }
    if let Some(schedule) = wanted.backup_schedule_id {
        query = query.filter(runs::backup_schedule_id.eq(schedule));
    }
    load_in_order(conn, query, limit)
}

/// The highest committed event id (0 for an empty timeline).
pub fn latest_id(conn: &mut PgConnection) -> QueryResult<i64> {
    events::table.select(diesel::dsl::max(events::id)).first::<Option<i64>>(conn).map(|id| id.unwrap_or(0))
}

/// This session's server process: the sender its own `NOTIFY`s arrive from.
pub fn backend_pid(conn: &mut PgConnection) -> QueryResult<i32> {
    diesel::select(diesel::dsl::sql::<Integer>("pg_backend_pid()")).get_result(conn)
}

#[derive(QueryableByName)]
struct Snapshot {
    #[diesel(sql_type = Text)]
    snapshot: String,
}

#[derive(QueryableByName)]
struct Finished {
    #[diesel(sql_type = Bool)]
    finished: bool,
}

/// The transactions running now, as PostgreSQL's snapshot text (`xmin:xmax:xip…`).
pub fn current_snapshot(conn: &mut PgConnection) -> QueryResult<String> {
    diesel::sql_query("SELECT pg_current_snapshot()::text AS snapshot").get_result::<Snapshot>(conn).map(|s| s.snapshot)
}

/// Whether every transaction that was running at `snapshot` has committed or rolled back.
pub fn all_finished(conn: &mut PgConnection, snapshot: &str) -> QueryResult<bool> {
    diesel::sql_query(
        "SELECT NOT EXISTS (SELECT 1 FROM pg_snapshot_xip($1::pg_snapshot) AS running(xid) \
         WHERE pg_xact_status(running.xid) = 'in progress') AS finished",
    )
    .bind::<Text, _>(snapshot)
    .get_result::<Finished>(conn)
    .map(|f| f.finished)
}
