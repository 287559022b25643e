//! `POST /v1/runs`: dispatch-time creation of a queued run, with the type's identity
//! policy enforced by the database.

use actix_web::{http::header, post, web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use super::RunView;
use crate::db::models::NewOperationRun;
use crate::db::runs::{self, Created};
use crate::db::Database;
use crate::domain::access::{decide, Access, Action, Principal};
use crate::domain::catalog::{RunType, Scope};
use crate::domain::context::validate_context;
use crate::domain::identity::{identity_hash, IdentityPolicy, ScopeKey};
use crate::domain::inputs::parse_inputs;
use crate::error::{ApiError, Problem};
use crate::metrics::Metrics;

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
        crate::openapi::start_run_request_schema()
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

fn random_nonce() -> Result<String, ApiError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::internal(anyhow::anyhow!("no randomness: {e}")))?;
    Ok(hex::encode(bytes))
}

/// Checks the request and builds the row to insert.
fn plan_run(principal: &Principal, request: StartRunRequest) -> Result<NewOperationRun, ApiError> {
    let run_type = RunType::parse(&request.r#type)?;
    let spec = run_type.spec();
    let tenant_id = match (spec.scope, request.tenant_id) {
        (Scope::Tenant, None) => {
            return Err(ApiError::unprocessable(
                "tenant_required",
                format!("{run_type} runs belong to a tenant: send `tenant_id`."),
            ))
        }
        (Scope::Workspace, Some(_)) => {
            return Err(ApiError::unprocessable(
                "tenant_not_allowed",
                format!("{run_type} runs belong to the workspace: leave out `tenant_id`."),
            ))
        }
        (_, Some(tenant)) if tenant <= 0 => {
            return Err(ApiError::unprocessable("invalid_tenant", "`tenant_id` must be a positive integer."))
        }
        (_, tenant) => tenant,
    };
    match decide(principal, principal.workspace_id, tenant_id, run_type, Action::Start) {
        Access::Hidden => return Err(ApiError::TenantNotFound),
        Access::Forbidden { needs } => return Err(ApiError::Forbidden { needs }),
        Access::Allowed => {}
    }

    let inputs = parse_inputs(spec, &request.inputs)?;
    let mut context = validate_context(request.context)?;
    for (name, value) in inputs.iter() {
        let value = value.to_json();
        match context.get(*name) {
            Some(existing) if *existing != value => {
                return Err(ApiError::unprocessable(
                    "context_conflicts_with_input",
                    format!("`context.{name}` differs from `inputs.{name}`; send it once, in `inputs`."),
                ))
            }
            _ => context.insert((*name).to_owned(), value),
        };
    }

    let policy = IdentityPolicy::for_start(spec.identity, &inputs);
    let nonce = match policy {
        IdentityPolicy::UniquePerClick => Some(random_nonce()?),
        _ => None,
    };
    let scope = ScopeKey::new(spec.scope, principal.workspace_id, tenant_id);
    Ok(NewOperationRun {
        workspace_id: principal.workspace_id,
        tenant_id,
        user_id: principal.user_id,
        initiator_name: principal.initiator_name.clone(),
        run_type,
        run_identity_hash: identity_hash(scope, run_type, &inputs, nonce.as_deref()),
        identity_policy: policy,
        context: Value::Object(context),
    })
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
    let new_run = plan_run(&principal, request.into_inner())?;
    let run_type = new_run.run_type;
    let policy = new_run.identity_policy;
    let created = db.run(move |conn| Ok(runs::create(conn, &new_run)?)).await?;
    let counter = match created {
        Created::Run(_) => &metrics.runs_started,
        Created::Conflict { .. } => &metrics.duplicate_refusals,
    };
    counter.with_label_values(&[run_type.as_str()]).inc();
    match created {
        Created::Run(run) => Ok(HttpResponse::Created()
            .insert_header((header::LOCATION, format!("/v1/runs/{}", run.id)))
            .json(RunView::from(*run))),
        Created::Conflict { existing_run_id } => {
            let held = match policy {
                IdentityPolicy::StrictOnce => "has already run (this identity runs at most once)",
                _ => "is already queued or running",
            };
            Err(ApiError::DuplicateRun {
                existing_run_id,
                detail: format!("Another {run_type} run with this identity {held}: run {existing_run_id}."),
            })
        }
    }
}
