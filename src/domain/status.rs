//! The run state machine: `queued → running → completed`, with an outcome that is
//! `pending` until completion. Transition legality is decided here and nowhere else.

use diesel::deserialize::FromSqlRow;
use diesel::expression::AsExpression;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

named_enum! {
    /// Where a run is in its life.
    #[derive(Serialize, Deserialize, ToSchema, AsExpression, FromSqlRow)]
    #[diesel(sql_type = diesel::sql_types::Text)]
    #[serde(rename_all = "snake_case")]
    pub enum RunStatus {
        Queued = "queued",
        Running = "running",
        Completed = "completed",
    }
}

named_enum! {
    /// How a run ended; `pending` while it has not.
    #[derive(Serialize, Deserialize, ToSchema, AsExpression, FromSqlRow)]
    #[diesel(sql_type = diesel::sql_types::Text)]
    #[serde(rename_all = "snake_case")]
    pub enum Outcome {
        Pending = "pending",
        Succeeded = "succeeded",
        PartiallySucceeded = "partially_succeeded",
        Failed = "failed",
        Blocked = "blocked",
        Cancelled = "cancelled",
    }
}

impl RunStatus {
    /// The statuses during which a run holds its identity.
    pub const ACTIVE: [RunStatus; 2] = [RunStatus::Queued, RunStatus::Running];
}

named_enum! {
    /// The outcomes a worker may complete a run with (`cancelled` has its own move).
    #[derive(Deserialize, Serialize, ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub enum FinalOutcome {
        Succeeded = "succeeded",
        PartiallySucceeded = "partially_succeeded",
        Failed = "failed",
        Blocked = "blocked",
    }
}

impl From<FinalOutcome> for Outcome {
    fn from(outcome: FinalOutcome) -> Outcome {
        match outcome {
            FinalOutcome::Succeeded => Outcome::Succeeded,
            FinalOutcome::PartiallySucceeded => Outcome::PartiallySucceeded,
            FinalOutcome::Failed => Outcome::Failed,
            FinalOutcome::Blocked => Outcome::Blocked,
        }
    }
}

/// A requested move of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Start,
    Progress,
    Complete(FinalOutcome),
    Cancel,
    /// The reaper completing a stale run as failed.
    Reap,
}

impl Transition {
    /// The event this transition writes to the timeline.
    pub fn event_kind(self) -> EventKind {
        match self {
            Transition::Start => EventKind::Started,
            Transition::Progress => EventKind::Progressed,
            Transition::Complete(_) => EventKind::Completed,
            Transition::Cancel => EventKind::Cancelled,
            Transition::Reap => EventKind::Reaped,
        }
    }
}

named_enum! {
    /// What a timeline entry records: a run's creation, or one of its moves.
    #[derive(Serialize, ToSchema, AsExpression, FromSqlRow)]
    #[diesel(sql_type = diesel::sql_types::Text)]
    #[serde(rename_all = "snake_case")]
    pub enum EventKind {
        Created = "created",
        Started = "started",
        Progressed = "progressed",
        Completed = "completed",
        Cancelled = "cancelled",
        Reaped = "reaped",
    }
}

impl EventKind {
    /// The moves a worker (or a canceller) makes through the API.
    pub const WORKER_MOVES: [EventKind; 4] =
        [EventKind::Started, EventKind::Progressed, EventKind::Completed, EventKind::Cancelled];
}

/// Why a move was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("the run is completed ({outcome}) and can no longer change")]
    AlreadyCompleted { outcome: &'static str },
    #[error("the run is already running")]
    AlreadyRunning,
    #[error("the run is queued; start it before reporting progress")]
    NotStarted,
}

