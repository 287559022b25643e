//! Moving a run: a worker's start, progress, complete, or a cancel, and the reaper's
//! reap. [`apply_move`] is the one function that changes a run's status: it decides the
//! move in the state machine, applies it guarded on the status it was decided from, and
//! records its timeline event.

use diesel::{PgConnection, QueryResult};
use serde_json::{json, Map, Value};

use super::{visible_run, RunError};
use crate::db::models::OperationRunRow;
use crate::db::runs::{self, Change};
use crate::db::{events, in_transaction};
use crate::domain::access::{Action, Principal};
use crate::domain::counts::{Counts, CountsError};
use crate::domain::failures::{Failure, FailureError, ReportedFailure};
use crate::domain::ids::RunId;
use crate::domain::status::{self, EventKind, Transition, TransitionError};

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
        for _ in 0..5 {
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
