//! Readiness: whether this instance can serve, as `GET /readyz` asks.

use diesel::sql_types::Bool;
use diesel::{sql_query, QueryableByName, RunQueryDsl};

use crate::db::replica::Reads;
use crate::db::DbError;

#[derive(QueryableByName)]
struct Recovery {
    #[diesel(sql_type = Bool)]
    in_recovery: bool,
}

/// The primary answers and takes writes. A server in recovery is a standby (during a
/// failover, a connection may still reach the old primary): not ready, and that
/// connection is retired.
pub async fn primary_ready(reads: &Reads) -> Result<(), DbError> {
    reads
        .primary()
        .run(|conn| {
            let server: Recovery = sql_query("SELECT pg_is_in_recovery() AS in_recovery").get_result(conn)?;
            if server.in_recovery {
                return Err(DbError::standby());
            }
            Ok(())
        })
        .await
}
