//! `POST /v1/runs`: dispatch-time creation of a queued run, with the type's identity
//! policy enforced by the database.

use actix_web::{http::header, post, web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use super::RunView;
use crate::db::{Database, DbError};
use crate::domain::access::Principal;
use crate::error::{ApiError, Problem};
use crate::metrics::Metrics;
use crate::use_cases::start::{self, plan_start, Created, StartRequest};

/// What to start. Its OpenAPI schema is derived from the catalog: one shape per type.
#[derive(Deserialize)]
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
}

impl utoipa::PartialSchema for StartRunRequest {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::routes::schemas::start_run_request_schema()
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
        }
    }
}

/// Start a run.
///
/// Creates the run `queued`. A second start of an identity that is still queued or
/// running (`dedupe_active`), or that ever ran (`strict_once`), is refused with 409,
/// `existing_run_id` and a `Location` header pointing at the holder.
#[utoipa::path(
    tag = "runs",
    security(("bearer" = [])),
    request_body = StartRunRequest,
    responses(
        (status = 201, body = RunView, description = "Created; `Location` names the new run",
         headers(("Location" = String, description = "/v1/runs/{id}"))),
        (status = 400, body = Problem, content_type = "application/problem+json", description = "Malformed JSON"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json", description = "Missing the type's start capability"),
        (status = 404, body = Problem, content_type = "application/problem+json", description = "The tenant is not in the token"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "`duplicate_run`: the identity is held",
         headers(("Location" = String, description = "/v1/runs/{existing_run_id}"))),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "Refused input: `unknown_type`, `legacy_type`, `tenant_required`, `tenant_not_allowed`, `invalid_tenant`, `missing_input`, `unknown_input`, `invalid_input`, `invalid_context`, `secret_in_context`, `context_too_large`, `context_too_deep`, `context_conflicts_with_input`"),
    )
)]
#[post("/v1/runs")]
pub async fn start_run(
    db: web::Data<Database>,
    metrics: web::Data<Metrics>,
    principal: Principal,
    request: web::Json<StartRunRequest>,
) -> Result<HttpResponse, ApiError> {
    let new_run = plan_start(&principal, request.into_inner().into())?;
    let (run_type, policy) = (new_run.run_type, new_run.identity_policy);
    let created = db.run(move |conn| start::start_run(conn, &new_run).map_err(DbError::from)).await?;
    let counter = match created {
        Created::Run(_) => &metrics.runs_started,
        Created::Held { .. } => &metrics.duplicate_refusals,
    };
    counter.with_label_values(&[run_type.as_str()]).inc();
    match created {
        Created::Run(run) => Ok(HttpResponse::Created()
            .insert_header((header::LOCATION, format!("/v1/runs/{}", run.id)))
            .json(RunView::from(*run))),
        Created::Held { existing_run_id } => Err(ApiError::duplicate_run(run_type, policy, existing_run_id)),
    }
}
