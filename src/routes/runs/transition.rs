//! Worker moves: `start`, `progress`, `complete`, `cancel`. Each loads, authorizes and
//! updates the run in one transaction, with its timeline event; the update is guarded
//! on the status it was decided from, so racing moves cannot both apply.

use actix_web::{post, web, HttpResponse};
use diesel::Connection;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use super::{authorize, RunView};
use crate::db::models::{NewRunEvent, OperationRunRow};
use crate::db::runs::{self, Change};
use crate::db::{events, Database};
use crate::domain::access::{Action, Principal};
use crate::domain::counts::Counts;
use crate::domain::failures::{Failure, ReasonCode, ReportedFailure};
use crate::domain::status::{self, FinalOutcome, Transition};
use crate::error::{ApiError, Problem};
use crate::metrics::Metrics;

/// The most failure entries one report may carry.
const MAX_FAILURES_PER_REPORT: usize = 1000;

/// A progress report.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"counts": {"processed": 10, "failed": 1}, "failures": [
    {"code": "graph_forbidden", "reason_code": "provider_permission_denied", "message": "403 from Graph", "item": "policy-17"}
]}))]
pub struct ProgressRequest {
    /// Increments added to the run's counters.
    #[serde(default)]
    #[schema(schema_with = crate::openapi::counts_schema)]
    pub counts: Map<String, Value>,
    #[serde(default)]
    pub failures: Vec<ReportedFailure>,
}

/// The final report.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"outcome": "partially_succeeded", "counts": {"total": 120, "processed": 120, "failed": 2}}))]
pub struct CompleteRequest {
    pub outcome: FinalOutcome,
    /// Final counter values; counters not named keep their value.
    #[serde(default)]
    #[schema(schema_with = crate::openapi::counts_schema)]
    pub counts: Map<String, Value>,
    #[serde(default)]
    pub failures: Vec<ReportedFailure>,
}

fn sanitized_failures(reports: Vec<ReportedFailure>) -> Result<Vec<Value>, ApiError> {
    if reports.len() > MAX_FAILURES_PER_REPORT {
        return Err(ApiError::unprocessable(
            "invalid_failure",
            format!("A report may carry at most {MAX_FAILURES_PER_REPORT} failures; it carried {}.", reports.len()),
        ));
    }
    reports
        .into_iter()
        .map(|report| serde_json::to_value(Failure::from_report(report)?).map_err(ApiError::internal))
        .collect()
}

fn was_reaped(run: &OperationRunRow) -> bool {
    let stale = serde_json::to_value(ReasonCode::StaleTimeout).unwrap_or_default();
    run.failure_summary.parse()["items"]
        .as_array()
        .is_some_and(|items| items.iter().any(|item| item["reason_code"] == stale))
}

/// One requested move: what it is, who may make it, what it writes.
struct RunMove {
    transition: Transition,
    action: Action,
    change: Change,
    /// The timeline event's `detail`.
    detail: Value,
}

impl RunMove {
    /// A move that changes only the status.
    fn bare(transition: Transition, action: Action) -> RunMove {
        RunMove { transition, action, change: Change::default(), detail: json!({}) }
    }

    /// A worker's report: counters (increments while running, final values on
    /// completion) and failures, validated and sanitized.
    fn reported(
        transition: Transition,
        counts: &Map<String, Value>,
        failures: Vec<ReportedFailure>,
    ) -> Result<RunMove, ApiError> {
        let counts = Counts::parse(counts)?.to_json();
        let failures = sanitized_failures(failures)?;
        let detail = json!({ "counts": counts, "failures_reported": failures.len() });
        let change = match transition {
            Transition::Progress => Change { increments: Some(counts), final_counts: None, failures },
            _ => Change { increments: None, final_counts: Some(counts), failures },
        };
        Ok(RunMove { transition, action: Action::Execute, change, detail })
    }
}

