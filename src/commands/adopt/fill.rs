//! Filling the shadow columns: every row the platform's writes have not converted yet is
//! touched, so that the fill trigger converts it (docs/CUTOVER.md), and the runs the
//! survey keeps apart from an identity's holder are written down for it to read.

use std::time::{Duration, Instant};

use diesel::sql_types::{Array, BigInt, Nullable};
use diesel::{sql_query, PgConnection, QueryableByName, RunQueryDsl};

use super::compat::{shadow, KEPT_APART_TABLE};
use super::findings::Finding;
use super::survey::{progress, Survey};

/// Writes which runs lose an identity they share and to whom, for the conversion to read,
/// and converts those runs again in case the platform wrote one since the trigger came.
pub fn remember_kept_apart(
    conn: &mut PgConnection,
    survey: &Survey,
    keep_duplicates_apart: bool,
) -> anyhow::Result<()> {
    let (ids, holders): (Vec<i64>, Vec<i64>) = survey
        .apart
        .iter()
        .filter(|(_, (_, finding))| keep_duplicates_apart || *finding == Finding::StrictOnceRepeat)
        .map(|(id, (holder, _))| (*id, *holder))
        .unzip();
    sql_query(format!(
        "INSERT INTO {KEPT_APART_TABLE} (id, holder) SELECT * FROM unnest($1, $2)
         ON CONFLICT (id) DO UPDATE SET holder = excluded.holder"
    ))
    .bind::<Array<BigInt>, _>(&ids)
    .bind::<Array<BigInt>, _>(&holders)
    .execute(conn)?;
    sql_query("UPDATE operation_runs SET workspace_id = workspace_id WHERE id = ANY($1)")
        .bind::<Array<BigInt>, _>(&ids)
        .execute(conn)?;
    Ok(())
}

pub fn forget_kept_apart(conn: &mut PgConnection) -> anyhow::Result<()> {
    sql_query(format!("DROP TABLE IF EXISTS {KEPT_APART_TABLE}")).execute(conn)?;
    Ok(())
}

#[derive(QueryableByName)]
struct Filled {
    #[diesel(sql_type = Nullable<BigInt>)]
    last: Option<i64>,
    #[diesel(sql_type = BigInt)]
    converted: i64,
}

/// How long one batch of the fill should hold its row locks: a write of the platform's
/// to a row in the batch waits for it.
const BATCH_TARGET: Duration = Duration::from_millis(100);

/// Converts every row the platform's writes have not converted yet, in id order, each
/// batch its own transaction: touching a row fires the fill trigger, the one conversion
/// every row goes through. Batches are sized to take about 100 ms, at most `max_batch`
/// rows. Resumes where an interrupted fill stopped.
pub fn fill(conn: &mut PgConnection, rows: u64, max_batch: i64) -> anyhow::Result<u64> {
    // Row locks the platform holds are waited for, however long.
    sql_query("SET lock_timeout = 0").execute(conn)?;
    let unconverted = shadow("created_at");
    let statement = format!(
        "WITH batch AS (SELECT id FROM operation_runs WHERE id > $1 ORDER BY id LIMIT $2),
              converted AS (UPDATE operation_runs o SET workspace_id = o.workspace_id FROM batch
                             WHERE o.id = batch.id AND o.{unconverted} IS NULL RETURNING 1)
         SELECT (SELECT max(id) FROM batch) AS last, (SELECT count(*) FROM converted) AS converted"
    );
    let bar = progress(rows, "converting rows");
    let max_batch = max_batch.max(1);
    let (mut after, mut total, mut batch) = (0, 0, max_batch.min(100));
    loop {
        let began = Instant::now();
        let filled: Filled =
            sql_query(&statement).bind::<BigInt, _>(after).bind::<BigInt, _>(batch).get_result(conn)?;
        let Some(last) = filled.last else { break };
        after = last;
        total += filled.converted as u64;
        bar.inc(batch as u64);
        let took = began.elapsed().max(Duration::from_millis(1));
        let sized = (batch as f64 * BATCH_TARGET.as_secs_f64() / took.as_secs_f64()) as i64;
        batch = sized.clamp(batch / 2, batch * 2).clamp(1, max_batch);
    }
    bar.finish_and_clear();
    Ok(total)
}
