//! The stored answers of requests that carried an `Idempotency-Key`.

use std::time::Duration;

use diesel::dsl::now;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Double, Interval, Nullable, SmallInt, Text};

use super::schema::idempotency_keys;
use crate::domain::ids::WorkspaceId;

/// One stored answer, as written (a claim reads it back, see [`Claimed`]).
#[derive(Clone, Debug, Insertable)]
#[diesel(table_name = idempotency_keys)]
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

/// The stored part of an answer, as a claim reads it.
#[derive(Clone, Debug, QueryableByName)]
pub struct Claimed {
    #[diesel(sql_type = Bool)]
    pub locked: bool,
    #[diesel(sql_type = Nullable<Text>)]
    pub request_hash: Option<String>,
    #[diesel(sql_type = Nullable<SmallInt>)]
    pub response_status: Option<i16>,
    #[diesel(sql_type = Nullable<Text>)]
    pub response_type: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub response_location: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub response_body: Option<String>,
}

/// Takes the key's advisory lock `lock` for this transaction unless another holds it,
/// and reads the answer stored for the key if it is younger than `kept`, in one round
/// trip (`opsrun_claim_idempotency_key`).
pub fn claim(
    conn: &mut PgConnection,
    lock: i64,
    workspace: WorkspaceId,
    caller: &str,
    given: &str,
    kept: Duration,
) -> QueryResult<Claimed> {
    diesel::sql_query("SELECT * FROM opsrun_claim_idempotency_key($1, $2, $3, $4, $5)")
        .bind::<BigInt, _>(lock)
        .bind::<BigInt, _>(workspace)
        .bind::<Text, _>(caller)
        .bind::<Text, _>(given)
        .bind::<Interval, _>(interval(kept))
        .get_result(conn)
}

/// One key to claim: its advisory lock, and whose key it is.
pub struct KeyClaim<'a> {
    pub lock: i64,
    pub workspace: WorkspaceId,
    pub caller: &'a str,
    pub given: &'a str,
}

/// [`claim`] for several keys in one statement, in their order. The keys must differ:
/// a transaction that holds a key's lock takes it again, so a key claimed twice in one
/// transaction would be fresh twice.
pub fn claim_each(conn: &mut PgConnection, keys: &[KeyClaim], kept: Duration) -> QueryResult<Vec<Claimed>> {
    diesel::sql_query(
        "SELECT claimed.* FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[]) WITH ORDINALITY
                AS k(lock, ws, caller, given, n)
         CROSS JOIN LATERAL opsrun_claim_idempotency_key(k.lock, k.ws, k.caller, k.given, $5) AS claimed
         ORDER BY k.n",
    )
    .bind::<Array<BigInt>, _>(keys.iter().map(|k| k.lock).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(keys.iter().map(|k| k.workspace.get()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(keys.iter().map(|k| k.caller).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(keys.iter().map(|k| k.given).collect::<Vec<_>>())
    .bind::<Interval, _>(interval(kept))
    .load(conn)
}

/// Stores answers in one statement, each replacing an expired one under the same key.
pub fn save_each(conn: &mut PgConnection, answers: &[StoredAnswer]) -> QueryResult<()> {
    use super::schema::idempotency_keys::dsl::*;
    use diesel::upsert::excluded;
    if answers.is_empty() {
        return Ok(());
    }
    diesel::insert_into(idempotency_keys)
        .values(answers)
        .on_conflict((workspace_id, subject, key))
        .do_update()
        .set((
            request_hash.eq(excluded(request_hash)),
            response_status.eq(excluded(response_status)),
            response_type.eq(excluded(response_type)),
            response_location.eq(excluded(response_location)),
            response_body.eq(excluded(response_body)),
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

fn interval(kept: Duration) -> diesel::pg::data_types::PgInterval {
    diesel::pg::data_types::PgInterval::from_microseconds(i64::try_from(kept.as_micros()).unwrap_or(i64::MAX))
}
