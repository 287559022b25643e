//! The reaper's question: which active runs have been silent past their stale limit.

use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::Bool;

use super::active;
use crate::db::models::OperationRunRow;
use crate::db::schema::operation_runs::dsl::*;
use crate::domain::staleness::StaleLimits;

/// Active runs unchanged for longer than their type's stale limit, least recently
/// changed first. With `lock`, the rows are locked for this transaction and rows another
/// reaper holds are skipped, so concurrent reapers never take the same run.
pub fn stale(
    conn: &mut PgConnection,
    limits: &StaleLimits,
    batch: i64,
    lock: bool,
) -> QueryResult<Vec<OperationRunRow>> {
    // Types and whole milliseconds only: nothing from a client reaches this SQL.
    let cases: String =
        limits.iter().map(|(t, limit)| format!(" WHEN '{}' THEN {}", t.as_str(), limit.as_millis())).collect();
    // The shortest limit bounds the index range; the per-type limit then filters within it.
    let shortest = limits.iter().map(|(_, limit)| limit.as_millis()).min().unwrap_or(0);
    let query = operation_runs
        .filter(active())
        .filter(sql::<Bool>(&format!("updated_at < now() - make_interval(secs => {shortest} / 1000.0)")))
        .filter(sql::<Bool>(&format!("updated_at < now() - make_interval(secs => (CASE type{cases} END) / 1000.0)")))
        .order(updated_at.asc())
        .limit(batch)
        .select(OperationRunRow::as_select());
    if lock {
        query.for_update().skip_locked().load(conn)
    } else {
        query.load(conn)
    }
}
