//! `/v1/runs`: starting, listing, viewing and moving runs, and the response shapes
//! they share.

pub mod events;
pub mod json;
pub mod list;
pub mod start;
pub mod stream;
pub mod transition;
pub mod view;

use crate::http::routes::links;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::db::models::OperationRunRow;
use crate::db::JsonText;
use crate::domain::catalog::RunType;
use crate::domain::ids::{RunId, TenantId, WorkspaceId};
use crate::domain::status::{Outcome, RunStatus};
use crate::http::routes::timestamps;

/// Where to find a run and what relates to it.
#[derive(Serialize, ToSchema)]
pub struct RunLinks {
    #[serde(rename = "self")]
    #[schema(example = "/v1/runs/42")]
    pub self_: String,
    #[schema(example = "/v1/runs/42/events")]
    pub events: String,
    /// For backup-schedule runs: the schedule's run history.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, example = "/v1/backup-schedules/7/runs")]
    pub backup_schedule_runs: Option<String>,
}

/// A failure entry as stored and served.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // documents the shape of `failure_summary` for OpenAPI
pub struct FailureSummary {
    /// At most 100 entries.
    pub items: Vec<crate::domain::failures::Failure>,
    /// Entries reported beyond the first 100, counted but not kept.
    pub dropped: i64,
}

// This derive is the specification of a run's JSON; answers are written by `json`,
// whose tests hold it byte for byte equal to this.
/// An operation run.
#[derive(Serialize, ToSchema)]
pub struct RunView {
    #[schema(value_type = i64, example = 42)]
    pub id: RunId,
    #[schema(value_type = i64, example = 1)]
    pub workspace_id: WorkspaceId,
    /// `null` for a workspace-scoped run.
    #[schema(value_type = Option<i64>, required = true, example = 7)]
    pub tenant_id: Option<TenantId>,
    /// `null` when no user started it (a scheduler, a legacy job).
    #[schema(required = true, example = 1001)]
    pub user_id: Option<i64>,
    #[schema(example = "Ada Lovelace")]
    pub initiator_name: String,
    pub r#type: RunType,
    #[schema(example = "Inventory sync")]
    pub type_label: &'static str,
    pub status: RunStatus,
    pub outcome: Outcome,
    /// Counters, each a non-negative integer; the schema lists the keys.
    #[schema(schema_with = crate::http::routes::schemas::counts_schema)]
    pub summary_counts: JsonText,
    #[schema(value_type = FailureSummary)]
    pub failure_summary: JsonText,
    /// Provenance, inputs and target scope.
    #[schema(schema_with = crate::http::routes::schemas::context_schema)]
    pub context: JsonText,
    #[serde(serialize_with = "timestamps::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "timestamps::serialize")]
    pub updated_at: DateTime<Utc>,
    /// `null` until a worker starts it.
    #[schema(required = true)]
    #[serde(serialize_with = "timestamps::optional")]
    pub started_at: Option<DateTime<Utc>>,
    /// `null` until it completes.
    #[schema(required = true)]
    #[serde(serialize_with = "timestamps::optional")]
    pub completed_at: Option<DateTime<Utc>>,
    /// Seconds from start to completion; null until the run completes (a running run's
    /// elapsed time is `now - started_at`, left to the client so that an unchanged run's
    /// representation, and its ETag, stay the same).
    #[schema(required = true, example = 12.5)]
    pub duration_seconds: Option<f64>,
    pub links: RunLinks,
}

impl From<OperationRunRow> for RunView {
    fn from(run: OperationRunRow) -> RunView {
        let duration_seconds = duration_seconds(run.started_at, run.completed_at);
        let backup_schedule_runs = run.backup_schedule_id.map(links::schedule_runs);
        RunView {
            links: RunLinks { self_: links::run(run.id), events: links::run_events(run.id), backup_schedule_runs },
            id: run.id,
            workspace_id: run.workspace_id,
            tenant_id: run.tenant_id,
            user_id: run.user_id,
            initiator_name: run.initiator_name,
            r#type: run.run_type,
            type_label: run.run_type.spec().label,
            status: run.status,
            outcome: run.outcome,
            summary_counts: run.summary_counts,
            failure_summary: run.failure_summary,
            context: run.context,
            created_at: run.created_at,
            updated_at: run.updated_at,
            started_at: run.started_at,
            completed_at: run.completed_at,
            duration_seconds,
        }
    }
}

/// Seconds from start to completion, to the millisecond.
fn duration_seconds(started_at: Option<DateTime<Utc>>, completed_at: Option<DateTime<Utc>>) -> Option<f64> {
    started_at.zip(completed_at).map(|(start, end)| (end - start).num_milliseconds().max(0) as f64 / 1000.0)
}

/// A page of runs.
#[derive(Serialize, ToSchema)]
pub struct RunPage {
    pub items: Vec<RunView>,
    /// Pass as `cursor` (with the same filters) for the next page; `null` on the last.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}
