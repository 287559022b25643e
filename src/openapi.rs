//! The OpenAPI document: every route and schema, and the bearer security scheme that
//! makes Swagger UI's "Authorize" button work.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "HS256, RS256 or ES256 JWT with `sub`, `workspace_id`, `tenants` and `caps` claims. \
                         `opsrun token` mints one for development.",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "opsrun",
        description = "The canonical store of operation runs. Errors are RFC 9457 `application/problem+json` documents with a stable `code`.",
        license(name = "MIT", identifier = "MIT"),
    ),
    paths(
        routes::health::healthz,
        routes::health::readyz,
        routes::metrics::export_metrics,
        routes::operation_types::list_operation_types,
        routes::runs::start::start_run,
        routes::runs::list::list_runs,
        routes::runs::view::view_run,
        routes::runs::events::list_run_events,
        routes::runs::transition::start_run_work,
        routes::runs::transition::report_progress,
        routes::runs::transition::complete_run,
        routes::runs::transition::cancel_run,
        routes::backup_schedules::list_backup_schedule_runs,
    ),
    modifiers(&BearerScheme),
    tags(
        (name = "runs", description = "Start, list and view operation runs"),
        (name = "worker", description = "Moves that workers make: start, progress, complete, cancel"),
        (name = "backup schedules", description = "A backup schedule's run history"),
        (name = "catalog", description = "The operation types"),
        (name = "operations", description = "Probes for orchestrators"),
    )
)]
pub struct ApiDoc;

/// The document as committed in `openapi/openapi.json`.
pub fn document_json() -> String {
    let mut json = ApiDoc::openapi().to_pretty_json().expect("the OpenAPI document serializes");
    json.push('\n');
    json
}
