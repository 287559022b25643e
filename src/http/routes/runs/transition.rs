//! Worker moves: `start`, `progress`, `complete`, `cancel`. Each parses its report and
//! calls [`move_run`], which loads, authorizes and moves the run in one transaction.

use actix_web::{http::StatusCode, post, web, HttpRequest, HttpResponse, ResponseError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::{json, RunView};
use crate::db::Database;
use crate::domain::access::Principal;
use crate::domain::failures::ReportedFailure;
use crate::domain::ids::RunId;
use crate::domain::status::{EventKind, FinalOutcome, Transition};
use crate::http::error::{ApiError, Problem};
use crate::http::routes::idempotent::{answer, counted, keyed_request, IdempotencyKeyHeader, IDEMPOTENT_REPLAYED};
use crate::metrics::Metrics;
use crate::use_cases::idempotency::KeyedRequest;
use crate::use_cases::moves::{request_move, ProgressBatches, ProgressReport, RunMove};

/// A progress report.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"counts": {"processed": 10, "failed": 1}, "failures": [
    {"code": "graph_forbidden", "reason_code": "provider_permission_denied", "message": "403 from Graph", "item": "policy-17"}
]}))]
pub struct ProgressRequest {
    /// Increments added to the run's counters.
    #[serde(default)]
    #[schema(schema_with = crate::http::routes::schemas::counts_schema)]
    pub counts: Map<String, Value>,
    #[serde(default)]
    pub failures: Vec<ReportedFailure>,
}

/// The final report.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"outcome": "partially_succeeded", "counts": {"total": 120, "processed": 120, "failed": 2}}))]
pub struct CompleteRequest {
    pub outcome: FinalOutcome,
    /// Final counter values; counters not named keep their value.
    #[serde(default)]
    #[schema(schema_with = crate::http::routes::schemas::counts_schema)]
    pub counts: Map<String, Value>,
    #[serde(default)]
    pub failures: Vec<ReportedFailure>,
}

/// Moves one run for the caller and answers with the run as the move left it. With a
/// key, the answer is replayed to retries; so is a refusal of the move (the run's state
/// decided it), but not one of the caller (404, 403) or a passing contention.
async fn respond_with_move(
    db: &Database,
    metrics: &web::Data<Metrics>,
    principal: Principal,
    run_id: i64,
    keyed: Option<KeyedRequest>,
    requested: RunMove,
) -> Result<HttpResponse, ApiError> {
    let kind = requested.transition.event_kind();
    let answered = request_move::<ApiError>(db, principal, RunId(run_id), requested, keyed, |decided| match decided {
        Ok(moved) => answer(json::respond(HttpResponse::Ok(), json::run(&moved))),
        Err(refused) => answer(ApiError::from(refused).error_response()),
    })
    .await;
    let response = counted(metrics, kind, answered)?;
    // Counted once committed: a keyed move whose answer could not be stored was rolled
    // back whole. Only a move answers 200, and a replayed answer moved nothing now.
    if response.status() == StatusCode::OK && !response.headers().contains_key(IDEMPOTENT_REPLAYED) {
        metrics.transitions.with_label_values(&[kind.as_str()]).inc();
    }
    Ok(response)
}

/// Mark a queued run as running.
///
/// **Needs** `operations.execute`.
#[utoipa::path(
    tag = "worker",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "Run id"), IdempotencyKeyHeader),
    responses(
        (status = 200, body = RunView,
         headers(("Idempotent-Replayed" = String, description = "`true` when this is the stored answer of an earlier request with the same key"))),
        (status = 400, body = Problem, content_type = "application/problem+json", description = "`invalid_idempotency_key`"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json", description = "Needs `operations.execute`"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "`invalid_transition`; or `idempotency_key_in_flight` (retry after `Retry-After`)",
         headers(("Retry-After" = String, description = "Seconds, for `idempotency_key_in_flight`"))),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "`idempotency_key_reused`: the key was used for another request"),
    )
)]
#[post("/v1/runs/{id}/start")]
pub async fn start_run_work(
    db: web::Data<Database>,
    metrics: web::Data<Metrics>,
    principal: Principal,
    http: HttpRequest,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let keyed = keyed_request(&http, &principal, &())?;
    respond_with_move(&db, &metrics, principal, id.into_inner(), keyed, RunMove::bare(Transition::Start)).await
}

