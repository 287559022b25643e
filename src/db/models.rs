//! Row structs (what a query returns) and insert forms (what a statement writes).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde_json::Value;

use super::schema::{operation_run_events, operation_runs};
use super::JsonText;
use crate::domain::catalog::RunType;
use crate::domain::identity::IdentityPolicy;
use crate::domain::ids::{RunId, TenantId, WorkspaceId};
use crate::domain::status::{EventKind, Outcome, RunStatus};

/// One row of `operation_runs`.
#[derive(Clone, Debug, Queryable, Selectable, Identifiable)]
#[diesel(table_name = operation_runs, check_for_backend(diesel::pg::Pg))]
pub struct OperationRunRow {
    pub id: RunId,
    pub workspace_id: WorkspaceId,
    pub tenant_id: Option<TenantId>,
    pub user_id: Option<i64>,
    pub initiator_name: String,
    #[diesel(column_name = type_)]
    pub run_type: RunType,
    pub status: RunStatus,
    pub outcome: Outcome,
    pub summary_counts: JsonText,
    pub failure_summary: JsonText,
    pub context: JsonText,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Generated from `context.backup_schedule_id` for backup-schedule types.
    pub backup_schedule_id: Option<i64>,
    /// 1 at creation, one more on every update (a trigger counts them): what ETags name.
    pub revision: i64,
}

/// A run about to be created.
#[derive(Clone, Debug)]
pub struct NewOperationRun {
    pub workspace_id: WorkspaceId,
    pub tenant_id: Option<TenantId>,
    pub user_id: Option<i64>,
    pub initiator_name: String,
    pub run_type: RunType,
    pub run_identity_hash: String,
    pub identity_policy: IdentityPolicy,
    pub context: Value,
    /// `None` for a run started now: the table's defaults make it queued and pending,
    /// with no counts or failures, created now. The legacy backfill carries a legacy
    /// row's state over.
    pub carried: Option<CarriedState>,
}

/// The state a run carried over from a legacy table is created with.
#[derive(Clone, Debug)]
pub struct CarriedState {
    pub status: RunStatus,
    pub outcome: Outcome,
    pub summary_counts: Value,
    pub failure_summary: Value,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    /// `None`: now.
    pub created_at: Option<DateTime<Utc>>,
    /// `None`: now.
    pub updated_at: Option<DateTime<Utc>>,
}

/// One entry of a run's timeline.
#[derive(Clone, Debug, Queryable, Selectable)]
#[diesel(table_name = operation_run_events, check_for_backend(diesel::pg::Pg))]
pub struct RunEventRow {
    pub id: i64,
    pub run_id: RunId,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub kind: EventKind,
    pub from_status: Option<RunStatus>,
    pub to_status: RunStatus,
    pub outcome: Outcome,
    pub detail: Value,
}

/// A timeline entry about to be appended; built only by [`super::events::record`].
#[derive(Clone, Debug, Insertable)]
#[diesel(table_name = operation_run_events)]
pub(super) struct NewRunEvent<'a> {
    pub run_id: RunId,
    pub workspace_id: WorkspaceId,
    pub actor: &'a str,
    pub kind: EventKind,
    pub from_status: Option<RunStatus>,
    pub to_status: RunStatus,
    pub outcome: Outcome,
    pub detail: &'a Value,
}
