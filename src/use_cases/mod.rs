//! Use cases: each operation on runs as one function, between the HTTP edge and the
//! database. Handlers parse a request, call one of these and render its answer; the
//! reaper and the legacy backfill call the same functions, so a rule such as "every
//! change writes exactly one timeline event" lives in one place.
//!
//! Errors here are the use cases' own ([`RunError`], [`start::StartRefusal`],
//! [`moves::ReportRefusal`]); `error.rs` maps them to HTTP.

pub mod batch;
pub mod health;
pub mod idempotency;
pub mod lists;
pub mod moves;
pub mod start;

use std::sync::Arc;

use diesel::PgConnection;

use crate::db::models::{OperationRunRow, RunEventRow};
use crate::db::replica::{AskPrimary, Reader};
use crate::db::{events, runs, DbError};
use crate::domain::access::{decide, Access, Action, MissingCapability, Principal};
use crate::domain::ids::RunId;
use crate::domain::status::TransitionError;

/// Why an operation on an existing run did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Missing, or outside the caller's workspace or tenants: the two look the same.
    #[error("no run with this id is visible to you")]
    NotFound,
    #[error(transparent)]
    Forbidden(MissingCapability),
    /// The run's status does not allow the move.
    #[error("run {run_id}: {reason}")]
    Refused {
        run_id: RunId,
        reason: TransitionError,
        /// The reaper completed the run: the worker reporting on it was too late.
        reaped: bool,
    },
    /// Concurrent moves kept changing the run's status under this one.
    #[error("run {run_id} is being changed by other requests; retry")]
    Contended { run_id: RunId },
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for RunError {
    fn from(error: diesel::result::Error) -> RunError {
        RunError::Db(error.into())
    }
}

/// The run, if the caller may do `action` with it. A run the caller must not know about
/// is [`RunError::NotFound`], exactly like a missing one.
pub fn visible_run(
    conn: &mut PgConnection,
    principal: &Principal,
    run_id: RunId,
    action: Action,
) -> Result<OperationRunRow, RunError> {
    visible(principal, runs::find(conn, principal.workspace_id, run_id)?, action)
}

/// `found` (the run read by id in the caller's workspace), if the caller may do `action`
/// with it; [`RunError::NotFound`] for a missing run and for one they must not know about.
pub fn visible(
    principal: &Principal,
    found: Option<OperationRunRow>,
    action: Action,
) -> Result<OperationRunRow, RunError> {
    let run = found.ok_or(RunError::NotFound)?;
    match decide(principal, run.workspace_id, run.tenant_id, run.run_type, action) {
        Access::Hidden => Err(RunError::NotFound),
        Access::Forbidden { needs } => Err(RunError::Forbidden(MissingCapability { needs })),
        Access::Allowed => Ok(run),
    }
}

/// A run and, if `wanted` says so once it has seen the run, its timeline after the event
/// `after` (`0`: all of it), oldest first; if the caller may view the run. A caller that
/// already holds the timeline of this revision does not want it read again.
pub fn timeline(
    conn: &mut PgConnection,
    principal: &Principal,
    run_id: RunId,
    after: i64,
    wanted: impl FnOnce(&OperationRunRow) -> bool,
) -> Result<(OperationRunRow, Option<Vec<RunEventRow>>), RunError> {
    let run = visible_run(conn, principal, run_id, Action::View)?;
    let events = if wanted(&run) { Some(events::for_run(conn, run.id, after)?) } else { None };
    Ok((run, events))
}

impl AskPrimary for RunError {
    fn ask_primary(&self) -> bool {
        match self {
            RunError::NotFound => true,
            RunError::Db(error) => error.ask_primary(),
            _ => false,
        }
    }
}

/// The run `id` for `principal`, as a view answers it, read where `reader` reads; with
/// `fresh`, from the primary (a change the caller was told of may not be on the replica).
pub async fn read_run(
    reader: &Reader,
    principal: &Principal,
    id: RunId,
    fresh: bool,
) -> Result<OperationRunRow, RunError> {
    let found = match fresh {
        true => reader.primary().find_run(principal.workspace_id, id).await,
        false => reader.find_run(principal.workspace_id, id).await,
    };
    visible(principal, found?, Action::View)
}

/// [`timeline`] read where `reader` reads (a replica's miss is asked of the primary).
pub async fn read_timeline(
    reader: &Reader,
    principal: Arc<Principal>,
    run_id: RunId,
    after: i64,
    wanted: impl Fn(&OperationRunRow) -> bool + Clone + Send + 'static,
) -> Result<(OperationRunRow, Option<Vec<RunEventRow>>), RunError> {
    reader.run(move |conn| timeline(conn, &principal, run_id, after, wanted.clone())).await
}