/// Report progress of a running run.
///
/// Counters are increments, added atomically in SQL: concurrent reports lose nothing.
/// Failures are sanitized and appended; a run keeps the first 100 and counts the rest.
/// Reports sent at the same moment may be applied together, so the run in the answer
/// can include other workers' reports of that moment.
///
/// **Needs** `operations.execute`.
#[utoipa::path(
    tag = "worker",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "Run id"), IdempotencyKeyHeader),
    request_body = ProgressRequest,
    responses(
        (status = 200, body = RunView,
         headers(("Idempotent-Replayed" = String, description = "`true` when this is the stored answer of an earlier request with the same key"))),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 400, body = Problem, content_type = "application/problem+json", description = "`malformed_json`, or `invalid_idempotency_key`"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "`invalid_transition`: the run is not running; or `idempotency_key_in_flight` (retry after `Retry-After`)",
         headers(("Retry-After" = String, description = "Seconds, for `idempotency_key_in_flight`"))),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "`invalid_body`, `invalid_counts` or `invalid_failure`; or `idempotency_key_reused`"),
    )
)]
#[post("/v1/runs/{id}/progress")]
pub async fn report_progress(
    db: web::Data<Database>,
    batches: web::Data<ProgressBatches>,
    metrics: web::Data<Metrics>,
    principal: Principal,
    http: HttpRequest,
    id: web::Path<i64>,
    request: web::Json<ProgressRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = request.into_inner();
    let keyed = keyed_request(&http, &principal, &request)?;
    let requested = RunMove::reported(Transition::Progress, &request.counts, request.failures)?;
    if keyed.is_some() {
        return respond_with_move(&db, &metrics, principal, id.into_inner(), keyed, requested).await;
    }
    let report = ProgressReport { principal, run_id: RunId(id.into_inner()), report: requested };
    let moved = batches.report(report).await?;
    metrics.transitions.with_label_values(&[EventKind::Progressed.as_str()]).inc();
    Ok(json::respond(HttpResponse::Ok(), json::run(&moved)))
}

/// Complete a run with its final outcome.
///
/// Counters are final values. **Needs** `operations.execute`.
#[utoipa::path(
    tag = "worker",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "Run id"), IdempotencyKeyHeader),
    request_body = CompleteRequest,
    responses(
        (status = 200, body = RunView,
         headers(("Idempotent-Replayed" = String, description = "`true` when this is the stored answer of an earlier request with the same key"))),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 400, body = Problem, content_type = "application/problem+json", description = "`malformed_json`, or `invalid_idempotency_key`"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "`invalid_transition`: already completed (or reaped); or `idempotency_key_in_flight` (retry after `Retry-After`)",
         headers(("Retry-After" = String, description = "Seconds, for `idempotency_key_in_flight`"))),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "`invalid_body`, `invalid_counts` or `invalid_failure`; or `idempotency_key_reused`"),
    )
)]
#[post("/v1/runs/{id}/complete")]
pub async fn complete_run(
    db: web::Data<Database>,
    metrics: web::Data<Metrics>,
    principal: Principal,
    http: HttpRequest,
    id: web::Path<i64>,
    request: web::Json<CompleteRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = request.into_inner();
    let keyed = keyed_request(&http, &principal, &request)?;
    let transition = Transition::Complete(request.outcome);
    let requested = RunMove::reported(transition, &request.counts, request.failures)?;
    respond_with_move(&db, &metrics, principal, id.into_inner(), keyed, requested).await
}

/// Cancel a queued or running run.
///
/// **Needs** `operations.execute`, or the type's start capability.
#[utoipa::path(
    tag = "worker",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "Run id"), IdempotencyKeyHeader),
    responses(
        (status = 200, body = RunView,
         headers(("Idempotent-Replayed" = String, description = "`true` when this is the stored answer of an earlier request with the same key"))),
        (status = 400, body = Problem, content_type = "application/problem+json", description = "`invalid_idempotency_key`"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "`invalid_transition`: already completed; or `idempotency_key_in_flight` (retry after `Retry-After`)",
         headers(("Retry-After" = String, description = "Seconds, for `idempotency_key_in_flight`"))),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "`idempotency_key_reused`: the key was used for another request"),
    )
)]
#[post("/v1/runs/{id}/cancel")]
pub async fn cancel_run(
    db: web::Data<Database>,
    metrics: web::Data<Metrics>,
    principal: Principal,
    http: HttpRequest,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let keyed = keyed_request(&http, &principal, &())?;
    respond_with_move(&db, &metrics, principal, id.into_inner(), keyed, RunMove::bare(Transition::Cancel)).await
}
