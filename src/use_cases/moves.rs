//! Moving a run: a worker's start, progress, complete, or a cancel, and the reaper's
//! reap. [`apply_move`] is the one function that changes a run's status: it decides the
//! move in the state machine, applies it guarded on the status it was decided from, and
//! records its timeline event.

use std::collections::BTreeMap;

use diesel::{PgConnection, QueryResult};
use serde_json::{json, Map, Value};

use super::{visible, visible_run, RunError};
use crate::db::coalesce::{BatchStats, Coalescer};
use crate::db::models::OperationRunRow;
use crate::db::runs::{self, Change};
use crate::db::{events, in_transaction, Database, DbError};
use crate::domain::access::{Action, Principal};
use crate::domain::counts::{Counts, CountsError};
use crate::domain::failures::{Failure, FailureError, ReportedFailure};
use crate::domain::ids::{RunId, WorkspaceId};
use crate::domain::status::{self, EventKind, Transition, TransitionError};
use crate::use_cases::batch::{together_else_alone, RACE_ATTEMPTS};
use crate::use_cases::idempotency::{self, Answer, Answered, KeyConflict, KeyedRequest};

/// The most failure entries one report may carry.
pub const MAX_FAILURES_PER_REPORT: usize = 1000;

/// One requested move: what it is and what it writes.
#[derive(Clone, Debug)]
pub struct RunMove {
    pub transition: Transition,
    pub change: Change,
    /// The timeline event's `detail`.
    pub detail: Value,
}