/// The status and outcome a run moves to, or why it may not.
pub fn apply(
    status: RunStatus,
    outcome: Outcome,
    transition: Transition,
) -> Result<(RunStatus, Outcome), TransitionError> {
    use RunStatus::*;
    match (status, transition) {
        (Completed, _) => Err(TransitionError::AlreadyCompleted { outcome: outcome.as_str() }),
        (Queued, Transition::Start) => Ok((Running, Outcome::Pending)),
        (Running, Transition::Start) => Err(TransitionError::AlreadyRunning),
        (Queued, Transition::Progress) => Err(TransitionError::NotStarted),
        (Running, Transition::Progress) => Ok((Running, Outcome::Pending)),
        (Queued | Running, Transition::Complete(final_outcome)) => Ok((Completed, final_outcome.into())),
        (Queued | Running, Transition::Cancel) => Ok((Completed, Outcome::Cancelled)),
        (Queued | Running, Transition::Reap) => Ok((Completed, Outcome::Failed)),
    }
}

/// Which statuses a list asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StatusFilter {
    Is(RunStatus),
    /// Queued or running.
    Active,
}

impl StatusFilter {
    const ACTIVE: &'static str = "active";
    /// Every name a client may filter by: each status, and `active`.
    pub fn names() -> impl Iterator<Item = &'static str> {
        RunStatus::ALL.into_iter().map(RunStatus::as_str).chain([StatusFilter::ACTIVE])
    }

    pub fn parse(name: &str) -> Option<StatusFilter> {
        match name {
            StatusFilter::ACTIVE => Some(StatusFilter::Active),
            name => RunStatus::parse(name).map(StatusFilter::Is),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRANSITIONS: [Transition; 6] = [
        Transition::Start,
        Transition::Progress,
        Transition::Complete(FinalOutcome::Succeeded),
        Transition::Complete(FinalOutcome::Blocked),
        Transition::Cancel,
        Transition::Reap,
    ];

    #[test]
    fn completed_runs_are_immutable() {
        for outcome in &Outcome::ALL[1..] {
            for transition in TRANSITIONS {
                assert!(apply(RunStatus::Completed, *outcome, transition).is_err());
            }
        }
    }

    #[test]
    fn every_legal_move_keeps_status_and_outcome_paired() {
        for status in [RunStatus::Queued, RunStatus::Running] {
            for transition in TRANSITIONS {
                if let Ok((to, outcome)) = apply(status, Outcome::Pending, transition) {
                    assert_eq!(to == RunStatus::Completed, outcome != Outcome::Pending, "{transition:?}");
                }
            }
        }
    }

    #[test]
    fn the_happy_path_is_queued_running_completed() {
        let (s, o) = apply(RunStatus::Queued, Outcome::Pending, Transition::Start).unwrap();
        let (s, o) = apply(s, o, Transition::Progress).unwrap();
        assert_eq!(
            apply(s, o, Transition::Complete(FinalOutcome::PartiallySucceeded)).unwrap(),
            (RunStatus::Completed, Outcome::PartiallySucceeded)
        );
    }

    #[test]
    fn progress_before_start_and_double_start_are_refused() {
        assert_eq!(apply(RunStatus::Queued, Outcome::Pending, Transition::Progress), Err(TransitionError::NotStarted));
        assert_eq!(
            apply(RunStatus::Running, Outcome::Pending, Transition::Start),
            Err(TransitionError::AlreadyRunning)
        );
    }

    #[test]
    fn final_outcomes_are_the_outcomes_a_worker_may_end_with() {
        let finals: Vec<Outcome> = FinalOutcome::ALL.into_iter().map(Outcome::from).collect();
        let expected: Vec<Outcome> =
            Outcome::ALL.into_iter().filter(|o| !matches!(o, Outcome::Pending | Outcome::Cancelled)).collect();
        assert_eq!(finals, expected);
        for outcome in FinalOutcome::ALL {
            let json = serde_json::to_value(Outcome::from(outcome)).unwrap();
            assert_eq!(serde_json::from_value::<FinalOutcome>(json).unwrap(), outcome);
        }
    }

    #[test]
    fn names_round_trip() {
        for s in RunStatus::ALL {
            assert_eq!(RunStatus::parse(s.as_str()), Some(s));
        }
        for o in Outcome::ALL {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
    }
}
