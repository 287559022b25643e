//! What every group commit does when the database refuses a batch: one row it will not
//! take, or a deadlock with another batch, fails the whole transaction, so each item is
//! then made on its own and only the one at fault fails.

use diesel::PgConnection;

use crate::db::DbError;

/// How often work that lost a race to a concurrent writer is tried again before it gives
/// up: a move whose run changed status under it, a creation whose identity's holder
/// finished between the insert and the look.
pub const RACE_ATTEMPTS: usize = 5;

/// Runs `together` for the whole batch; when the database refuses it (a query error, not
/// an unavailable server or a spent budget, which fail every item alike), runs `alone`
/// for each item in order. A batch of one is not made twice.
pub fn together_else_alone<J, A>(
    conn: &mut PgConnection,
    batch: &[J],
    together: impl FnOnce(&mut PgConnection, &[J]) -> Result<Vec<A>, DbError>,
    mut alone: impl FnMut(&mut PgConnection, &J) -> A,
) -> Result<Vec<A>, DbError> {
    match together(conn, batch) {
        Err(DbError::Query(_)) if batch.len() > 1 => Ok(batch.iter().map(|item| alone(conn, item)).collect()),
        answered => answered,
    }
}