/// Why a worker's report was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReportRefusal {
    #[error(transparent)]
    Counts(#[from] CountsError),
    #[error(transparent)]
    Failure(#[from] FailureError),
    #[error("a report may carry at most {MAX_FAILURES_PER_REPORT} failures; it carried {0}")]
    TooManyFailures(usize),
}

impl RunMove {
    /// A move that changes only the status.
    pub fn bare(transition: Transition) -> RunMove {
        RunMove { transition, change: Change::default(), detail: json!({}) }
    }

    /// A worker's report: counters (increments while running, final values on
    /// completion) and failures, validated and sanitized.
    pub fn reported(
        transition: Transition,
        counts: &Map<String, Value>,
        failures: Vec<ReportedFailure>,
    ) -> Result<RunMove, ReportRefusal> {
        if failures.len() > MAX_FAILURES_PER_REPORT {
            return Err(ReportRefusal::TooManyFailures(failures.len()));
        }
        let counts = Counts::parse(counts)?.to_json();
        let failures = failures
            .into_iter()
            .map(|report| Ok(Failure::from_report(report)?.to_json()))
            .collect::<Result<Vec<Value>, ReportRefusal>>()?;
        let detail = json!({ "counts": counts, "failures_reported": failures.len() });
        let change = match transition {
            Transition::Progress => Change { increments: Some(counts), final_counts: None, failures },
            _ => Change { increments: None, final_counts: Some(counts), failures },
        };
        Ok(RunMove { transition, change, detail })
    }

    /// What the caller must be allowed to do with the run to make this move.
    fn action(&self) -> Action {
        match self.transition {
            Transition::Cancel => Action::Cancel,
            Transition::Start | Transition::Progress | Transition::Complete(_) | Transition::Reap => Action::Execute,
        }
    }
}

/// What [`apply_move`] came to.
#[derive(Debug)]
pub enum Applied {
    Moved(OperationRunRow),
    /// Another request changed the run's status first; nothing was written.
    Raced,
    /// The state machine does not allow the move from the run's status.
    Refused(TransitionError),
}

/// Applies one move to `run` as loaded, with its timeline event naming `actor`.
pub fn apply_move(
    conn: &mut PgConnection,
    run: &OperationRunRow,
    actor: &str,
    requested: &RunMove,
) -> QueryResult<Applied> {
    let (to, outcome) = match status::apply(run.status, run.outcome, requested.transition) {
        Ok(next) => next,
        Err(reason) => return Ok(Applied::Refused(reason)),
    };
    let Some(moved) = runs::update(conn, run.id, run.status, to, outcome, &requested.change)? else {
        return Ok(Applied::Raced);
    };
    events::record(conn, &moved, Some(run.status), actor, requested.transition.event_kind(), &requested.detail)?;
    Ok(Applied::Moved(moved))
}

/// Loads, authorizes and moves one run for `principal`, in one transaction.
pub fn move_run(
    conn: &mut PgConnection,
    principal: &Principal,
    run_id: RunId,
    requested: &RunMove,
) -> Result<OperationRunRow, RunError> {
    in_transaction(conn, |conn| {
        // Retried only when a concurrent move changed the status under us.
        for _ in 0..RACE_ATTEMPTS {
            let run = visible_run(conn, principal, run_id, requested.action())?;
            match apply_move(conn, &run, &principal.initiator_name, requested)? {
                Applied::Moved(moved) => return Ok(moved),
                Applied::Raced => continue,
                Applied::Refused(reason) => {
                    let reaped = events::has(conn, run.id, EventKind::Reaped)?;
                    return Err(RunError::Refused { run_id, reason, reaped });
                }
            }
        }
        Err(RunError::Contended { run_id })
    })
}

/// Moves one run for a caller, as [`move_run`], and answers with `render`; with a key, at
/// most once, the answer stored with the move and replayed to retries. A refusal of the
/// move (the run's status decided it) is answered like a move, and replayed; a refusal of
/// the caller (404, 403) or a passing contention is an error, not stored, so that a retry
/// with the same key may still succeed.
pub async fn request_move<E>(
    db: &Database,
    principal: Principal,
    run_id: RunId,
    requested: RunMove,
    keyed: Option<KeyedRequest>,
    render: impl FnOnce(Result<OperationRunRow, RunError>) -> Answer + Send + 'static,
) -> Result<Answered, E>
where
    E: From<RunError> + From<KeyConflict> + From<DbError> + From<diesel::result::Error> + Send + 'static,
{
    let effect = move |conn: &mut PgConnection| match move_run(conn, &principal, run_id, &requested) {
        decided @ (Ok(_) | Err(RunError::Refused { .. })) => Ok(render(decided)),
        Err(other) => Err(E::from(other)),
    };
    match keyed {
        None => db.write(Answer::is_success, effect).await.map(|answer| Answered { answer, replayed: false }),
        Some(keyed) => {
            let fresh = |answered: &Answered| !answered.replayed && answered.answer.is_success();
            db.write(fresh, move |conn| idempotency::once(conn, &keyed, effect)).await
        }
    }
}

/// One caller's progress report on one run.
#[derive(Debug)]
pub struct ProgressReport {
    pub principal: Principal,
    pub run_id: RunId,
    /// A [`RunMove::reported`] progress move.
    pub report: RunMove,
}

/// Progress reports arriving together, by one transaction per batch: the reports on one
/// run are added up into one update (counters add and failures append in order, so the
/// run ends as if they came one after another), each still records its own `progressed`
/// event, and each caller is answered with the run as its batch left it. Keyed reports
/// are not batched: each shares its transaction with its idempotency key.
pub struct ProgressBatches {
    batches: Coalescer<ProgressReport, Result<OperationRunRow, RunError>>,
}

/// Executors applying batches of progress reports.
const PROGRESS_EXECUTORS: usize = 2;

impl ProgressBatches {
    pub fn new(db: &Database) -> ProgressBatches {
        ProgressBatches { batches: db.coalescer(PROGRESS_EXECUTORS, Result::is_ok, progress_batch) }
    }

    pub fn stats(&self) -> BatchStats {
        self.batches.stats()
    }

    pub async fn report(&self, report: ProgressReport) -> Result<OperationRunRow, RunError> {
        self.batches.submit(report).await?
    }
}

/// One batch of progress reports. A statement that fails fails the batch's transaction,
/// so then each report is applied on its own, and only the report at fault fails.
pub fn progress_batch(
    conn: &mut PgConnection,
    batch: Vec<ProgressReport>,
) -> Result<Vec<Result<OperationRunRow, RunError>>, DbError> {
    together_else_alone(
        conn,
        &batch,
        |conn, batch| in_transaction(conn, |conn| progress_runs(conn, batch)),
        |conn, each| move_run(conn, &each.principal, each.run_id, &each.report),
    )
}

/// [`move_run`] for each report of a batch, in one transaction, with one update per run.
/// Runs are updated in id order, so two batches never wait on each other's rows in turn.
/// A report the run's status refuses, or whose run a concurrent move changed since it was
/// read, is applied on its own, as [`move_run`] would.
pub fn progress_runs(
    conn: &mut PgConnection,
    batch: &[ProgressReport],
) -> Result<Vec<Result<OperationRunRow, RunError>>, DbError> {
    let mut by_run: BTreeMap<(RunId, WorkspaceId), Vec<usize>> = BTreeMap::new();
    for (index, each) in batch.iter().enumerate() {
        by_run.entry((each.run_id, each.principal.workspace_id)).or_default().push(index);
    }
    let wanted: Vec<(WorkspaceId, RunId)> = by_run.keys().map(|(run, workspace)| (*workspace, *run)).collect();
    let found = runs::find_each(conn, &wanted)?;
    let mut answers: Vec<Option<Result<OperationRunRow, RunError>>> = batch.iter().map(|_| None).collect();
    let mut alone = Vec::new();
    for (reports, found) in by_run.into_values().zip(found) {
        let mut accepted = Vec::new();
        for index in reports {
            match visible(&batch[index].principal, found.clone(), Action::Execute) {
                Ok(_) => accepted.push(index),
                Err(refusal) => answers[index] = Some(Err(refusal)),
            }
        }
        let (Some(run), Some(change)) = (&found, added_up(accepted.iter().map(|&index| &batch[index].report))) else {
            alone.extend(accepted);
            continue;
        };
        let (to, outcome) = match status::apply(run.status, run.outcome, Transition::Progress) {
            Ok(next) => next,
            Err(_) => {
                alone.extend(accepted);
                continue;
            }
        };
        let Some(moved) = runs::update(conn, run.id, run.status, to, outcome, &change)? else {
            alone.extend(accepted); // moved by another request since it was read
            continue;
        };
        events::record_each(
            conn,
            accepted.iter().map(|&index| {
                let each = &batch[index];
                (&moved, Some(run.status), &each.report.detail, each.principal.initiator_name.as_str())
            }),
            EventKind::Progressed,
        )?;
        for index in accepted {
            answers[index] = Some(Ok(moved.clone()));
        }
    }
    for index in alone {
        let each = &batch[index];
        answers[index] = Some(match move_run(conn, &each.principal, each.run_id, &each.report) {
            Err(RunError::Db(error)) => return Err(error),
            answer => answer,
        });
    }
    Ok(answers
        .into_iter()
        .map(|answer| answer.unwrap_or(Err(RunError::Db(DbError::internal("a report went unanswered")))))
        .collect())
}

/// The reports' increments added up and their failures in order: one change with the
/// effect of all of them. `None` for no reports, or a counter that is not an integer
/// (which [`Counts`] never builds).
fn added_up<'a>(reports: impl Iterator<Item = &'a RunMove>) -> Option<Change> {
    let mut total: BTreeMap<String, i64> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut any = false;
    for report in reports {
        any = true;
        let increments = report.change.increments.as_ref().and_then(Value::as_object);
        for (name, by) in increments.into_iter().flatten() {
            let sum = total.entry(name.clone()).or_default();
            *sum = sum.checked_add(by.as_i64()?)?;
        }
        failures.extend(report.change.failures.iter().cloned());
    }
    let increments = Value::Object(total.into_iter().map(|(name, sum)| (name, Value::from(sum))).collect());
    any.then_some(Change { increments: Some(increments), final_counts: None, failures })
}