/// Loads, authorizes and moves one run, appending its event, in one transaction.
async fn move_run(
    db: &Database,
    metrics: &Metrics,
    principal: Principal,
    run_id: i64,
    requested: RunMove,
) -> Result<HttpResponse, ApiError> {
    let RunMove { transition, action, change, detail } = requested;
    let moved = db.run(move |conn| {
        conn.transaction(|conn| {
            // Retried only when a concurrent move changed the status under us.
            for _ in 0..5 {
                let run = runs::find(conn, principal.workspace_id, run_id)?.ok_or(ApiError::NotFound)?;
                authorize(&principal, &run, action)?;
                let (to, outcome) = status::apply(run.status, run.outcome, transition).map_err(|error| {
                    match ApiError::from(error) {
                        ApiError::InvalidTransition(reason) if was_reaped(&run) => ApiError::InvalidTransition(format!(
                            "run {run_id} was reaped as stale (no worker completed it in time) and can no longer change; {reason}"
                        )),
                        ApiError::InvalidTransition(reason) => ApiError::InvalidTransition(format!("run {run_id}: {reason}")),
                        other => other,
                    }
                })?;
                if let Some(updated) = runs::update(conn, run.id, run.status, to, outcome, change.clone())? {
                    events::append(conn, &NewRunEvent {
                        run_id: run.id,
                        workspace_id: run.workspace_id,
                        actor: principal.initiator_name.clone(),
                        kind: transition.event_kind(),
                        from_status: Some(run.status),
                        to_status: to,
                        outcome,
                        detail: detail.clone(),
                    })?;
                    return Ok(updated);
                }
            }
            Err(ApiError::InvalidTransition(format!("run {run_id} is being changed by other requests; retry")))
        })
    })
    .await?;
    metrics.transitions.with_label_values(&[transition.event_kind()]).inc();
    Ok(HttpResponse::Ok().json(RunView::from(moved)))
}

/// Mark a queued run as running.
#[utoipa::path(
    tag = "worker",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "Run id")),
    responses(
        (status = 200, body = RunView),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json", description = "Needs `operations.execute`"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "`invalid_transition`"),
    )
)]
#[post("/v1/runs/{id}/start")]
pub async fn start_run_work(
    db: web::Data<Database>,
    metrics: web::Data<Metrics>,
    principal: Principal,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    move_run(&db, &metrics, principal, id.into_inner(), RunMove::bare(Transition::Start, Action::Execute)).await
}

/// Report progress of a running run.
///
/// Counters are increments, added atomically in SQL: concurrent reports lose nothing.
/// Failures are sanitized and appended; a run keeps the first 100 and counts the rest.
#[utoipa::path(
    tag = "worker",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "Run id")),
    request_body = ProgressRequest,
    responses(
        (status = 200, body = RunView),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 400, body = Problem, content_type = "application/problem+json", description = "Malformed JSON"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "`invalid_transition`: the run is not running"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "`invalid_body`, `invalid_counts` or `invalid_failure`"),
    )
)]
#[post("/v1/runs/{id}/progress")]
pub async fn report_progress(
    db: web::Data<Database>,
    metrics: web::Data<Metrics>,
    principal: Principal,
    id: web::Path<i64>,
    request: web::Json<ProgressRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = request.into_inner();
    let requested = RunMove::reported(Transition::Progress, &request.counts, request.failures)?;
    move_run(&db, &metrics, principal, id.into_inner(), requested).await
}

/// Complete a run with its final outcome.
#[utoipa::path(
    tag = "worker",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "Run id")),
    request_body = CompleteRequest,
    responses(
        (status = 200, body = RunView),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 400, body = Problem, content_type = "application/problem+json", description = "Malformed JSON"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "`invalid_transition`: already completed (or reaped)"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "`invalid_body`, `invalid_counts` or `invalid_failure`"),
    )
)]
#[post("/v1/runs/{id}/complete")]
pub async fn complete_run(
    db: web::Data<Database>,
    metrics: web::Data<Metrics>,
    principal: Principal,
    id: web::Path<i64>,
    request: web::Json<CompleteRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = request.into_inner();
    let transition = Transition::Complete(request.outcome.into());
    let requested = RunMove::reported(transition, &request.counts, request.failures)?;
    move_run(&db, &metrics, principal, id.into_inner(), requested).await
}

/// Cancel a queued or running run.
///
/// Allowed with `operations.execute` or the type's start capability.
#[utoipa::path(
    tag = "worker",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "Run id")),
    responses(
        (status = 200, body = RunView),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "`invalid_transition`: already completed"),
    )
)]
#[post("/v1/runs/{id}/cancel")]
pub async fn cancel_run(
    db: web::Data<Database>,
    metrics: web::Data<Metrics>,
    principal: Principal,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    move_run(&db, &metrics, principal, id.into_inner(), RunMove::bare(Transition::Cancel, Action::Cancel)).await
}
