//! `POST /v1/runs`: dispatch-time creation of a queued run, with the type's identity
//! policy enforced by the database.

use crate::http::routes::links;
use std::sync::Arc;

use actix_web::{http::header, post, web, HttpRequest, HttpResponse, HttpResponseBuilder, ResponseError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use super::{json, RunView};
use crate::db::models::OperationRunRow;
use crate::db::Database;
use crate::domain::access::Principal;
use crate::domain::catalog::RunType;
use crate::domain::identity::IdentityPolicy;
use crate::domain::status::EventKind;
use crate::http::error::{ApiError, Problem};
use crate::http::routes::idempotent::{answer, counted, keyed_request, IdempotencyKeyHeader};
use crate::metrics::Metrics;
use crate::use_cases::start::{
    plan_start, KeyedStarts, OnConflict, PlannedStart, StartBatches, StartRequest, Started, StartedKind,
};

/// What to start. Its OpenAPI schema is derived from the catalog: one shape per type.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StartRunRequest {
    /// A canonical type from `GET /v1/operation-types`.
    pub r#type: String,
    /// Required for tenant-scoped types, refused for workspace-scoped ones.
    pub tenant_id: Option<i64>,
    /// The type's inputs; they join the run's identity and are stored in its context.
    #[serde(default)]
    pub inputs: Map<String, Value>,
    /// Provenance and target scope: an object of at most 16 KiB without secret-like keys.
    #[serde(default = "empty_object")]
    pub context: Value,
    /// When a run already holds the identity: `reject` (409) or `use_existing` (200 with it).
    #[serde(default)]
    pub on_conflict: OnConflict,
}

/// A started run, and whether this start created it.
#[derive(Serialize, ToSchema)]
pub struct StartedRun {
    #[serde(flatten)]
    pub run: RunView,
    /// `true` when this start created the run (201); `false` when, with
    /// `on_conflict: use_existing`, it is the run that already held the identity (200).
    pub created: bool,
}

impl utoipa::PartialSchema for StartRunRequest {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::http::routes::schemas::start_run_request_schema()
    }
}

impl ToSchema for StartRunRequest {
    fn name() -> std::borrow::Cow<'static, str> {
        "StartRunRequest".into()
    }
}

fn empty_object() -> Value {
    json!({})
}

impl From<StartRunRequest> for StartRequest {
    fn from(request: StartRunRequest) -> StartRequest {
        StartRequest {
            type_name: request.r#type,
            tenant_id: request.tenant_id,
            inputs: request.inputs,
            context: request.context,
            on_conflict: request.on_conflict,
        }
    }
}

/// Start a run.
///
/// Creates the run `queued`. A second start of an identity that is still queued or
/// running (`dedupe_active`), or that ever ran (`strict_once`), is refused with 409,
/// `existing_run_id` and a `Location` header pointing at the holder — or, with
/// `on_conflict: use_existing`, answered 200 with the holder itself.
///
/// With an `Idempotency-Key`, a retry of the same request within 24 hours gets the first
/// answer again (`Idempotent-Replayed: true`) instead of a second run.
///
/// **Needs** the type's `start_capability` (listed by `GET /v1/operation-types`).
#[utoipa::path(
    tag = "runs",
    security(("bearer" = [])),
    params(IdempotencyKeyHeader),
    request_body = StartRunRequest,
    responses(
        (status = 201, body = StartedRun, description = "Created; `Location` names the new run",
         headers(("Location" = String, description = "/v1/runs/{id}"),
                 ("Idempotent-Replayed" = String, description = "`true` when this is the stored answer of an earlier request with the same key"),
                 ("Opsrun-Read-After" = String, description = "Every successful write answer carries it: send it back on reads that must include this write (read replicas)"))),
        (status = 200, body = StartedRun, description = "`on_conflict: use_existing` and a run already held the identity: that run, with `created: false`",
         headers(("Location" = String, description = "/v1/runs/{id}"),
                 ("Idempotent-Replayed" = String, description = "`true` when this is the stored answer of an earlier request with the same key"))),
        (status = 400, body = Problem, content_type = "application/problem+json", description = "`malformed_json`, or `invalid_idempotency_key`"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json", description = "`forbidden`: your token lacks the type's start capability"),
        (status = 404, body = Problem, content_type = "application/problem+json", description = "`tenant_not_found`: the tenant is not in your token"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "`duplicate_run`: the identity is held; or `idempotency_key_in_flight`: a request with this key is still being processed (retry after `Retry-After`)",
         headers(("Location" = String, description = "/v1/runs/{existing_run_id}, for `duplicate_run`"),
                 ("Retry-After" = String, description = "Seconds, for `idempotency_key_in_flight`"))),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "Refused input: `unknown_type`, `legacy_type`, `tenant_required`, `tenant_not_allowed`, `invalid_tenant`, `missing_input`, `unknown_input`, `invalid_input`, `invalid_context`, `secret_in_context`, `context_too_large`, `context_too_deep`, `context_conflicts_with_input`; or `idempotency_key_reused`: the key was used for another request"),
    )
)]
#[post("/v1/runs")]
pub async fn start_run(
    batches: web::Data<StartBatches>,
    keyed_starts: web::Data<KeyedStarts>,
    metrics: web::Data<Metrics>,
    principal: Principal,
    http: HttpRequest,
    request: web::Json<StartRunRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = request.into_inner();
    let keyed = keyed_request(&http, &principal, &request)?;
    let planned = plan_start(&principal, request.into())?;
    let (run_type, policy) = (planned.run.run_type, planned.run.identity_policy);
    let Some(keyed) = keyed else {
        let started = batches.start(planned).await?;
        count(&metrics, run_type, started.kind());
        return Ok(started_answer(run_type, policy, started));
    };
    let answered = keyed_starts.start(keyed, planned).await.map_err(ApiError::from);
    counted(&metrics, EventKind::Created, answered)
}

/// The keyed starts' group commit, answering and counting each start as a lone one is.
pub fn keyed_starts(db: &Database, metrics: web::Data<Metrics>) -> KeyedStarts {
    KeyedStarts::new(
        db,
        Arc::new(|planned: &PlannedStart, started| {
            answer(started_answer(planned.run.run_type, planned.run.identity_policy, started))
        }),
        Arc::new(move |run_type, kind| count(&metrics, run_type, kind)),
    )
}

/// Counts what a start came to, once it is final (committed).
fn count(metrics: &Metrics, run_type: RunType, kind: StartedKind) {
    let counter = match kind {
        StartedKind::Created => &metrics.runs_started,
        StartedKind::Existing => &metrics.existing_runs_answered,
        StartedKind::Held => &metrics.duplicate_refusals,
    };
    counter.with_label_values(&[run_type.as_str()]).inc();
}

/// The answer to a start.
fn started_answer(run_type: RunType, policy: IdentityPolicy, started: Started) -> HttpResponse {
    match started {
        Started::Created(run) => started_response(HttpResponse::Created(), *run, true),
        Started::Existing(run) => started_response(HttpResponse::Ok(), *run, false),
        Started::Held { existing_run_id } => {
            ApiError::duplicate_run(run_type, policy, existing_run_id).error_response()
        }
    }
}

fn started_response(mut response: HttpResponseBuilder, run: OperationRunRow, created: bool) -> HttpResponse {
    response.insert_header((header::LOCATION, links::run(run.id)));
    json::respond(response, json::started(&run, created))
}
