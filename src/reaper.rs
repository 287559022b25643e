//! The stale-run reaper: completes runs that no worker has touched within their type's
//! stale limit as `failed` with a `stale_timeout` failure and a `reaped` event, which
//! frees their identity for a new start. It runs on an interval inside `serve` and once
//! as `opsrun reap`. Row locks with SKIP LOCKED keep concurrent reapers from taking the
//! same run, and the status-guarded move keeps a run from being reaped twice. On the same
//! schedule it deletes stored `Idempotency-Key` answers past their 24 hours.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::{Connection, PgConnection, QueryResult};
use serde_json::json;

use crate::db::models::OperationRunRow;
use crate::db::runs::{self, Change};
use crate::db::{Database, DbError};
use crate::domain::catalog::RunType;
use crate::domain::failures::Failure;
use crate::domain::ids::{RunId, TenantId, WorkspaceId};
use crate::domain::staleness::StaleLimits;
use crate::domain::status::{RunStatus, Transition};
use crate::metrics::Metrics;
use crate::use_cases::idempotency;
use crate::use_cases::moves::{apply_move, Applied, RunMove};

/// Runs reaped per transaction. Each stays locked until its batch commits, so a worker's
/// (or, after a cut-over, the platform's) write to one of them waits for the whole batch:
/// 100 keep that wait near a tenth of a second.
const BATCH: i64 = 100;
/// The actor reaped events name.
pub const REAPER_ACTOR: &str = "opsrun-reaper";

/// One stale run.
#[derive(Clone, Debug)]
pub struct StaleRun {
    pub id: RunId,
    pub workspace_id: WorkspaceId,
    pub tenant_id: Option<TenantId>,
    pub run_type: RunType,
    pub status: RunStatus,
    pub last_change: DateTime<Utc>,
}

impl From<&OperationRunRow> for StaleRun {
    fn from(run: &OperationRunRow) -> StaleRun {
        StaleRun {
            id: run.id,
            workspace_id: run.workspace_id,
            tenant_id: run.tenant_id,
            run_type: run.run_type,
            status: run.status,
            last_change: run.updated_at,
        }
    }
}

/// The reap of one stale run: failed, with a failure naming its limit.
fn reap_move(run: &OperationRunRow, limits: &StaleLimits) -> RunMove {
    let limit = limits.limit(run.run_type);
    let failure = Failure::stale_timeout(limit.as_secs().div_ceil(60));
    RunMove {
        transition: Transition::Reap,
        change: Change { failures: vec![failure.to_json()], ..Change::default() },
        detail: json!({ "stale_limit_seconds": limit.as_secs(), "last_change": run.updated_at }),
    }
}

/// Reaps one batch in one transaction; returns the runs it completed.
fn reap_batch(conn: &mut PgConnection, limits: &StaleLimits) -> QueryResult<Vec<StaleRun>> {
    conn.transaction(|conn| {
        let mut reaped = Vec::new();
        for run in runs::stale(conn, limits, BATCH, true)? {
            // Locked rows cannot race; a run that moved on since is simply not reaped.
            if let Applied::Moved(_) = apply_move(conn, &run, REAPER_ACTOR, &reap_move(&run, limits))? {
                reaped.push(StaleRun::from(&run));
            }
        }
        Ok(reaped)
    })
}

/// Reaps every stale run (or, with `dry_run`, lists them without changing anything).
pub fn reap(conn: &mut PgConnection, limits: &StaleLimits, dry_run: bool) -> QueryResult<Vec<StaleRun>> {
    if dry_run {
        let stale = runs::stale(conn, limits, i64::MAX, false)?;
        return Ok(stale.iter().map(StaleRun::from).collect());
    }
    let mut all = Vec::new();
    loop {
        let batch = reap_batch(conn, limits)?;
        let done = (batch.len() as i64) < BATCH;
        all.extend(batch);
        if done {
            return Ok(all);
        }
    }
}

/// Reaps on every tick of `interval` until the task is dropped.
pub async fn run_periodically(database: Database, limits: StaleLimits, interval: Duration, metrics: Arc<Metrics>) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let limits = limits.clone();
        let tidied = database
            .write(
                |(reaped, _): &(Vec<StaleRun>, usize)| !reaped.is_empty(),
                move |conn| {
                    let reaped = reap(conn, &limits, false)?;
                    Ok::<_, DbError>((reaped, idempotency::purge_expired(conn)?))
                },
            )
            .await;
        match tidied {
            Ok((reaped, purged_keys)) => {
                for run in &reaped {
                    metrics.runs_reaped.with_label_values(&[run.run_type.as_str()]).inc();
                    tracing::warn!(run_id = %run.id, run_type = %run.run_type, last_change = %run.last_change, "reaped a stale run");
                }
                metrics.idempotency_keys_purged.inc_by(purged_keys as u64);
            }
            Err(error) => tracing::warn!(%error, "the reaper could not run; it will try again"),
        }
    }
}
