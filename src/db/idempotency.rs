//! The stored answers of requests that carried an `Idempotency-Key`.

use std::time::Duration;

use diesel::dsl::{now, sql};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Double};

use super::schema::idempotency_keys::{self, dsl::*};
use crate::domain::ids::WorkspaceId;

/// One stored answer, as read and written.
#[derive(Clone, Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = idempotency_keys, check_for_backend(diesel::pg::Pg))]
pub struct StoredAnswer {
    pub workspace_id: WorkspaceId,
    pub subject: String,
    pub key: String,
    pub request_hash: String,
    pub response_status: i16,
    pub response_type: String,
    pub response_location: Option<String>,
    pub response_body: String,
}

/// Takes the transaction-scoped advisory lock `lock`, unless another transaction holds it.
pub fn try_lock(conn: &mut PgConnection, lock: i64) -> QueryResult<bool> {
    diesel::select(sql::<Bool>("pg_try_advisory_xact_lock(").bind::<BigInt, _>(lock).sql(")")).get_result(conn)
}

/// The answer stored for this caller's key, if it is younger than `kept`.
pub fn find(
    conn: &mut PgConnection,
    workspace: WorkspaceId,
    caller: &str,
    given: &str,
    kept: Duration,
) -> QueryResult<Option<StoredAnswer>> {
    idempotency_keys
        .filter(workspace_id.eq(workspace))
        .filter(subject.eq(caller))
        .filter(key.eq(given))
        .filter(
            sql::<Bool>("created_at > now() - make_interval(secs => ").bind::<Double, _>(kept.as_secs_f64()).sql(")"),
        )
        .select(StoredAnswer::as_select())
        .first(conn)
        .optional()
}

/// Stores an answer, replacing an expired one under the same key.
pub fn save(conn: &mut PgConnection, answer: &StoredAnswer) -> QueryResult<()> {
    diesel::insert_into(idempotency_keys::table)
        .values(answer)
        .on_conflict((workspace_id, subject, key))
        .do_update()
        .set((
            request_hash.eq(&answer.request_hash),
            response_status.eq(answer.response_status),
            response_type.eq(&answer.response_type),
            response_location.eq(&answer.response_location),
            response_body.eq(&answer.response_body),
            created_at.eq(now),
        ))
        .execute(conn)
        .map(drop)
}

/// Deletes at most `batch` answers older than `kept`; returns how many it deleted.
pub fn purge_expired(conn: &mut PgConnection, kept: Duration, batch: i64) -> QueryResult<usize> {
    diesel::sql_query(
        "DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY(
             SELECT ctid FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1) LIMIT $2))",
    )
    .bind::<Double, _>(kept.as_secs_f64())
    .bind::<BigInt, _>(batch)
    .execute(conn)
}
